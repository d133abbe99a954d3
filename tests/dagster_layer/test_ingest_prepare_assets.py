"""The ingest and prepare assets on a tiny generated archive, in process."""

import dataclasses

import dagster as dg
import numpy as np
import pytest

from crystal_pipeline import tensors
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.warehouse import Warehouse
from resources import StorageResource, build_resources


def materialize_all(data_dir, **run_config):
    import definitions

    result = dg.materialize(
        [*definitions.all_assets, *definitions.all_checks],
        resources=build_resources(StorageResource(data_dir=str(data_dir))),
        instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.groups("ingest", "prepare"),
        run_config=run_config or None,
        raise_on_error=True,
    )
    assert result.success
    return result


def check_results(result):
    return {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def metadata(result, asset):
    [event] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


def test_ingest_and_prepare_end_to_end(data_dir):
    result = materialize_all(data_dir)
    layout = DataLayout.under(data_dir)
    wh = Warehouse(layout.warehouse)
    images = wh.scalar("SELECT count(*) FROM images")
    assert images == 2 * 96
    meta = metadata(result, "raw_images")
    assert meta["files_found"] == 192 and meta["new"] == 192 and meta["quarantined_total"] == 0

    # Annotation errors in the generated CSVs are recorded, not fatal.
    errors = wh.scalar("SELECT count(*) FROM annotation_errors")
    assert metadata(result, "annotations")["error_rows"] == errors

    consensus = metadata(result, "consensus_labels")
    assert "| annotators | agreeing | images |" in consensus["agreement"] and "data:image/png" in consensus["agreement"]
    assert consensus["labelled_images"] == wh.scalar("SELECT count(*) FROM consensus_labels")
    labels = wh.query_df("SELECT * FROM consensus_labels")
    assert 0 < len(labels) <= images
    assert set(labels["split"]) <= {"train", "val", "test"} and labels["class_id"].between(1, 10).all()
    # Unanimous by default: every labelled image's annotators all gave the same set.
    disagreeing = wh.scalar(
        "SELECT count(*) FROM (SELECT image_id FROM annotations GROUP BY image_id "
        "HAVING count(DISTINCT list_sort(attributes)) > 1) d JOIN consensus_labels USING (image_id)")
    assert disagreeing == 0

    # Tensors hold exactly the labelled images, decoded as load_grey would.
    assert {k: v for k, v in metadata(result, "image_tensors").items() if k.endswith("_rows")} == {
        f"{s}_rows": int((labels["split"] == s).sum()) for s in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        read = tensors.read_split(layout.tensors_split_dir(128, split))
        ids, class_ids, pixels = read.image_ids, read.class_ids, read.pixels
        expected = labels[labels["split"] == split].sort_values("image_id")
        assert ids == list(expected["image_id"])
        assert list(class_ids) == list(expected["class_id"])
        assert pixels.shape == (len(ids), 128, 128) and pixels.dtype == np.uint8
    mean, std = tensors.load_stats(layout.stats_path(128))
    train = tensors.read_split(layout.tensors_split_dir(128, "train")).pixels
    np.testing.assert_allclose(mean, train.mean(axis=0), atol=1e-3)

    checks = check_results(result)
    assert checks["no_quarantined_images"] and checks["tensor_rows_match_labels"]
    assert checks["pixel_length_is_resolution_squared"] and checks["stats_are_usable"]
    assert checks["unique_image_ids"] and checks["class_ids_in_range"]
    assert checks["split_shares"] and checks["no_leak_across_sides"]
    assert checks["no_annotation_errors"] == (errors == 0)


def test_rerun_changes_nothing_and_a_bad_file_fails_the_check(data_dir):
    materialize_all(data_dir)
    wh = Warehouse(DataLayout.under(data_dir).warehouse)
    before = wh.query_df("SELECT * FROM images ORDER BY image_id")
    labels_before = wh.query_df("SELECT * FROM consensus_labels ORDER BY image_id")

    # A corrupt file arrives on a new plate: quarantined, listed, everything else unchanged.
    bad = data_dir / "raw" / "plates" / "ZZBAD"
    bad.mkdir()
    (bad / "A01.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = materialize_all(data_dir)
    assert metadata(result, "raw_images")["new"] == 1 and metadata(result, "raw_images")["unchanged"] == 192
    assert not check_results(result)["no_quarantined_images"]
    after = wh.query_df("SELECT * FROM images WHERE plate_id <> 'ZZBAD' ORDER BY image_id")
    assert after.equals(before)
    assert wh.query_df("SELECT * FROM consensus_labels ORDER BY image_id").equals(labels_before)


def test_majority_rule_and_plate_split_are_run_config(data_dir):
    from crystal_pipeline.ingest.splits import SplitConfig, side_for

    # Two plates only: pick a split seed that puts the plates on different sides.
    plate_ids = sorted(p.name for p in (data_dir / "raw" / "plates").iterdir())
    seed = next(s for s in range(1000) if len({side_for(p, SplitConfig(by="plate", seed=s)) for p in plate_ids}) == 2)
    config = {"ops": {"consensus_labels": {"config": {"rule": "majority", "min_agreement": 0.5,
                                                     "split_by": "plate", "seed": seed}}}}
    result = materialize_all(data_dir, **config)
    wh = Warehouse(DataLayout.under(data_dir).warehouse)
    sides = wh.query_df("SELECT split_part(image_id, '/', 1) AS plate, count(DISTINCT split) AS n "
                        "FROM consensus_labels GROUP BY 1")
    assert (sides["n"] == 1).all()
    unanimous = wh.scalar("SELECT count(*) FROM consensus_labels WHERE agreement = 1.0")
    assert wh.scalar("SELECT count(*) FROM consensus_labels") > unanimous  # majority adds split votes
    assert check_results(result)["no_leak_across_sides"]


def run_checks(data_dir, *names):
    """Run the named standalone checks alone, against whatever is stored now."""
    import definitions

    keys = [k for k in definitions.defs.resolve_asset_graph().asset_check_keys if k.name in names]
    assert len(keys) == len(names)
    result = dg.materialize([*definitions.all_assets, *definitions.all_checks],
                            resources=build_resources(StorageResource(data_dir=str(data_dir))),
                            instance=dg.DagsterInstance.ephemeral(), selection=dg.AssetSelection.checks(*keys),
                            raise_on_error=False)  # a failing blocking check fails its step
    return check_results(result)


def test_each_stored_data_check_fails_on_bad_stored_data(data_dir):
    materialize_all(data_dir)
    layout = DataLayout.under(data_dir)
    wh = Warehouse(layout.warehouse)
    names = ("unique_image_ids", "class_ids_in_range", "pixel_length_is_resolution_squared", "stats_are_usable")
    assert run_checks(data_dir, *names) == dict.fromkeys(names, True)

    # A label whose picture was quarantined since: it names no decodable image.
    first, second = wh.query_df("SELECT image_id FROM consensus_labels ORDER BY image_id LIMIT 2")["image_id"]
    with wh.transaction() as con:
        con.execute("UPDATE images SET status = 'quarantined' WHERE image_id = ?", [first])
    assert run_checks(data_dir, "unique_image_ids", "class_ids_in_range") == {
        "unique_image_ids": False, "class_ids_in_range": True}
    # A stored class id out of 1..10.
    with wh.transaction() as con:
        con.execute("UPDATE images SET status = 'ok' WHERE image_id = ?", [first])
        con.execute("UPDATE consensus_labels SET class_id = 11 WHERE image_id = ?", [second])
    assert run_checks(data_dir, "unique_image_ids", "class_ids_in_range") == {
        "unique_image_ids": True, "class_ids_in_range": False}

    # Stats of a training split whose pixels never vary (all at the floor), then non-finite stats.
    mean, std = tensors.load_stats(layout.stats_path(128))
    tensors.save_stats(layout.stats_path(128), mean, np.full_like(std, tensors.STD_FLOOR))
    assert run_checks(data_dir, "stats_are_usable") == {"stats_are_usable": False}
    std[3, 4] = np.nan
    tensors.save_stats(layout.stats_path(128), mean, std)
    assert run_checks(data_dir, "stats_are_usable") == {"stats_are_usable": False}
    tensors.save_stats(layout.stats_path(128), mean[:64, :64], np.maximum(std[:64, :64], 2))
    assert run_checks(data_dir, "stats_are_usable") == {"stats_are_usable": False}

    # A truncated part file on disk.
    part = sorted(layout.tensors_split_dir(128, "val").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    assert run_checks(data_dir, "pixel_length_is_resolution_squared") == {"pixel_length_is_resolution_squared": False}


def test_pixel_length_check_reads_the_files_not_the_schema(tmp_path):
    """A part file of another resolution, and a whole good split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crystal_pipeline.tensors.verify import check_stats, read_back_split

    split = tmp_path / "val"
    split.mkdir()
    table = pa.table({"image_id": ["a", "b"], "class_id": pa.array([1, 2], pa.int8()),
                      "pixels": pa.array([bytes(32 * 32)] * 2, pa.binary(32 * 32))})
    pq.write_table(table, split / "part-00000.parquet")
    assert read_back_split(split, 32).ok and read_back_split(split, 32).rows == 2
    wrong = read_back_split(split, 64)
    assert not wrong.ok and wrong.bad_lengths == 2
    ok = check_stats(np.zeros((32, 32)), np.full((32, 32), 5.0), 32, 1.0)
    assert ok.ok and ok.floored_share == 0
    half = np.full((32, 32), 5.0)
    half[:17] = 1.0  # 53% of the pixels never varied
    assert not check_stats(np.zeros((32, 32)), half, 32, 1.0).ok


def _annotations_run(data_dir, instance, **config):
    import definitions

    return dg.materialize([*definitions.all_assets, *definitions.all_checks],
                          resources=build_resources(StorageResource(data_dir=str(data_dir))), instance=instance,
                          selection=dg.AssetSelection.assets("annotations"), raise_on_error=False,
                          run_config={"ops": {"annotations": {"config": config}}} if config else None)


def _failure(result):
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data.error.message


def test_an_annotations_refresh_refuses_to_wipe_the_votes(data_dir):
    import definitions

    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([*definitions.all_assets, *definitions.all_checks],
                          resources=build_resources(StorageResource(data_dir=str(data_dir))), instance=instance,
                          selection=dg.AssetSelection.assets("raw_images", "annotations")).success
    wh = Warehouse(DataLayout.under(data_dir).warehouse)
    votes = wh.query_df("SELECT * FROM annotations ORDER BY ALL")
    assert len(votes) > 0
    folder = data_dir / "raw" / "annotations"

    folder.rename(data_dir / "raw" / "annotations.moved")
    result = _annotations_run(data_dir, instance)
    assert not result.success
    message = _failure(result)
    assert f"the annotations folder {folder} is missing" in message and f"all {len(votes)} stored votes" in message
    assert "allow_vote_loss" in message
    assert wh.query_df("SELECT * FROM annotations ORDER BY ALL").equals(votes)

    # Back, with a 30% allowance in run config: the refresh runs (nothing lost) and reports it.
    (data_dir / "raw" / "annotations.moved").rename(folder)
    result = _annotations_run(data_dir, instance, max_vote_loss_share=0.3)
    assert result.success and metadata(result, "annotations")["stored_votes_removed"] == 0


def test_a_failing_label_check_stops_the_tensors(data_dir, monkeypatch):
    """stored_label_checks is blocking: image_tensors waits for it and does not run when it fails."""
    import definitions
    from crystal_pipeline.ingest import quality

    real = quality.label_table_checks
    monkeypatch.setattr(quality, "label_table_checks", lambda stored: [
        dataclasses.replace(o, passed=False) if o.name == "class_ids_in_range" else o for o in real(stored)])
    result = dg.materialize([*definitions.all_assets, *definitions.all_checks],
                            resources=build_resources(StorageResource(data_dir=str(data_dir))),
                            instance=dg.DagsterInstance.ephemeral(),
                            selection=dg.AssetSelection.groups("ingest", "prepare"), raise_on_error=False)
    assert not result.success and check_results(result)["class_ids_in_range"] is False
    assert result.asset_materializations_for_node("consensus_labels")
    assert result.asset_materializations_for_node("image_tensors") == []


def test_a_vanished_well_of_a_plate_counts_as_missing_not_present(tmp_path):
    import definitions
    from PIL import Image

    storage = StorageResource(data_dir=str(tmp_path / "data"))
    folder = storage.layout.incoming_dir / "GONE"
    folder.mkdir(parents=True)
    (folder / "plate.json").write_text('{"format": 96}')
    for row in "AB":
        Image.new("L", (16, 16), 9).save(folder / f"{row}01.png")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("plates", ["GONE"])

    def plate_images():
        result = dg.materialize([*definitions.all_assets], resources=build_resources(storage), instance=instance,
                                selection=dg.AssetSelection.assets("plate_images"), partition_key="GONE")
        return metadata(result, "plate_images")

    assert plate_images()["missing_wells"] == 94
    (folder / "B01.png").unlink()
    meta = plate_images()
    assert (meta["missing_wells"], meta["quarantined"]) == (95, 0)
    assert "B01" in meta["missing"]
    status = Warehouse(storage.layout.warehouse).scalar("SELECT status FROM images WHERE image_id = 'GONE/B01'")
    assert status == "vanished"
