from pathlib import Path

import pytest

from crystal_pipeline.ingest.annotations import read_annotations

FORMATS = {"P1": 96, "P2@day3": 1536}
KNOWN = {"P1/A01", "P1/A02", "P1/B01", "P2@day3/A01", "P2@day3/B01"}


def write(path, text):
    path.write_text(text)
    return path


def test_good_rows_parse_in_any_column_order_and_both_well_forms(tmp_path):
    f = write(tmp_path / "a.csv",
              "annotator,Attributes,well,plate_id\n"
              "ann1, Precipitate ; CRYSTAL ,A01,P1\n"
              "ann1,clear,13,P1\n")  # 13 on a 96-well plate is B01
    g = write(tmp_path / "b.csv", "plate_id,inspection,well,annotator,attributes\nP2,day3,49,ann2,skin\n")
    table = read_annotations([f, g], FORMATS, KNOWN)
    assert table.errors == []
    got = [(a.image_id, a.annotator, a.attributes, a.source_file, a.source_line) for a in table.annotations]
    assert got == [
        ("P1/A01", "ann1", ("crystal", "precipitate"), "a.csv", 2),
        ("P1/B01", "ann1", ("clear",), "a.csv", 3),
        ("P2@day3/B01", "ann2", ("skin",), "b.csv", 2),
    ]


def test_each_bad_row_is_an_error_with_file_line_and_reason_and_nothing_else_is_lost(tmp_path):
    f = write(tmp_path / "bad.csv", "\n".join([
        "plate_id,well,annotator,attributes",
        "P1,A01,ann1,crystal",        # 2 ok
        "P1,A01,ann2,crystals",       # 3 unknown attribute
        "P1,Z99,ann1,clear",          # 4 unknown well
        "P9,A01,ann1,clear",          # 5 unknown plate
        "P1,A03,ann1,clear",          # 6 a well with no image
        "P1,A02,,clear",              # 7 missing annotator
        "P1,A01,ann1,precipitate",    # 8 duplicate annotator for P1/A01
        "P1,A02,ann1",                # 9 too few fields
        "P1,A02,ann1,clear",          # 10 ok
        "",
    ]))
    table = read_annotations([f], FORMATS, KNOWN)
    assert [(a.image_id, a.source_line) for a in table.annotations] == [("P1/A01", 2), ("P1/A02", 10)]
    reasons = {e.source_line: e.reason for e in table.errors}
    assert set(reasons) == {3, 4, 5, 6, 7, 8, 9}
    assert "unknown attribute 'crystals'" in reasons[3]
    assert "unknown well" in reasons[4]
    assert "unknown plate" in reasons[5]
    assert "unknown image" in reasons[6]
    assert "missing field(s) annotator" in reasons[7]
    assert "duplicate annotation" in reasons[8] and "bad.csv:2" in reasons[8]
    assert "expected 4 fields" in reasons[9]
    assert all(e.source_file == "bad.csv" and e.raw for e in table.errors)


def test_a_file_without_the_required_columns_is_one_error(tmp_path):
    f = write(tmp_path / "odd.csv", "plate,well,who\nP1,A01,x\n")
    empty = write(tmp_path / "empty.csv", "")
    table = read_annotations([f, empty], FORMATS, KNOWN)
    assert table.annotations == []
    assert [(e.source_file, e.source_line) for e in table.errors] == [("odd.csv", 1), ("empty.csv", None)]
    assert "plate_id" in table.errors[0].reason and "attributes" in table.errors[0].reason


def test_a_refresh_losing_most_votes_or_its_folder_is_refused(tmp_path, monkeypatch):
    from crystal_pipeline.ingest.annotations import AnnotationRefreshRefused, refuse_destructive_refresh

    folder = tmp_path / "annotations"
    folder.mkdir()
    stored = [(f"P/A{i:02d}", who) for i in range(1, 11) for who in ("ann1", "ann2")]
    assert refuse_destructive_refresh(folder, stored, stored[::-1]) == 0  # order, files: nothing lost
    half = stored[:10]
    assert refuse_destructive_refresh(folder, stored, half) == 10  # 50% is not more than 0.5
    with pytest.raises(AnnotationRefreshRefused, match=r"11 of the 20 stored votes \(55%\).*max_vote_loss_share = 0.5"):
        refuse_destructive_refresh(folder, stored, stored[:9])
    with pytest.raises(AnnotationRefreshRefused, match="max_vote_loss_share = 0.3"):
        refuse_destructive_refresh(folder, stored, half, max_vote_loss_share=0.3)
    assert refuse_destructive_refresh(folder, stored, [], allow_vote_loss=True) == 20
    with pytest.raises(AnnotationRefreshRefused, match=f"the annotations folder {tmp_path / 'gone'} is missing"):
        refuse_destructive_refresh(tmp_path / "gone", [], [])
    # Unreadable (chmod 0 does not stop root, so the listing itself fails here).
    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(AnnotationRefreshRefused, match=r"unreadable \(Permission denied\).*all 20 stored votes"):
        refuse_destructive_refresh(folder, stored, [])
