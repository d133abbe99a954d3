"""A time-course archive (every plate imaged at several inspections, plus byte-identical
files in different wells) through ingest and consensus: no well and no file hash on two
sides, and the leak check fails (blocking the tensors) when the stored table leaks."""

import shutil

import dagster as dg
import numpy as np
from PIL import Image

from crystal_pipeline.ingest.splits import SplitConfig, side_for, well_key
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.warehouse import Warehouse
from resources import StorageResource, build_resources

PLATES = ("TC1", "TC2", "TC3")
INSPECTIONS = ("day01", "day03", "day07")
WELLS = [f"{r}{c:02d}" for r in "ABCD" for c in range(1, 13)]


def _write_time_course(raw):
    """Plates x inspections x wells of small PNGs, each well's look drifting between
    inspections; two copies of one file land in wells whose own keys sit on different sides."""
    rng = np.random.default_rng(3)
    rows = ["plate_id,inspection,well,annotator,attributes"]
    for plate in PLATES:
        for inspection in INSPECTIONS:
            folder = raw / "plates" / plate / inspection
            folder.mkdir(parents=True)
            for well in WELLS:
                Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{well}.png")
                attrs = "clear" if rng.random() < 0.6 else "precipitate"
                rows += [f"{plate},{inspection},{well},{a},{attrs}" for a in ("ann1", "ann2")]
    source = f"{PLATES[0]}/A01"
    target = next(f"{p}/{w}" for p in PLATES[1:] for w in WELLS if side_for(f"{p}/{w}") != side_for(source))
    for inspection in INSPECTIONS[:2]:  # the imager wrote the same bytes twice
        plate, well = target.split("/")
        shutil.copy(raw / "plates" / PLATES[0] / inspection / "A01.png", raw / "plates" / plate / inspection / f"{well}.png")
    (raw / "annotations").mkdir()
    (raw / "annotations" / "time_course.csv").write_text("\n".join(rows) + "\n")
    return source, target


def _materialize(data_dir, *groups, raise_on_error=True):
    import definitions

    return dg.materialize(
        [*definitions.all_assets, *definitions.all_checks],
        resources=build_resources(StorageResource(data_dir=str(data_dir))),
        instance=dg.DagsterInstance.ephemeral(), selection=dg.AssetSelection.groups("ingest", *groups),
        raise_on_error=raise_on_error)


def _checks(result):
    return {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def _setup(tmp_path, monkeypatch):
    data = tmp_path / "data"
    source, target = _write_time_course(data / "raw")
    monkeypatch.setenv("CRYSTAL_DATA_DIR", str(data))
    monkeypatch.delenv("CRYSTAL_RAW_DIR", raising=False)
    monkeypatch.delenv("CRYSTAL_INCOMING_DIR", raising=False)
    return data, source, target


def test_time_course_archive_puts_no_well_and_no_hash_on_two_sides(tmp_path, monkeypatch):
    data, source, target = _setup(tmp_path, monkeypatch)
    result = _materialize(data)
    wh = Warehouse(DataLayout.under(data).warehouse)
    stored = wh.query_df("SELECT l.image_id, l.split, i.sha256 FROM consensus_labels l JOIN images i USING (image_id)")
    assert len(stored) == len(PLATES) * len(INSPECTIONS) * len(WELLS)
    assert stored.groupby(stored["image_id"].map(well_key))["split"].nunique().max() == 1
    assert stored.groupby("sha256")["split"].nunique().max() == 1
    assert stored["sha256"].duplicated().sum() == 2  # the copies are really there
    sides = dict(zip(stored["image_id"].map(well_key), stored["split"]))
    assert sides[source] == sides[target]  # merged, although their own keys hash to different sides
    assert set(stored["split"]) == {"train", "val", "test"}
    checks = _checks(result)
    assert checks["no_leak_across_sides"].passed and checks["split_shares"].passed


def test_leak_check_fails_when_the_stored_table_leaks(tmp_path, monkeypatch):
    import crystal_pipeline.ingest.stored_consensus as stored_consensus

    data, _, _ = _setup(tmp_path, monkeypatch)

    # A buggy writer: the paper's random split by image stored while the run's rule is "well".
    real = stored_consensus.group_key
    monkeypatch.setattr(stored_consensus, "group_key", lambda image_id, by: real(image_id, "image"))
    result = _materialize(data, "prepare", raise_on_error=False)
    check = _checks(result)["no_leak_across_sides"]
    assert not check.passed
    assert check.metadata["groups_on_two_sides"].value > 0  # inspections of one well on different sides
    # Blocking: the run fails at consensus_labels and nothing downstream is materialized.
    assert not result.success
    assert result.asset_materializations_for_node("image_tensors") == []
    assert not DataLayout.under(data).tensors_dir(128).exists()
