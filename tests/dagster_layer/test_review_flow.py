"""Corrections flow back: a review CSV in <raw_dir>/annotations/ changes consensus_labels,
labels an incoming plate's image, and its bad rows land in annotation_errors."""

import dagster as dg

from crystal_pipeline.layout import DataLayout
from crystal_pipeline.synthetic import write_plate
from crystal_pipeline.warehouse import Warehouse
from resources import StorageResource, build_resources


def materialize(data_dir, instance, selection, partition_key=None, **run_config):
    import definitions

    result = dg.materialize([*definitions.all_assets, *definitions.all_checks],
                            resources=build_resources(StorageResource(data_dir=str(data_dir))), instance=instance,
                            selection=selection, partition_key=partition_key, run_config=run_config or None,
                            raise_on_error=True)
    assert result.success
    return result


def metadata(result, asset):
    [event] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


def test_a_review_csv_overrides_labels_labels_incoming_images_and_reports_bad_rows(data_dir):
    layout = DataLayout.under(data_dir)
    wh = Warehouse(layout.warehouse)
    with dg.instance_for_test() as instance:
        materialize(data_dir, instance, dg.AssetSelection.groups("ingest"))
        write_plate(layout.incoming_dir / "NEW1", "NEW1", seed=3, wells=96, size=64)
        instance.add_dynamic_partitions("plates", ["NEW1"])
        materialize(data_dir, instance, dg.AssetSelection.assets("plate_images"), partition_key="NEW1")
        before = dict(wh.query_df("SELECT image_id, class_name FROM consensus_labels").itertuples(index=False))
        errors_before = int(wh.scalar("SELECT count(*) FROM annotation_errors"))
        # A labelled image whose class the reviewer changes, one that keeps its class, and an incoming image.
        changed = next(i for i, c in sorted(before.items()) if c != "skin")
        kept = next(i for i, c in sorted(before.items()) if i != changed)
        plate, well = changed.split("/")
        kept_plate, kept_well = kept.split("/")
        review = layout.raw_dir / "annotations" / "review_NEW1_ana.csv"
        review.write_text("plate_id,well,inspection,annotator,attributes\n"
                          f"{plate},{well},,review:ana,skin\n"
                          f"{kept_plate},{kept_well},,review:ana,{_attributes(before[kept])}\n"
                          "NEW1,C03,,review:ana,precipitate;crystal\n"
                          "NOPLATE,A01,,review:ana,crystal\n"      # line 5: unknown plate
                          "NEW1,Z99,,review:ana,crystal\n"         # line 6: unknown well
                          "NEW1,C04,,review:ana,crystalline\n")    # line 7: unknown attribute
        result = materialize(data_dir, instance, dg.AssetSelection.assets("annotations", "consensus_labels"))

    labels = dict(wh.query_df("SELECT image_id, class_name FROM consensus_labels").itertuples(index=False))
    assert labels[changed] == "skin" and labels[kept] == before[kept]
    assert labels["NEW1/C03"] == "precipitate_crystal"
    assert set(labels) == set(before) | {"NEW1/C03"}
    split = wh.scalar("SELECT split FROM consensus_labels WHERE image_id = 'NEW1/C03'")
    assert split in ("train", "val", "test")
    meta = metadata(result, "consensus_labels")
    assert (meta["reviewed_images"], meta["reviews_changed_class"], meta["reviews_confirmed"]) == (3, 1, 1)
    assert meta["reviews_newly_labelled"] == 1 and meta["reviews_newly_labelled_incoming"] == 1
    assert meta["review_overrides"] is True and "review changed the class | 1" in meta["reviews"]
    assert metadata(result, "annotations")["annotations_signature"]
    errors = wh.query_df("SELECT source_file, source_line, reason FROM annotation_errors "
                         "WHERE source_file = 'review_NEW1_ana.csv' ORDER BY source_line")
    assert list(errors["source_line"]) == [5, 6, 7]
    assert "unknown plate" in errors["reason"][0] and "unknown well" in errors["reason"][1]
    assert "crystalline" in errors["reason"][2]
    assert int(wh.scalar("SELECT count(*) FROM annotation_errors")) == errors_before + 3


def _attributes(class_name: str) -> str:
    from crystal_pipeline.classes import CLASSES

    [attributes] = [attrs for name, attrs in CLASSES.values() if name == class_name]
    return ";".join(sorted(attributes))
