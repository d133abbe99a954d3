"""The paper's seven annotation attributes and its ten outcome classes.

Annotators mark attributes; the classes are the attribute sets crystallographers
defined (paper, "10-way Classification Results"). Ids are 1-based in the paper's
order and are what the warehouse stores; model outputs are 0-based (id - 1).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

ATTRIBUTES: tuple[str, ...] = (
    "clear",
    "phase_separation",
    "precipitate",
    "skin",
    "crystal",
    "junk",
    "unsure",
)

# id -> (name, attribute set)
CLASSES: dict[int, tuple[str, frozenset[str]]] = {
    1: ("clear", frozenset({"clear"})),
    2: ("precipitate", frozenset({"precipitate"})),
    3: ("crystal", frozenset({"crystal"})),
    4: ("phase", frozenset({"phase_separation"})),
    5: ("precipitate_crystal", frozenset({"precipitate", "crystal"})),
    6: ("precipitate_skin", frozenset({"precipitate", "skin"})),
    7: ("phase_crystal", frozenset({"phase_separation", "crystal"})),
    8: ("phase_precipitate", frozenset({"phase_separation", "precipitate"})),
    9: ("skin", frozenset({"skin"})),
    10: ("junk", frozenset({"junk"})),
}

NUM_CLASSES = len(CLASSES)
CLASS_IDS: tuple[int, ...] = tuple(CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(name for name, _ in CLASSES.values())
# The paper's display names (Table 2), for reports.
CLASS_TITLES: tuple[str, ...] = (
    "Clear",
    "Precipitate",
    "Crystal",
    "Phase",
    "Precipitate & Crystal",
    "Precipitate & Skin",
    "Phase & Crystal",
    "Phase & Precipitate",
    "Skin",
    "Junk",
)
CRYSTAL_CLASS_IDS: frozenset[int] = frozenset({3, 5, 7})
#: The crystal classes as 0-based probability columns (ascending): crystal_prob sums these.
CRYSTAL_COLUMNS: tuple[int, ...] = tuple(sorted(c - 1 for c in CRYSTAL_CLASS_IDS))

_BY_SET = {attrs: class_id for class_id, (_, attrs) in CLASSES.items()}
_BY_NAME = {name: class_id for class_id, (name, _) in CLASSES.items()}


class UnknownAttribute(ValueError):
    """An annotation names something that is not one of the seven attributes."""


def normalize_attribute(raw: str) -> str:
    """Forgive case, surrounding spaces and the paper's spelled-out names."""
    name = raw.strip().lower().replace(" ", "_").replace("-", "_")
    name = _ALIASES.get(name, name)
    if name not in ATTRIBUTES:
        raise UnknownAttribute(f"unknown attribute {raw.strip()!r}")
    return name


_ALIASES = {"phase": "phase_separation", "skin_effect": "skin", "garbage": "junk"}


def parse_attributes(field: str) -> frozenset[str]:
    """Parse a ``;``-separated attribute field; an empty field is an error."""
    parts = [p for p in field.split(";") if p.strip()]
    if not parts:
        raise UnknownAttribute("empty attribute list")
    return frozenset(normalize_attribute(p) for p in parts)


def class_for_attributes(attributes: Iterable[str]) -> int | None:
    """The class id of an attribute set, or None when the set has no class.

    Any set containing ``unsure``, and any combination the paper did not define,
    has no class: callers count those rather than drop them silently.
    """
    return _BY_SET.get(frozenset(attributes))


def unanimous_class(attribute_sets: Iterable[Iterable[str]]) -> int | None:
    """The class every annotator's attribute set agrees on, or None when they differ (or the
    one set they share has no class): the paper's unanimity filter, as the synthetic archive
    counts it."""
    agreed = {frozenset(attributes) for attributes in attribute_sets}
    return class_for_attributes(next(iter(agreed))) if len(agreed) == 1 else None


def class_name(class_id: int) -> str:
    return CLASSES[class_id][0]


def class_id_for_name(name: str) -> int:
    return _BY_NAME[name]


def has_crystal(class_id: int) -> bool:
    return class_id in CRYSTAL_CLASS_IDS


# -- MARCO's four classes ------------------------------------------------------------
# Other tools (the MARCO data set and the models trained on it) speak four outcomes. Each
# of the ten classes belongs to exactly one of them: any class with a crystal is "crystals"
# (the crystal set above), precipitate without crystal is "precipitate", a clear drop is
# "clear", and phase separation, skin and junk are "other".
MARCO_CLASSES: tuple[str, ...] = ("crystals", "precipitate", "clear", "other")
MARCO_OF_CLASS: dict[int, str] = {
    1: "clear",
    2: "precipitate",
    3: "crystals",
    4: "other",
    5: "crystals",
    6: "precipitate",
    7: "crystals",
    8: "precipitate",
    9: "other",
    10: "other",
}
#: (10, 4) 0/1 matrix: ten-class probabilities @ MARCO_MATRIX = four-class probabilities.
MARCO_MATRIX = np.zeros((NUM_CLASSES, len(MARCO_CLASSES)), dtype=np.float64)
for _class_id, _marco in MARCO_OF_CLASS.items():
    MARCO_MATRIX[_class_id - 1, MARCO_CLASSES.index(_marco)] = 1.0
MARCO_MATRIX.setflags(write=False)


def marco_class(class_id: int) -> str:
    """The MARCO outcome a ten-class id belongs to (for true labels)."""
    return MARCO_OF_CLASS[class_id]


def marco_probs(probs: np.ndarray) -> np.ndarray:
    """Four-class probabilities (N, 4) in :data:`MARCO_CLASSES` order: sums of the ten."""
    return np.asarray(probs, dtype=np.float64) @ MARCO_MATRIX


def marco_outcome(probs: Sequence[float] | np.ndarray) -> str:
    """The predicted MARCO outcome of one image: the four-class probability's arg-max
    (ties go to the earlier class in :data:`MARCO_CLASSES`). Not the ten-class arg-max
    mapped: 0.3 crystal + 0.3 precipitate-crystal outweighs 0.4 clear (docs/decisions.md)."""
    return marco_outcomes(np.asarray(probs).reshape(1, -1))[0]


def marco_outcomes(probs: np.ndarray) -> list[str]:
    """:func:`marco_outcome` of every row of (N, 10) probabilities."""
    return [MARCO_CLASSES[i] for i in np.argmax(marco_probs(probs), axis=1)] if len(probs) else []
