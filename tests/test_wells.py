import pytest

from crystal_pipeline import wells


@pytest.mark.parametrize(
    "text, fmt, name, index",
    [
        ("A01", None, "A01", 1),
        ("a1", None, "A01", 1),
        ("AF48", 1536, "AF48", 1536),
        ("Z01", 1536, "Z01", 25 * 48 + 1),
        ("AA01", 1536, "AA01", 26 * 48 + 1),
        ("1536", 1536, "AF48", 1536),
        ("49", 1536, "B01", 49),
        ("13", 96, "B01", 13),
        ("H12", 96, "H12", 96),
        ("384", 384, "P24", 384),
    ],
)
def test_parse_well_both_forms(text, fmt, name, index):
    well = wells.parse_well(text, fmt)
    assert well.name == name
    assert well.index(fmt or 1536) == index


@pytest.mark.parametrize("text, fmt", [("Z99", None), ("AG01", None), ("I01", 96), ("A13", 96), ("0", None),
                                       ("1537", None), ("97", 96), ("notes", None), ("", None), ("BA01", None)])
def test_parse_well_rejects_wells_on_no_plate(text, fmt):
    with pytest.raises(wells.InvalidWell):
        wells.parse_well(text, fmt)


def test_row_letters_cover_32_rows():
    letters = [wells.row_letters(r) for r in range(1, 33)]
    assert letters[0] == "A" and letters[25] == "Z" and letters[26] == "AA" and letters[31] == "AF"
    assert len(set(letters)) == 32


@pytest.mark.parametrize("fmt", [96, 384, 1536])
def test_all_wells_round_trip_names_and_indices(fmt):
    every = wells.all_wells(fmt)
    assert len(every) == fmt
    for i, well in enumerate(every, start=1):
        assert well.index(fmt) == i
        assert wells.parse_well(well.name, fmt) == well
        assert wells.parse_well(str(i), fmt) == well


def test_smallest_format_holding():
    assert wells.smallest_format_holding([wells.Well(8, 12)]) == 96
    assert wells.smallest_format_holding([wells.Well(1, 13)]) == 384
    assert wells.smallest_format_holding([wells.Well(17, 1), wells.Well(1, 1)]) == 1536


def test_image_id_is_readable_and_includes_inspection():
    assert wells.image_id("P1", "A01") == "P1/A01"
    assert wells.image_id("P1", "A01", "2024-05-01") == "P1@2024-05-01/A01"


def test_missing_wells_in_row_major_order():
    assert wells.missing_wells(["A01", "A03"] + [w.name for w in wells.all_wells(96)[3:]], 96) == ["A02"]
    assert wells.missing_wells([], 96)[:2] == ["A01", "A02"] and len(wells.missing_wells([], 1536)) == 1536
    with pytest.raises(wells.InvalidWell):
        wells.missing_wells([], 100)
