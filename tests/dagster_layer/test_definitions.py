"""The code location loads, and its graph is the one DESIGN.md names."""

import subprocess
import sys

import dagster as dg

from tests.conftest import REPO, cli_env

INGEST = {"raw_images", "annotations", "consensus_labels"}
PREPARE = {"image_tensors", "normalization_stats"}
TRAIN = {"crystalnet_model"}
EVALUATE = {"crystalnet_evaluation", "baseline_models", "model_comparison", "training_size_study", "resolution_study"}


def load_defs():
    import definitions

    return definitions.defs


def test_definitions_validate_and_load_every_object():
    defs = load_defs()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert {k: groups[k] for k in INGEST} == {k: "ingest" for k in INGEST}
    assert {k: groups[k] for k in PREPARE} == {k: "prepare" for k in PREPARE}
    assert {k: groups[k] for k in TRAIN | EVALUATE} == {**{k: "train" for k in TRAIN}, **{k: "evaluate" for k in EVALUATE}}
    checks = {key.name for key in graph.asset_check_keys}
    assert {"no_quarantined_images", "no_annotation_errors", "unique_image_ids", "class_ids_in_range",
            "split_shares", "no_leak_across_sides", "tensor_rows_match_labels",
            "pixel_length_is_resolution_squared", "stats_are_usable"} <= checks
    assert defs.resolve_job_def("ingest_and_prepare") is not None
    retrain = defs.resolve_job_def("retrain_and_evaluate")
    assert {"crystalnet_model", "crystalnet_evaluation"} <= {n.name for n in retrain.nodes}
    schedule = defs.resolve_schedule_def("weekly_retrain")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED and schedule.job_name == "retrain_and_evaluate"
    # Writers of the warehouse share the duckdb pool so concurrent runs wait rather than fail.
    for key in ("raw_images", "annotations", "consensus_labels"):
        assert graph.get(dg.AssetKey(key)).pools == {"duckdb"}


def test_dagster_cli_validates_the_code_location(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m", "definitions"],
                            cwd=REPO, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


POOLS_OF_PLATE_STEPS = """
import json
import dagster as dg
from definitions import defs
graph = defs.resolve_asset_graph()
pools = {key: sorted(graph.get(dg.AssetKey(key)).pools) for key in ("raw_images", "consensus_labels", "plate_images")}
write = defs.resolve_job_def("label_plate_job").graph
ops = {node.name: node for node in write.iterate_op_defs()}
pools["write_plate_predictions"] = [ops["write_plate_predictions"].pool]
pools["pod_tag"] = "dagster-k8s/config" in defs.resolve_job_def("label_plate_job").tags
print(json.dumps(pools))
"""


def test_plate_runs_write_at_once_only_with_the_lake(tmp_path):
    """File warehouse: every writer in ``duckdb``. Lake: the plate runs' warehouse steps move to
    ``plate_writes`` (limit max_plate_runs), while ingest and consensus stay in ``duckdb``; with a
    data claim named, ``label_plate_job`` carries the pod config K8sRunLauncher reads."""
    import json

    seen = {}
    for backend in ("file", "ducklake"):
        env = {**cli_env(tmp_path), "CRYSTAL_WAREHOUSE": backend}
        if backend == "ducklake":
            env.update(CRYSTAL_K8S_DATA_CLAIM="crystal-data", CRYSTAL_K8S_CATALOG_SECRET="lake-catalog")
        result = subprocess.run([sys.executable, "-c", POOLS_OF_PLATE_STEPS], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        seen[backend] = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["file"] == {**{k: ["duckdb"] for k in ("raw_images", "consensus_labels", "plate_images",
                                                     "write_plate_predictions")}, "pod_tag": False}
    assert seen["ducklake"] == {"raw_images": ["duckdb"], "consensus_labels": ["duckdb"],
                                "plate_images": ["plate_writes"], "write_plate_predictions": ["plate_writes"],
                                "pod_tag": True}
