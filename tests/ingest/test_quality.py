import pandas as pd

from crystal_pipeline.classes import class_name, has_crystal
from crystal_pipeline.ingest.quality import label_table_checks, share_tolerance, split_checks
from crystal_pipeline.ingest.splits import SplitConfig, assign_sides

WELL = SplitConfig()


def labels(ids, splits=None, hashes=None, config=WELL):
    """The columns labels.stored_labels_with_images gives the split checks (images columns as ingest stores them)."""
    hashes = hashes or [f"sha-{i}" for i in ids]
    if splits is None:
        sides = assign_sides(zip(ids, hashes), config)
        splits = [sides[i] for i in ids]
    return pd.DataFrame({"image_id": ids, "split": splits, "sha256": hashes,
                         "plate_id": [i.split("@")[0] for i in ids], "well": [i.split("/")[1] for i in ids]})


def wells(plates, inspections=1):
    return [f"P{p}@d{d}/{r}{c:02d}" for p in range(plates) for d in range(inspections)
            for r in "ABCDEFGH" for c in range(1, 13)]


def by_name(outcomes):
    return {o.name: o for o in outcomes}


def test_hash_split_passes_every_check():
    ids = wells(12, inspections=2)  # 1,152 wells, two inspections each
    checks = by_name(split_checks(labels(ids), WELL, tolerance=0.02))
    assert all(c.passed for c in checks.values()), checks
    assert checks["split_shares"].metadata["groups"] == 1152
    for mode in ("plate", "image"):
        config = SplitConfig(by=mode)
        assert by_name(split_checks(labels(ids, config=config), config, tolerance=0.02))["no_leak_across_sides"].passed


def stored(n=20):
    """The frame labels.stored_labels_with_images returns, every row consistent."""
    class_ids = [1 + i % 10 for i in range(n)]
    return pd.DataFrame({"image_id": [f"P/W{i}" for i in range(n)], "class_id": class_ids,
                         "class_name": [class_name(c) for c in class_ids],
                         "has_crystal": [has_crystal(c) for c in class_ids],
                         "split": "train", "plate_id": "P", "inspection": None, "well": [f"W{i}" for i in range(n)],
                         "drop": 1, "path": [f"/raw/P/W{i}.png" for i in range(n)], "image_rows": 1, "ok_rows": 1})


def test_label_table_checks_pass_on_consistent_rows_and_name_each_fault():
    assert all(c.passed for c in label_table_checks(stored()))
    same_slot = stored()
    same_slot.loc[3, "well"] = same_slot.loc[4, "well"]  # two labelled pictures of one well and drop
    check = by_name(label_table_checks(same_slot))["unique_image_ids"]
    assert not check.passed and check.metadata["labels_sharing_a_slot_or_file"] == 2
    same_file = stored()
    same_file.loc[5, "path"] = same_file.loc[6, "path"]
    assert by_name(label_table_checks(same_file))["unique_image_ids"].metadata["examples"] == "P/W5, P/W6"
    other_drop = stored()
    other_drop.loc[3, ["well", "drop"]] = [other_drop.loc[4, "well"], 2]  # drop 2 of the same well is fine
    assert by_name(label_table_checks(other_drop))["unique_image_ids"].passed
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


def test_skewed_split_fails_on_any_side():
    ids = wells(12)
    frame = labels(ids, ["train"] * 900 + ["val"] * 100 + ["test"] * 152)  # test 13% against 20%
    check = by_name(split_checks(frame, WELL, tolerance=0.02))["split_shares"]
    assert not check.passed and check.metadata["test_share"] < 0.15
    unknown = labels(ids[:1100], None)
    unknown.loc[0, "split"] = "holdout"
    assert not by_name(split_checks(unknown, WELL, tolerance=0.02))["split_shares"].passed


