"""The paper's seven annotation attributes and its ten outcome classes.

Annotators mark attributes; the classes are the attribute sets crystallographers
defined (paper, "10-way Classification Results"). Ids are 1-based in the paper's
order and are what the warehouse stores; model outputs are 0-based (id - 1).
"""

from __future__ import annotations

from typing import Iterable

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


def class_name(class_id: int) -> str:
    return CLASSES[class_id][0]


def class_id_for_name(name: str) -> int:
    return _BY_NAME[name]


def has_crystal(class_id: int) -> bool:
    return class_id in CRYSTAL_CLASS_IDS
