"""crystalnet_model materializes with the smoke preset, registers and promotes."""

from pathlib import Path

import dagster as dg
import pytest

from crystal_pipeline.layout import DataLayout
from crystal_pipeline.model import load
from crystal_pipeline.warehouse import Warehouse
from resources import StorageResource, build_resources


def test_crystalnet_model_smoke_trains_registers_and_promotes(data_dir):
    import definitions

    resources = build_resources(StorageResource(data_dir=str(data_dir)))
    instance = dg.DagsterInstance.ephemeral()
    upstream = dg.materialize([*definitions.all_assets], resources=resources, instance=instance,
                              selection=dg.AssetSelection.groups("ingest", "prepare"))
    assert upstream.success
    # accuracy_floor 0: this test is about registering and promoting twice, and the smoke model
    # (12 updates) sits below the real floor; test_stopped_run_... below uses the real floor.
    run_config = {"ops": {"crystalnet_model": {"config": {"preset": "smoke", "accuracy_floor": 0.0}}}}
    results = []
    for _ in range(2):
        result = dg.materialize([*definitions.all_assets, *definitions.all_checks], resources=resources,
                                instance=instance, selection=dg.AssetSelection.assets("crystalnet_model"),
                                run_config=run_config)
        assert result.success
        results.append(result)

    wh = Warehouse(DataLayout.under(data_dir).warehouse)
    models = wh.query_df("SELECT * FROM models ORDER BY created_at")
    assert len(models) == 2 and models["is_production"].sum() == 1
    assert set(models["resolution"]) == {32} and set(models["trained_on"]) == {"synthetic"}
    [event] = results[1].asset_materializations_for_node("crystalnet_model")
    meta = {k: v.value for k, v in event.metadata.items()}
    assert meta["preset"] == "smoke" and meta["updates"] == 12
    assert meta["updates_from"] == "12: the smoke preset's"  # no bf16 budget for smoke, whatever the CPU
    assert meta["precision"] == "fp32"  # the smoke preset's, on any CPU
    [first] = results[0].asset_materializations_for_node("crystalnet_model")
    first_meta = {k: v.value for k, v in first.metadata.items()}
    assert first_meta["promoted"] and first_meta["promotion"].startswith("first model")
    assert first_meta["production_val_accuracy"] is None
    # The second run re-scored the first model on the same split: the number it was registered with.
    assert meta["production_val_accuracy"] == first_meta["val_accuracy"]
    assert meta["promoted"] == bool(models["is_production"].iloc[-1])
    assert meta["resumed_from_update"] == 0
    assert not any(DataLayout.under(data_dir).training_dir.glob("*/*"))  # finished runs leave no staging
    model = load(models["path"].iloc[-1], "cpu")
    assert model.resolution == 32
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in results[1].all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["val_accuracy_above_floor"]  # floor 0 in this test
    assert "val_accuracy_above_majority_rate" in checks


def materialize_model(resources, instance, **config):
    import definitions

    return dg.materialize([*definitions.all_assets, *definitions.all_checks], resources=resources, instance=instance,
                          selection=dg.AssetSelection.assets("crystalnet_model"), raise_on_error=False,
                          run_config={"ops": {"crystalnet_model": {"config": {"preset": "smoke", **config}}}})


def failure_of(result):
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data


def model_meta(result):
    [event] = result.asset_materializations_for_node("crystalnet_model")
    return {k: v.value for k, v in event.metadata.items()}


@pytest.fixture
def prepared(data_dir):
    import definitions

    resources = build_resources(StorageResource(data_dir=str(data_dir)))
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([*definitions.all_assets], resources=resources, instance=instance,
                          selection=dg.AssetSelection.groups("ingest", "prepare")).success
    return resources, instance, DataLayout.under(data_dir)