def test_a_well_or_a_file_hash_on_two_sides_fails_the_leak_check():
    ids = wells(12, inspections=2)
    frame = labels(ids)
    well_leak = frame.copy()
    first = well_leak.index[well_leak["image_id"].str.startswith("P0@d1/A01")][0]
    well_leak.loc[first, "split"] = "test" if well_leak.loc[first, "split"] != "test" else "train"
    outcome = by_name(split_checks(well_leak, WELL, tolerance=0.02))["no_leak_across_sides"]
    assert not outcome.passed and outcome.metadata["groups_on_two_sides"] == 1
    assert "P0|A01" in outcome.metadata["examples"]
    # Two different wells on different sides holding byte-identical files: a hash leak.
    hash_leak = frame.copy()
    a = hash_leak.index[hash_leak["split"] == "train"][0]
    b = hash_leak.index[hash_leak["split"] == "test"][0]
    hash_leak.loc[[a, b], "sha256"] = "same-bytes"
    outcome = by_name(split_checks(hash_leak, WELL, tolerance=0.02))["no_leak_across_sides"]
    assert not outcome.passed and outcome.metadata["hashes_on_two_sides"] == 1
    # The paper's random split by image leaks wells, and the well check says so.
    by_image = labels(ids, config=SplitConfig(by="image"))
    assert not by_name(split_checks(by_image, WELL, tolerance=0.02))["no_leak_across_sides"].passed


def test_shares_below_the_minimum_groups_only_warn_and_are_strict_from_it():
    ids = wells(1)  # 96 wells
    skewed = labels(ids, ["train"] * 96)
    check = by_name(split_checks(skewed, WELL, tolerance=0.02))["split_shares"]
    assert not check.passed and check.warn_only and not check.metadata["judged_strictly"]
    strict = by_name(split_checks(skewed, WELL, tolerance=0.02, min_groups=10))["split_shares"]
    assert not strict.passed and not strict.warn_only
    assert not by_name(split_checks(labels(wells(12)), WELL, tolerance=0.0, min_groups=1))["split_shares"].passed


def test_tolerance_is_two_points_from_1000_groups_and_wider_below():
    assert share_tolerance(1000, 0.2, 0.02) == 0.02
    assert share_tolerance(10, 0.2, 0.02, min_groups=10) == 0.02
    assert share_tolerance(200, 0.2, 0.02, sigmas=0) == 0.02
    assert 0.05 < share_tolerance(200, 0.2, 0.02) < 0.1
    assert share_tolerance(200, 0.1, 0.02) < share_tolerance(200, 0.2, 0.02)


def test_checks_read_the_stored_rows_and_fail_on_crafted_bad_ones(tmp_path):
    """Rows written straight into the warehouse, bypassing consensus: the checks see what is stored."""
    from datetime import datetime

    from crystal_pipeline.warehouse import Warehouse
    from crystal_pipeline.warehouse.labels import stored_labels_with_images

    wh = Warehouse(tmp_path / "w.duckdb")
    wh.ensure_schema()
    now = datetime(2026, 1, 1)
    # Two inspections of well A01 whose ids do not parse to one well (a naming bug upstream):
    # group_key sees "P/A01" and "P/a1", the stored columns say both are P's A01.
    images = [("P@d1/A01", "P", "d1", "A01", "/raw/P/d1/A01.png", "h1"),
              ("P@d3/a1", "P", "d3", "A01", "/raw/P/d3/a1.png", "h2"),
              ("P@d3/B01", "P", "d3", "B01", "/raw/P/d3/B01.png", "h1"),  # the same bytes as P@d1/A01
              ("P@d3/B02", "P", "d3", "B01", "/raw/P/d3/B02.png", "h3")]  # well B01 of d3 twice
    with wh.transaction() as con:
        for image_id, plate, insp, well, path, sha in images:
            con.execute("INSERT INTO images (image_id, plate_id, inspection, well, path, sha256, status, source, "
                        "ingested_at) VALUES (?, ?, ?, ?, ?, ?, 'ok', 'archive', ?)",
                        [image_id, plate, insp, well, path, sha, now])
        for image_id, split in (("P@d1/A01", "train"), ("P@d3/a1", "test"), ("P@d3/B01", "val"),
                                ("P@d3/B02", "val")):
            con.execute("INSERT INTO consensus_labels VALUES (?, 1, 'clear', FALSE, 2, 1.0, ?)", [image_id, split])
    stored = stored_labels_with_images(wh)
    leak = by_name(split_checks(stored, WELL, tolerance=0.02))["no_leak_across_sides"]
    assert not leak.passed
    assert leak.metadata["groups_on_two_sides"] == 1 and leak.metadata["hashes_on_two_sides"] == 1
    unique = by_name(label_table_checks(stored))["unique_image_ids"]
    assert not unique.passed and unique.metadata["examples"] == "P@d3/B01, P@d3/B02"
    # The id-parsing rule that assigned the sides would have missed the well leak.
    from crystal_pipeline.ingest.splits import find_leaks

    assert find_leaks(zip(stored["image_id"], stored["split"], [None] * 4)).none
