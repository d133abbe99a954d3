import pytest

from crystal_pipeline import classes


def test_ten_classes_in_paper_order_with_distinct_sets():
    assert classes.NUM_CLASSES == 10
    assert classes.CLASS_NAMES[0] == "clear" and classes.CLASS_NAMES[9] == "junk"
    sets = [attrs for _, attrs in classes.CLASSES.values()]
    assert len(set(sets)) == 10


@pytest.mark.parametrize(
    "attrs, expected",
    [
        ({"clear"}, 1),
        ({"precipitate", "crystal"}, 5),
        ({"phase_separation", "crystal"}, 7),
        ({"phase_separation", "precipitate"}, 8),
        ({"skin"}, 9),
        ({"crystal", "unsure"}, None),
        ({"unsure"}, None),
        ({"clear", "crystal"}, None),
        ({"skin", "crystal"}, None),
    ],
)
def test_class_for_attributes(attrs, expected):
    assert classes.class_for_attributes(attrs) == expected


def test_parse_attributes_forgives_case_spaces_and_aliases():
    assert classes.parse_attributes(" Precipitate ; CRYSTAL") == {"precipitate", "crystal"}
    assert classes.parse_attributes("phase separation") == {"phase_separation"}


@pytest.mark.parametrize("field", ["", " ; ", "crystals", "precipitate;goo"])
def test_parse_attributes_rejects_unknown_and_empty(field):
    with pytest.raises(classes.UnknownAttribute):
        classes.parse_attributes(field)


def test_crystal_classes():
    assert {c for c in classes.CLASS_IDS if classes.has_crystal(c)} == {3, 5, 7}
