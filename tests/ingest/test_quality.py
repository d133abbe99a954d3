import pandas as pd

from crystal_pipeline.ingest.consensus import split_for
from crystal_pipeline.classes import class_name, has_crystal
from crystal_pipeline.ingest.quality import label_table_checks, split_checks, val_share_tolerance


def labels(ids, splits=None, class_id=1):
    splits = splits or [split_for(i) for i in ids]
    return pd.DataFrame({"image_id": ids, "class_id": class_id, "split": splits})


def by_name(outcomes):
    return {o.name: o for o in outcomes}


def test_hash_split_passes_every_check():
    ids = [f"P{p}/W{w}" for p in range(3) for w in range(600)]
    checks = by_name(split_checks(labels(ids), split_by="image", val_fraction=0.2, tolerance=0.02))
    assert all(c.passed for c in checks.values())


def stored(n=20):
    """The frame labels.stored_labels_with_images returns, every row consistent."""
    class_ids = [1 + i % 10 for i in range(n)]
    return pd.DataFrame({"image_id": [f"P/W{i}" for i in range(n)], "class_id": class_ids,
                         "class_name": [class_name(c) for c in class_ids],
                         "has_crystal": [has_crystal(c) for c in class_ids],
                         "split": "train", "image_rows": 1, "ok_rows": 1})


def test_label_table_checks_pass_on_consistent_rows_and_name_each_fault():
    assert all(c.passed for c in label_table_checks(stored()))
    dupes = stored()
    dupes.loc[3, "image_id"] = dupes.loc[4, "image_id"]
    assert by_name(label_table_checks(dupes))["unique_image_ids"].metadata["duplicates"] == 1
    orphan = stored()
    orphan.loc[2, "ok_rows"] = 0  # the labelled picture is quarantined
    check = by_name(label_table_checks(orphan))["unique_image_ids"]
    assert not check.passed and check.metadata["examples"] == "P/W2"
    for column, value in (("class_id", 11), ("class_id", 0), ("class_name", "clear"), ("has_crystal", True)):
        bad = stored()
        bad.loc[1, column] = value  # row 1 is class 2 (not a crystal, not "clear")
        outcome = by_name(label_table_checks(bad))["class_ids_in_range"]
        assert not outcome.passed and outcome.metadata["examples"] == "P/W1", column
        assert by_name(label_table_checks(bad))["unique_image_ids"].passed


def test_skewed_split_fails():
    ids = [f"P/W{w}" for w in range(1200)]
    frame = labels(ids, ["train"] * 1100 + ["val"] * 100)
    checks = by_name(split_checks(frame, split_by="image", val_fraction=0.2, tolerance=0.02))
    assert not checks["validation_share"].passed and checks["validation_share"].metadata["val_share"] < 0.1


def test_plate_leak_fails_only_when_splitting_by_plate():
    frame = labels(["A/W1", "A/W2", "B/W1"], ["train", "val", "train"])
    assert not by_name(split_checks(frame, split_by="plate", val_fraction=0.2, tolerance=0.02))[
        "no_plate_on_both_sides"].passed
    assert by_name(split_checks(frame, split_by="image", val_fraction=0.2, tolerance=0.02))[
        "no_plate_on_both_sides"].passed


def test_tolerance_is_two_points_from_1000_images_and_wider_below():
    assert val_share_tolerance(1000, 0.2, 0.02) == 0.02
    assert 0.05 < val_share_tolerance(200, 0.2, 0.02) < 0.1
