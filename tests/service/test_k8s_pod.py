"""The training pod (Pipes' Kubernetes client) and the plate-run pod (K8sRunLauncher), built by dagster-k8s itself.

No cluster here: the test checks what Dagster's own ``build_pod_body`` makes of our spec
and command (the object ``PipesK8sClient.run`` submits), not a mock of it.
"""

from __future__ import annotations

import dagster_k8s.pipes as k8s_pipes  # a dev dependency (pyproject), so CI has it
import pytest

from crystal_pipeline.service.k8s_pod import (K8S_CONFIG_TAG, PlateRunPod, TrainingPod, parse_node_selector,
                                              plate_run_tags, training_pod_spec)
from crystal_pipeline.training.launch import torchrun_command


def _pod_body(pod: TrainingPod, command):
    return k8s_pipes.build_pod_body(pod_name="dagster-train", image="lab/crystal:1", command=list(command),
                                    env_vars={"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg"},
                                    base_pod_meta=None, base_pod_spec=training_pod_spec(pod))


def test_the_pod_runs_torchrun_with_the_data_volume_at_the_data_dirs_own_path():
    data_dir = "/srv/crystal/data"
    command = torchrun_command(tensors_dir=f"{data_dir}/tensors/r128", out_path=f"{data_dir}/models/_training/k/r/model.pt",
                               result_path=f"{data_dir}/models/_training/k/r/result.json", preset="paper",
                               nproc_per_node=4, device="cuda", python="python")
    pod = TrainingPod(data_dir=data_dir, data_claim="crystal-data", gpus=4, node_selector=(("pool", "gpu"),))
    body = _pod_body(pod, command)
    container = body.spec.containers[0]
    assert container.image == "lab/crystal:1"
    assert container.command[:6] == ["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    assert mounts[data_dir] == "crystal-data" and "/dev/shm" in mounts
    # every path the trainer writes lies under the mounted data dir
    for flag in ("--tensors", "--out", "--result"):
        assert container.command[container.command.index(flag) + 1].startswith(data_dir + "/")
    claims = {v.name: v.persistent_volume_claim.claim_name for v in body.spec.volumes if v.persistent_volume_claim}
    assert claims == {"crystal-data": "crystal-data"}
    assert container.resources.limits == {"nvidia.com/gpu": "4"}
    assert body.spec.node_selector == {"pool": "gpu"}
    assert body.spec.restart_policy == "Never"
    assert {e.name for e in container.env} >= {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}


def test_a_cpu_pod_asks_for_no_gpu_and_no_gpu_toleration():
    spec = training_pod_spec(TrainingPod(data_dir="/data", data_claim="c", gpus=0))
    assert spec["containers"][0]["resources"] == {}
    assert "tolerations" not in spec


@pytest.mark.parametrize("kwargs, message", [
    ({"data_dir": "relative/data", "data_claim": "c"}, "absolute"),
    ({"data_dir": "/data", "data_claim": ""}, "PersistentVolumeClaim"),
    ({"data_dir": "/data", "data_claim": "c", "gpus": -1}, "gpus"),
])
def test_bad_pod_settings_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainingPod(**kwargs)


def test_node_selector_text():
    assert parse_node_selector("pool=gpu, zone=a") == (("pool", "gpu"), ("zone", "a"))
    assert parse_node_selector("") == ()
    with pytest.raises(ValueError, match="key=value"):
        parse_node_selector("gpu")


PLATE_POD_ENV = {"CRYSTAL_WAREHOUSE": "ducklake", "CRYSTAL_K8S_DATA_CLAIM": "crystal-data",
                 "CRYSTAL_K8S_CATALOG_SECRET": "lake-catalog", "CRYSTAL_DATA_DIR": "/srv/crystal/data",
                 "CRYSTAL_K8S_NODE_SELECTOR": "pool=cpu"}


def _plate_run_job(tags):
    """The Job K8sRunLauncher submits for a run with these tags: dagster-k8s's own builder."""
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

    config = DagsterK8sJobConfig(job_image="lab/crystal:1", dagster_home="/opt/dagster/dagster_home",
                                 instance_config_map="dagster-instance")
    return construct_dagster_k8s_job(config, ["dagster", "api", "execute_run", "{}"], "dagster-run-abc",
                                     user_defined_k8s_config=get_user_defined_k8s_config(tags))


def test_a_plate_run_pod_writes_the_lake_with_its_catalog_from_a_secret(monkeypatch):
    for name, value in PLATE_POD_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CRYSTAL_LAKE_DATA_PATH", raising=False)
    tags = plate_run_tags()
    assert set(tags) == {K8S_CONFIG_TAG}
    job = _plate_run_job(tags)
    pod = job.spec.template.spec
    container = pod.containers[0]
    env = {e.name: e for e in container.env}
    assert env["CRYSTAL_WAREHOUSE"].value == "ducklake"
    assert env["CRYSTAL_DATA_DIR"].value == "/srv/crystal/data"
    assert env["CRYSTAL_LAKE_DATA_PATH"].value == "/srv/crystal/data/lake"  # on the shared claim
    # the catalog URL (a password inside) comes from the Secret, never from the tag the UI shows
    assert env["CRYSTAL_WAREHOUSE_URL"].value is None
    ref = env["CRYSTAL_WAREHOUSE_URL"].value_from.secret_key_ref
    assert (ref.name, ref.key) == ("lake-catalog", "url")
    assert {m.mount_path: m.name for m in container.volume_mounts} == {"/srv/crystal/data": "crystal-data"}
    claims = {v.name: v.persistent_volume_claim.claim_name for v in pod.volumes if v.persistent_volume_claim}
    assert claims == {"crystal-data": "crystal-data"}
    assert container.resources.requests == {"cpu": "2", "memory": "4Gi"}
    assert "nvidia.com/gpu" not in (container.resources.limits or {})
    assert pod.node_selector == {"pool": "cpu"}
    assert env["DAGSTER_HOME"].value == "/opt/dagster/dagster_home"  # the launcher's own settings kept


def test_plate_runs_are_pods_only_when_a_claim_is_named(monkeypatch):
    monkeypatch.delenv("CRYSTAL_K8S_DATA_CLAIM", raising=False)
    monkeypatch.setenv("CRYSTAL_WAREHOUSE", "ducklake")
    assert plate_run_tags() == {}


@pytest.mark.parametrize("change, message", [
    ({"CRYSTAL_WAREHOUSE": "file"}, "CRYSTAL_WAREHOUSE=ducklake"),
    ({"CRYSTAL_K8S_CATALOG_SECRET": ""}, "CRYSTAL_K8S_CATALOG_SECRET"),
])
def test_plate_run_pods_refuse_what_would_lose_rows_or_leak_the_catalog(monkeypatch, change, message):
    for name, value in {**PLATE_POD_ENV, **change}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        plate_run_tags()
    with pytest.raises(ValueError, match="absolute"):
        PlateRunPod(data_dir="/d", data_claim="c", catalog_secret="s", lake_data_path="lake")
