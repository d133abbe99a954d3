"""The plates group: sensor ticks, partitioned labelling, reruns, bad wells, concurrent plates."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from assets.plate_sensor import evaluate_incoming, incoming_plates_sensor
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.model.precision import choose_precision
from crystal_pipeline.synthetic import write_plate
from crystal_pipeline.warehouse import Warehouse
from resources import StorageResource, build_resources
from tests.conftest import REPO, cli_env


def tick(instance, storage, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage}) as context:
        return incoming_plates_sensor(context)


def apply(instance, result):
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def grey_plate(folder, n, fmt=96):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plate.json").write_text(json.dumps({"format": fmt}))
    for i in range(n):
        Image.new("L", (16, 16), 100 + i % 50).save(folder / f"{chr(65 + i // 12)}{i % 12 + 1:02d}.png")


def test_sensor_ticks(tmp_path):
    incoming = tmp_path / "incoming"
    storage = StorageResource(data_dir=str(tmp_path))
    grey_plate(incoming / "NEW", 96)
    grey_plate(incoming / "PART", 30)
    grey_plate(incoming / "RE" / "day7", 96)
    with dg.instance_for_test() as instance:
        first = tick(instance, storage)
        assert first.run_requests == [] and "settle" in first.skip_reason.skip_message
        assert "PART: incomplete" in first.skip_reason.skip_message
        second = tick(instance, storage, first.cursor)
        assert sorted(r.partition_key for r in second.run_requests) == ["NEW", "RE@day7"]
        [add] = second.dynamic_partitions_requests
        assert sorted(add.partition_keys) == ["NEW", "RE@day7"]
        apply(instance, second)
        # Same plates again: nothing new is requested, and no partition is added twice.
        third = tick(instance, storage, second.cursor)
        assert third.run_requests == [] and third.dynamic_partitions_requests == []
        # A corrected image: after it settles, the plate runs again under a new run key.
        Image.new("L", (16, 16), 0).save(incoming / "NEW" / "A01.png")
        fourth = tick(instance, storage, third.cursor)
        fifth = tick(instance, storage, fourth.cursor)
        [again] = fifth.run_requests
        assert again.partition_key == "NEW"
        assert again.run_key != next(r.run_key for r in second.run_requests if r.partition_key == "NEW")
        assert fifth.dynamic_partitions_requests == []  # the partition exists already
        # The incomplete plate completes.
        grey_plate(incoming / "PART", 96)
        sixth = tick(instance, storage, fifth.cursor)
        seventh = tick(instance, storage, sixth.cursor)
        assert [r.partition_key for r in seventh.run_requests] == ["PART"]


def test_sensor_handles_dozens_of_plates_at_once(tmp_path):
    for i in range(40):
        grey_plate(tmp_path / f"P{i:02d}", 96)
    first = evaluate_incoming(tmp_path, None, lambda key: False)
    second = evaluate_incoming(tmp_path, first.cursor, lambda key: False)
    assert len(second.run_requests) == 40
    assert len({r.run_key for r in second.run_requests}) == 40
    assert len(second.dynamic_partitions_requests[0].partition_keys) == 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_archive):
    """A data dir with the archive ingested and a smoke-trained production model.

    ``accuracy_floor: 0``: the smoke model (12 updates) sits below the real floor, and these
    tests are about labelling plates; test_train_asset.py tests the floor with the real one."""
    import definitions

    data = tmp_path_factory.mktemp("plates") / "data"
    shutil.copytree(tiny_archive, data / "raw")
    resources = build_resources(StorageResource(data_dir=str(data)))
    result = dg.materialize(
        [*definitions.all_assets], resources=resources, instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.groups("ingest", "prepare", "train"),
        run_config={"ops": {"crystalnet_model": {"config": {"preset": "smoke", "accuracy_floor": 0.0}}}})
    assert result.success
    return data


def label(data, instance, key):
    import definitions

    instance.add_dynamic_partitions("plates", [key])
    return dg.materialize([*definitions.all_assets, *definitions.all_checks],
                          resources=build_resources(StorageResource(data_dir=str(data))), instance=instance,
                          selection=dg.AssetSelection.groups("plates"), partition_key=key, raise_on_error=False)


def checks(result):
    return {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def test_label_a_plate_rerun_and_bad_wells(trained, tmp_path):
    layout = DataLayout.under(trained)
    write_plate(layout.incoming_dir / "NEWPLATE", "NEWPLATE", seed=3, wells=96, size=64)
    wh = Warehouse(layout.warehouse)
    with dg.instance_for_test() as instance:
        result = label(trained, instance, "NEWPLATE")
        assert result.success
        assert all(c.passed for c in checks(result).values())
        count = wh.scalar("SELECT count(*) FROM predictions WHERE plate_id = 'NEWPLATE'")
        assert count == 96
        report_dir = layout.plate_report_dir("NEWPLATE")
        for name in ("report.html", "hits.csv", "plate_map.png"):
            assert (report_dir / name).stat().st_size > 0
        # The engine and precision auto chose on this CPU (model.precision) are in the metadata and the sidecar.
        chosen = choose_precision("auto", "cpu").precision
        metadata = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
                    for e in result.get_asset_materialization_events()}
        for asset in ("plate_predictions", "plate_report"):
            assert metadata[asset]["precision"].value == chosen
            assert metadata[asset]["engine"].value == {"fp32": "cpu-fast", "bf16": "cpu-bf16"}[chosen]
        assert json.loads((report_dir / "hits.meta.json").read_text())["precision"] == chosen
        # Rerun: the plate's rows are replaced, not duplicated.
        assert label(trained, instance, "NEWPLATE").success
        assert wh.scalar("SELECT count(*) FROM predictions WHERE plate_id = 'NEWPLATE'") == 96

        # A re-imaged plate with a corrupt file and a missing well: the rest are labelled, the check lists them.
        day2 = layout.incoming_dir / "NEWPLATE" / "day2"
        day2.mkdir()
        for f in (layout.incoming_dir / "NEWPLATE").glob("*.png"):
            shutil.copy(f, day2 / f.name)
        (day2 / "B02.png").write_bytes(b"")
        (day2 / "H12.png").unlink()
        result = label(trained, instance, "NEWPLATE@day2")
        assert result.success
        evaluations = checks(result)
        # 94 labelled + 1 quarantined = the 95 files: accounted for, so the report is published and lists
        # the quarantined and the missing well; only the non-blocking completeness check fails.
        assert evaluations["every_well_accounted_for"].passed
        complete = evaluations["no_missing_or_quarantined_wells"]
        assert not complete.passed
        meta = {k: v.value for k, v in complete.metadata.items()}
        assert meta["labelled"] == 94 and meta["quarantined"] == 1 and meta["missing_wells"] == 1
        assert "H12" in meta["missing_list"] and "B02" in meta["quarantined_list"]
        assert not evaluations["plate_files_decodable"].passed
        assert evaluations["probabilities_sum_to_one"].passed
        assert wh.scalar("SELECT count(*) FROM predictions WHERE inspection = 'day2'") == 94
        page = (layout.plate_report_dir("NEWPLATE@day2") / "report.html").read_text()
        assert "Missing wells (1)" in page and "H12" in page and "Quarantined (1)" in page and "B02" in page


def test_sensor_never_relabels_a_plate_the_instance_labelled_even_with_a_fresh_cursor(trained, tmp_path):
    """`make demo` then `make ui`: the demo's run labelled SYN0101; the daemon starts with no
    cursor. The instance's own records must stop it, and a changed file must not."""
    import definitions

    storage = StorageResource(data_dir=str(trained), incoming_dir=str(tmp_path / "incoming"))
    write_plate(storage.layout.incoming_dir / "IDEM", "IDEM", seed=4, wells=96, size=64)
    with dg.instance_for_test() as instance:
        first = tick(instance, storage)
        second = tick(instance, storage, first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["IDEM"]
        apply(instance, second)
        # The run, launched outside any daemon (as scripts/label_new_plate.py does).
        assert dg.materialize([*definitions.all_assets, *definitions.all_checks], resources=build_resources(storage),
                              instance=instance, selection=dg.AssetSelection.groups("plates"),
                              partition_key="IDEM").success
        # A restarted daemon: fresh cursor, same instance. Two ticks (the plate settles), no run.
        fresh = tick(instance, storage)
        settled = tick(instance, storage, fresh.cursor)
        assert settled.run_requests == []
        assert "already labelled and unchanged" in settled.skip_reason.skip_message
        # A corrected image: after it settles, the plate is requested again.
        Image.new("L", (64, 64), 7).save(storage.layout.incoming_dir / "IDEM" / "A01.png")
        changed = tick(instance, storage, settled.cursor)
        again = tick(instance, storage, changed.cursor)
        assert [r.partition_key for r in again.run_requests] == ["IDEM"]
        # Ingesting the new files without a plate_report after them does not count as labelled.
        from assets.plate_sensor import labelled_signature

        assert labelled_signature(instance, "IDEM") == second.run_requests[0].tags["plate_signature"]
        assert dg.materialize([*definitions.all_assets], resources=build_resources(storage), instance=instance,
                              selection=dg.AssetSelection.assets("plate_images"), partition_key="IDEM").success
        assert labelled_signature(instance, "IDEM") is None


def test_a_model_file_that_is_not_the_registered_one_labels_nothing(trained):
    """The sha256 is checked before the model is loaded: a replaced artifact fails the run with
    what is wrong, and no predictions row and no report are written for the plate."""
    from crystal_pipeline.evaluation import registry

    layout = DataLayout.under(trained)
    write_plate(layout.incoming_dir / "SWAP", "SWAP", seed=5, wells=96, size=64)
    path = Path(registry.model_row(Warehouse(layout.warehouse))["path"])
    original = path.read_bytes()
    try:
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0x01  # one bit of the weights
        path.write_bytes(bytes(damaged))
        with dg.instance_for_test() as instance:
            result = label(trained, instance, "SWAP")
        assert not result.success
        [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert failure.step_key == "plate_predictions.label_plate_wells"
        message = failure.step_failure_data.user_failure_data.description
        assert "the registry says" in message and "was not labelled" in message
        wh = Warehouse(layout.warehouse)
        assert wh.scalar("SELECT count(*) FROM predictions WHERE plate_id = 'SWAP'") == 0
        assert not (layout.plate_report_dir("SWAP") / "report.html").exists()
    finally:
        path.write_bytes(original)
    with dg.instance_for_test() as instance:
        assert label(trained, instance, "SWAP").success


def test_a_promotion_between_the_steps_does_not_change_the_model_of_the_report(trained, tmp_path):
    """plate_predictions resolves the model once; a model promoted before plate_timeline and
    plate_report run changes neither the version, the threshold nor the rows they show."""
    import csv

    import definitions
    from crystal_pipeline.evaluation import registry
    from crystal_pipeline.model import CrystalNet, add_calibration, save_artifact

    layout = DataLayout.under(trained)
    write_plate(layout.incoming_dir / "ONEMODEL", "ONEMODEL", seed=8, wells=96, size=64)
    wh = Warehouse(layout.warehouse)
    first = registry.production_model(wh)
    resources = build_resources(StorageResource(data_dir=str(trained)))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("plates", ["ONEMODEL"])
        assert dg.materialize([*definitions.all_assets, *definitions.all_checks], resources=resources,
                              instance=instance, partition_key="ONEMODEL",
                              selection=dg.AssetSelection.assets("plate_images", "plate_predictions")).success
        other = save_artifact(tmp_path / "other.pt", CrystalNet(num_classes=10, resolution=32, augment_params=None))
        add_calibration(other, temperature=1.0, crystal_threshold=0.0123)
        target = layout.model_path("zz-other")
        target.parent.mkdir(parents=True)
        shutil.copy(other, target)
        registry.register(wh, model_version="zz-other", preset="test", resolution=32, path=target,
                          trained_on="synthetic", scores=registry.Scores(1.0, 1.0, 1.0, 0.0123, 10), promote=True)
        try:
            result = dg.materialize([*definitions.all_assets, *definitions.all_checks], resources=resources,
                                    instance=instance, partition_key="ONEMODEL",
                                    selection=dg.AssetSelection.assets("plate_timeline", "plate_report"))
        finally:  # the other tests label with the smoke model
            with wh.transaction() as con:
                con.execute("DELETE FROM models WHERE model_version = 'zz-other'")
                con.execute("UPDATE models SET is_production = (model_version = ?)", [first["model_version"]])
    assert result.success
    [report] = result.asset_materializations_for_node("plate_report")
    meta = {k: v.value for k, v in report.metadata.items()}
    assert meta["model_version"] == first["model_version"]
    assert meta["crystal_threshold"] == pytest.approx(round(first["crystal_threshold"], 4))
    text = (layout.plate_report_dir("ONEMODEL") / "report.md").read_text()
    assert first["model_version"] in text and "zz-other" not in text
    with open(layout.plate_report_dir("ONEMODEL") / "hits.csv", newline="") as handle:
        rows = {r["image_id"]: float(r["crystal_prob"]) for r in csv.DictReader(handle)}
    stored = wh.query_df("SELECT image_id, crystal_prob FROM predictions WHERE plate_id = 'ONEMODEL' "
                         "AND model_version = ?", [first["model_version"]])
    assert len(rows) == 96 and rows == pytest.approx(dict(zip(stored["image_id"], stored["crystal_prob"])), abs=1e-5)
    [timeline] = result.asset_materializations_for_node("plate_timeline")
    assert timeline.metadata["model_version"].value == first["model_version"]


def test_a_labelling_that_does_not_account_for_every_file_publishes_no_report(trained, monkeypatch):
    """every_well_accounted_for blocks: when the warehouse shows a file neither labelled nor
    quarantined (here one prediction row deleted as the write lands), plate_report does not run."""
    from crystal_pipeline.plates import plate_run

    layout = DataLayout.under(trained)
    write_plate(layout.incoming_dir / "LOST", "LOST", seed=9, wells=96, size=64)
    real = plate_run.prediction_checks

    def losing_a_row(wh, plate_id, inspection, run):
        with wh.transaction() as con:
            con.execute("DELETE FROM predictions WHERE image_id = (SELECT min(image_id) FROM predictions "
                        "WHERE plate_id = ?)", [plate_id])
        return real(wh, plate_id, inspection, run)

    monkeypatch.setattr(plate_run, "prediction_checks", losing_a_row)
    with dg.instance_for_test() as instance:
        result = label(trained, instance, "LOST")
    assert not result.success
    accounted = checks(result)["every_well_accounted_for"]
    assert not accounted.passed and accounted.metadata["unaccounted"].value.startswith("LOST")
    assert result.asset_materializations_for_node("plate_report") == []
    assert not (layout.plate_report_dir("LOST") / "report.html").exists()


def test_plate_predictions_infers_outside_the_duckdb_pool_and_writes_inside_it():
    """Inference claims the gpu pool on a machine with an NVIDIA device, none on CPU; only the
    warehouse write claims duckdb. The completeness check that guards the report blocks."""
    import definitions
    from assets.plates import _inference_pool

    asset = definitions.defs.resolve_assets_def("plate_predictions")
    pools = {op.name: op.pool for op in asset.node_def.node_defs}
    assert pools == {"label_plate_wells": _inference_pool(), "write_plate_predictions": "duckdb"}
    assert _inference_pool() == ("gpu" if Path("/dev/nvidiactl").exists() else None)
    blocking = {spec.name: spec.blocking for spec in asset.check_specs}
    assert blocking == {"every_well_accounted_for": True, "no_missing_or_quarantined_wells": False,
                        "probabilities_sum_to_one": True}


@pytest.mark.slow
def test_two_plates_labelled_concurrently_lose_no_rows(trained):
    layout = DataLayout.under(trained)
    env = cli_env(trained)
    keys = ["CONC1", "CONC2"]
    for i, key in enumerate(keys):
        write_plate(layout.incoming_dir / key, key, seed=10 + i, wells=96, size=64)
    env["DAGSTER_HOME"] = str(trained / "dagster_home")
    subprocess.run([sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get()"
                    ".add_dynamic_partitions('plates', ['CONC1', 'CONC2'])"], env=env, check=True, cwd=REPO)
    procs = [subprocess.Popen([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "definitions",
                               "--select", "plate_images,plate_predictions,plate_report", "--partition", key,
                               # in one process per run, as label_plate_job runs its steps
                               "--config-json", '{"execution": {"config": {"in_process": {}}}}'],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for key in keys]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    wh = Warehouse(layout.warehouse)
    counts = wh.query_df("SELECT plate_id, count(*) AS n FROM predictions WHERE plate_id IN ('CONC1', 'CONC2') "
                         "GROUP BY plate_id ORDER BY plate_id")
    assert counts.to_dict("list") == {"plate_id": keys, "n": [96, 96]}


def test_label_command_on_a_bare_box_flags_the_same_wells_as_the_plate_assets(trained, tmp_path):
    """The artifact carries the temperature and the threshold: the command, given only the
    model file (no warehouse, no registry), computes the same calibrated crystal_prob and flags
    the same wells as plate_predictions and plate_report."""
    import csv

    import torch

    from crystal_pipeline.cli import main
    from crystal_pipeline.evaluation import registry

    layout = DataLayout.under(trained)
    write_plate(layout.incoming_dir / "SAMEHITS", "SAMEHITS", seed=5, wells=96, size=64)
    wh = Warehouse(layout.warehouse)
    row = registry.production_model(wh)
    artifact = torch.load(row["path"], map_location="cpu", weights_only=True)
    assert artifact["temperature"] == pytest.approx(row["temperature"]) and artifact["temperature"] != 1.0
    assert artifact["crystal_threshold"] == pytest.approx(row["crystal_threshold"])
    with dg.instance_for_test() as instance:
        assert label(trained, instance, "SAMEHITS").success
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(row["path"], bare / "model.pt")
    assert main(["label", str(layout.incoming_dir / "SAMEHITS"), "--model", str(bare / "model.pt"),
                 "--out", str(tmp_path / "cli"), "--workers", "1"]) == 0

    def hits(folder):
        with open(folder / "hits.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        return {r["well"]: (r["hit"], round(float(r["crystal_prob"]), 5)) for r in rows}

    from_asset, from_cli = hits(layout.plate_report_dir("SAMEHITS")), hits(tmp_path / "cli")
    assert len(from_asset) == 96 and from_cli == from_asset
    stored = wh.query_df("SELECT well, crystal_prob FROM predictions WHERE plate_id = 'SAMEHITS'")
    assert dict(zip(stored["well"], stored["crystal_prob"])) == \
        pytest.approx({w: p for w, (_, p) in from_asset.items()}, abs=1e-5)


def test_plate_timeline_and_drops_through_the_plate_assets(trained, monkeypatch):
    """Two inspections of a plate: plate_timeline writes both and its check passes; the newest report
    opens with the new hits. A 2-drop plate named by the imager's pattern: every drop is labelled and
    the missing drops are listed like missing wells."""
    import csv

    layout = DataLayout.under(trained)
    for inspection in ("2024-03-08", "20240301"):
        write_plate(layout.incoming_dir / "TL" / inspection, "TL", seed=6, wells=96, size=64, workers=1)
    wh = Warehouse(layout.warehouse)
    with dg.instance_for_test() as instance:
        for key in ("TL@20240301", "TL@2024-03-08"):
            result = label(trained, instance, key)
            assert result.success and checks(result)["timeline_matches_predictions"].passed
        with open(layout.plate_timeline_csv("TL@2024-03-08"), newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 2 * 96
        assert {(r["inspection"], r["inspection_order"]) for r in rows} == {("20240301", "1"), ("2024-03-08", "2")}
        stored = wh.query_df("SELECT image_id, crystal_prob FROM predictions WHERE plate_id = 'TL'")
        assert dict(zip(stored["image_id"], stored["crystal_prob"])) == \
            pytest.approx({r["image_id"]: float(r["crystal_prob"]) for r in rows}, abs=1e-5)
        assert "## New hits since 20240301" in (layout.plate_report_dir("TL@2024-03-08") / "report.md").read_text()

        drops = layout.incoming_dir / "DR"
        drops.mkdir()
        (drops / "plate.json").write_text(json.dumps({"format": 96, "drops": 2}))
        for col in range(1, 13):
            for drop in (1, 2):
                if (col, drop) != (12, 2):
                    Image.new("L", (64, 64), 20 * drop + col).save(drops / f"DR_{col:02d}A_{drop}.png")
        monkeypatch.setenv("CRYSTAL_FILENAME_PATTERN", "plate_well_drop")
        accounted = checks(label(trained, instance, "DR"))["every_well_accounted_for"]
        meta = {k: v.value for k, v in accounted.metadata.items()}
        assert meta["labelled"] == 23 and meta["missing_wells"] == 96 * 2 - 23
        assert meta["missing_list"].startswith("A12_2, B01, B01_2")
        assert wh.scalar("SELECT count(*) FROM images WHERE plate_id = 'DR' AND \"drop\" = 2") == 11
