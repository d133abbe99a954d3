import json
import os

from PIL import Image

from crystal_pipeline.ingest.incoming import decide, find_plates, plate_folder_path


def plate(root, name, wells, fmt=96, inspection=None):
    folder = root / name / inspection if inspection else root / name
    folder.mkdir(parents=True, exist_ok=True)
    (root / name / "plate.json").write_text(json.dumps({"format": fmt}))
    for i, well in enumerate(wells):
        Image.new("L", (8, 8), i % 255).save(folder / f"{well}.png")
    return folder


def wells96(n):
    return [f"{chr(65 + i // 12)}{i % 12 + 1:02d}" for i in range(n)]


def test_complete_incomplete_marker_and_reimaged_plates(tmp_path):
    plate(tmp_path, "FULL", wells96(96))
    plate(tmp_path, "HALF", wells96(40))
    marked = plate(tmp_path, "MARKED", wells96(10))
    (marked / "COMPLETE").write_text("")
    plate(tmp_path, "RE", wells96(96), inspection="day1")
    plate(tmp_path, "RE", wells96(96), inspection="day7")
    (tmp_path / "stray.txt").write_text("not a plate")
    found = {p.key: p for p in find_plates(tmp_path)}
    assert set(found) == {"FULL", "HALF", "MARKED", "RE@day1", "RE@day7"}
    assert found["FULL"].complete and found["MARKED"].complete and not found["HALF"].complete
    assert "40 of 96 wells" in found["HALF"].why_not_complete()
    assert found["RE@day7"].inspection == "day7" and found["RE@day7"].expected_wells == 96
    assert plate_folder_path(tmp_path, "RE@day7") == tmp_path / "RE" / "day7"


def test_a_plate_is_ready_only_when_stable_across_two_ticks(tmp_path):
    folder = plate(tmp_path, "P", wells96(96))
    first = decide(find_plates(tmp_path), {})
    assert not first.ready and "changed" in first.skipped["P"]
    second = decide(find_plates(tmp_path), first.seen)
    assert [p.key for p in second.ready] == ["P"]
    # A corrected image changes the signature: the plate waits a tick, then is ready with a new signature.
    Image.new("L", (8, 8), 200).save(folder / "A01.png")
    os.utime(folder / "A01.png", ns=(10**18, 10**18))
    third = decide(find_plates(tmp_path), second.seen)
    assert not third.ready and third.seen["P"] != second.seen["P"]
    fourth = decide(find_plates(tmp_path), third.seen)
    assert fourth.ready[0].signature == third.seen["P"]


def test_many_plates_at_once(tmp_path):
    for i in range(30):
        plate(tmp_path, f"B{i:03d}", wells96(96 if i % 3 else 50))
    tick1 = decide(find_plates(tmp_path), {})
    tick2 = decide(find_plates(tmp_path), tick1.seen)
    assert len(tick2.ready) == 20 and len(tick2.skipped) == 10
    assert all("incomplete" in why for why in tick2.skipped.values())
