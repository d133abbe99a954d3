"""The training pod for ``compute.launcher: k8s``, built into a real pod body by Pipes' Kubernetes client.

No cluster here: the test checks what Dagster's own ``build_pod_body`` makes of our spec
and command (the object ``PipesK8sClient.run`` submits), not a mock of it.
"""

from __future__ import annotations

import dagster_k8s.pipes as k8s_pipes  # a dev dependency (pyproject), so CI has it
import pytest

from crystal_pipeline.service.k8s_pod import TrainingPod, parse_node_selector, training_pod_spec
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