def test_stopped_run_fails_clearly_and_resumes_with_other_runtime_fields(prepared):
    """...and the model it finishes, the first one, is below the real floor (these runs set no
    accuracy_floor): registered, not production, so a plate run then fails saying what to do."""
    import definitions
    from crystal_pipeline.synthetic import write_plate
    from crystal_pipeline.training import TrainConfig

    resources, instance, layout = prepared
    stopped = materialize_model(resources, instance, overrides={"max_updates_this_session": "6"})
    assert not stopped.success
    failure = failure_of(stopped)
    assert failure.error.cls_name == "Failure"  # not FileNotFoundError
    text = failure.user_failure_data.description
    assert "stopped at update 6 of 12" in text and "resume: true" in text
    checkpoint = Path(failure.user_failure_data.metadata["checkpoint"].value)
    key = TrainConfig.from_preset("smoke").identity_key()
    assert checkpoint == layout.training_run_dir(key, stopped.run_id) / "model.pt.ckpt" and checkpoint.is_file()
    assert not (checkpoint.parent / "run.lock").exists()  # released: the next run may resume it
    assert Warehouse(layout.warehouse).scalar("SELECT count(*) FROM models") == 0

    # Runtime fields changed (log_every, no session limit): the same identity, so it resumes at 6.
    resumed = materialize_model(resources, instance, resume=True, overrides={"log_every": "2"})
    assert resumed.success
    meta = model_meta(resumed)
    assert meta["resumed_from_update"] == 6 and meta["updates"] == 12
    assert not checkpoint.parent.exists()
    assert Warehouse(layout.warehouse).scalar("SELECT count(*) FROM models") == 1

    # The floor is decided before promotion (issue 18): the first model is not production.
    assert meta["val_accuracy"] < meta["accuracy_floor"], "the smoke model cleared the real floor: test void"
    assert not meta["promoted"] and "below the accuracy floor" in meta["promotion"]
    [floor_check] = [e.asset_check_evaluation_data for e in resumed.all_events
                     if e.event_type_value == "ASSET_CHECK_EVALUATION"
                     and e.asset_check_evaluation_data.check_name == "val_accuracy_above_floor"]
    assert not floor_check.passed and "registered, not production" in floor_check.metadata["promotion"].value
    wh = Warehouse(layout.warehouse)
    assert wh.query_df("SELECT is_production FROM models")["is_production"].tolist() == [False]
    write_plate(layout.incoming_dir / "NOPROD", "NOPROD", seed=3, wells=96, size=64)
    instance.add_dynamic_partitions("plates", ["NOPROD"])
    plate = dg.materialize([*definitions.all_assets, *definitions.all_checks], resources=resources,
                           instance=instance, partition_key="NOPROD", raise_on_error=False,
                           selection=dg.AssetSelection.assets("plate_images", "plate_predictions"))
    assert not plate.success
    text = failure_of(plate).user_failure_data.description
    assert "no production model: 1 registered model(s), none cleared the accuracy floor" in text
    assert "train one that clears the floor, or name model_version" in text
    assert wh.scalar("SELECT count(*) FROM predictions") == 0


def test_a_run_never_resumes_a_checkpoint_another_running_run_holds(prepared):
    from crystal_pipeline.evaluation import staging
    from crystal_pipeline.files import file_sha256

    resources, instance, layout = prepared
    stopped = materialize_model(resources, instance, overrides={"max_updates_this_session": "6"})
    checkpoint = Path(failure_of(stopped).user_failure_data.metadata["checkpoint"].value)
    assert staging._try_lock(checkpoint.parent, "still-running")  # that run is back at work (this pid lives)
    before = (file_sha256(checkpoint), checkpoint.stat().st_mtime_ns)
    other = materialize_model(resources, instance, resume=True)
    assert other.success and model_meta(other)["resumed_from_update"] == 0
    assert (file_sha256(checkpoint), checkpoint.stat().st_mtime_ns) == before
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["model.pt.ckpt", "run.lock"]


