import pandas as pd

from crystal_pipeline.ingest.consensus import split_for
from crystal_pipeline.ingest.quality import split_checks, val_share_tolerance


def labels(ids, splits=None, class_id=1):
    splits = splits or [split_for(i) for i in ids]
    return pd.DataFrame({"image_id": ids, "class_id": class_id, "split": splits})


def by_name(outcomes):
    return {o.name: o for o in outcomes}


def test_hash_split_passes_every_check():
    ids = [f"P{p}/W{w}" for p in range(3) for w in range(600)]
    checks = by_name(split_checks(labels(ids), split_by="image", val_fraction=0.2, tolerance=0.02))
    assert all(c.passed for c in checks.values())


def test_duplicates_bad_classes_and_skewed_split_fail():
    ids = [f"P/W{w}" for w in range(1200)]
    frame = labels(ids, ["train"] * 1100 + ["val"] * 100)
    frame.loc[3, "image_id"] = frame.loc[4, "image_id"]
    frame.loc[5, "class_id"] = 11
    checks = by_name(split_checks(frame, split_by="image", val_fraction=0.2, tolerance=0.02))
    assert not checks["unique_image_ids"].passed and checks["unique_image_ids"].metadata["duplicates"] == 1
    assert not checks["class_ids_in_range"].passed
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
