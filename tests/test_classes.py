import numpy as np
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


# -- MARCO's four classes ---------------------------------------------------------------
def test_every_class_maps_to_one_marco_class():
    assert set(classes.MARCO_OF_CLASS) == set(classes.CLASS_IDS)
    assert {c for c, m in classes.MARCO_OF_CLASS.items() if m == "crystals"} == set(classes.CRYSTAL_CLASS_IDS)
    assert {c for c, m in classes.MARCO_OF_CLASS.items() if m == "precipitate"} == {2, 6, 8}
    assert {c for c, m in classes.MARCO_OF_CLASS.items() if m == "clear"} == {1}
    assert {c for c, m in classes.MARCO_OF_CLASS.items() if m == "other"} == {4, 9, 10}
    assert (classes.MARCO_MATRIX.sum(axis=1) == 1).all()


def test_marco_probabilities_are_sums_of_the_ten_and_sum_to_one():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=50)
    four = classes.marco_probs(probs)
    assert four.shape == (50, 4)
    np.testing.assert_allclose(four.sum(axis=1), 1.0, atol=1e-12)
    crystal = probs[:, list(classes.CRYSTAL_COLUMNS)].sum(axis=1)
    np.testing.assert_allclose(four[:, classes.MARCO_CLASSES.index("crystals")], crystal)


def test_marco_outcome_of_a_hand_built_case():
    # ten-class arg-max is clear (0.4), but the crystal classes hold 0.3 + 0.25 = 0.55.
    probs = np.array([0.4, 0.05, 0.3, 0.0, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(classes.marco_probs(probs[None])[0], [0.55, 0.05, 0.4, 0.0])
    assert classes.marco_outcome(probs) == "crystals"
    other = np.array([0.1, 0.1, 0.0, 0.3, 0.0, 0.1, 0.0, 0.0, 0.2, 0.2])  # phase + skin + junk = 0.7
    assert classes.marco_outcomes(np.stack([probs, other])) == ["crystals", "other"]
    assert classes.marco_class(8) == "precipitate" and classes.marco_class(10) == "other"