def test_claim_gives_each_run_its_own_folder_and_resumes_released_ones(tmp_path):
    from crystal_pipeline.evaluation import staging

    layout = DataLayout.under(tmp_path)
    old = layout.training_run_dir("k", "old")
    old.mkdir(parents=True)
    (old / "model.pt.ckpt").write_bytes(b"ckpt")
    first = staging.claim(layout, "k", "a", resume=True)
    second = staging.claim(layout, "k", "b", resume=True)  # concurrent: the checkpoint is held
    assert (first.folder, first.resumed) == (old, True)
    assert (second.folder, second.resumed) == (layout.training_run_dir("k", "b"), False)
    assert staging.claim(layout, "other", "a", resume=True).folder == layout.training_run_dir("other", "a")
    first.release(finished=False)
    third = staging.claim(layout, "k", "c", resume=True)
    assert third.folder == old
    # A holder that dies frees its folder without any pid judgment: tests/evaluation/test_staging.py.
    third.release(finished=False)
    assert staging.claim(layout, "k", "d", resume=True).folder == old
    # A finished run's kept checkpoint is never resumed.
    done = staging.claim(layout, "k", "d2", resume=False)
    (done.folder / "model.pt.ckpt").write_bytes(b"kept")
    done.release(finished=True)
    assert done.folder not in [p.parent for p in staging.resumable_checkpoints(layout, "k")]


def test_current_val_split_rewrites_tensors_from_an_older_consensus(data_dir):
    import definitions
    from crystal_pipeline.tensors import preparation

    resources = build_resources(StorageResource(data_dir=str(data_dir)))
    assert dg.materialize([*definitions.all_assets], resources=resources, instance=dg.DagsterInstance.ephemeral(),
                          selection=dg.AssetSelection.groups("ingest", "prepare")).success
    layout, wh = DataLayout.under(data_dir), Warehouse(DataLayout.under(data_dir).warehouse)
    first = preparation.current_val_split(wh, layout, 32)
    expected = sorted(wh.query_df("SELECT image_id FROM consensus_labels WHERE split = 'val'")["image_id"])
    assert list(first.image_ids) == expected
    # The labels change (one val image loses its label); the r32 tensors on disk are now stale.
    with wh.transaction() as con:
        con.execute("DELETE FROM consensus_labels WHERE image_id = ?", [expected[0]])
    again = preparation.current_val_split(wh, layout, 32)
    assert list(again.image_ids) == expected[1:]


def _model_meta(result) -> dict:
    [event] = result.asset_materializations_for_node("crystalnet_model")
    return {k: v.value for k, v in event.metadata.items()}


def test_training_through_pipes_on_two_torchrun_ranks_matches_the_in_process_run(data_dir):
    """The default launcher runs torchrun through Dagster Pipes; two CPU ranks (gloo) train
    the same model a single process trains (the DDP contract), and the result that comes
    back through --result is what the in-process call returns."""
    import definitions
    from resources import ComputeResource

    instance = dg.DagsterInstance.ephemeral()
    storage = StorageResource(data_dir=str(data_dir))
    upstream = dg.materialize([*definitions.all_assets], resources=build_resources(storage), instance=instance,
                              selection=dg.AssetSelection.groups("ingest", "prepare"))
    assert upstream.success
    metas = {}
    for name, compute in {"in_process": ComputeResource(device="cpu", launcher="in_process"),
                          "two_ranks": ComputeResource(device="cpu", launcher="pipes", nproc_per_node=2)}.items():
        resources = {**build_resources(storage), "compute": compute}
        result = materialize_model(resources, instance, accuracy_floor=0.0)
        assert result.success, name
        metas[name] = _model_meta(result)
    assert metas["in_process"]["launcher"] == "in_process" and metas["in_process"]["world_size"] == 1
    assert metas["two_ranks"]["launcher"] == "pipes (torchrun)"
    assert metas["two_ranks"]["world_size"] == 2  # reported by rank 0 through Pipes
    assert "--nproc_per_node 2" in metas["two_ranks"]["command"]
    assert metas["two_ranks"]["updates"] == metas["in_process"]["updates"] == 12
    assert metas["two_ranks"]["precision"] == metas["in_process"]["precision"] == "fp32"  # through --result
    assert metas["two_ranks"]["val_accuracy"] == metas["in_process"]["val_accuracy"]
    # The trainer's progress reached the step's log through Pipes.
    logs = [e.user_message for e in instance.all_logs(instance.get_runs()[0].run_id)]
    assert any("update 12/12" in m for m in logs), logs[-20:]
