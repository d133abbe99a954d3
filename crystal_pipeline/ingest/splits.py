"""Which side of the train / val / test split each labelled image sits on, without leaks.

A plate is photographed again and again (inspections), and a well may hold several
drops; images of one well look alike, and an imager sometimes writes the very same
file twice. If such images land on both sides, every reported accuracy is inflated
by near-duplicates. So the unit that is split is a *group*:

- ``well`` (default): plate id + well, so every inspection and every drop of a well
  shares a side;
- ``plate``: the plate id, no plate on two sides;
- ``image``: the image id alone (the paper's random split, for reproducing its tables).

Groups whose images share a file hash (sha256) are merged, so identical files always
share a side. A merged group's side comes from its smallest member key, so it
depends on names alone: adding plates never moves an old image, unless a new file
is byte-identical to an old one *and* its group key sorts first (then the old
group follows it; the leak check would otherwise fail).

The side is a seeded hash of the key: u = first 8 bytes of sha256("<seed>:<key>") as a
fraction in [0, 1); ``test`` below the test fraction, then ``val``, then ``train``.
``val`` tunes (presets, threshold, calibration) and decides promotion; ``test`` only
reports.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Literal

SIDES = ("train", "val", "test")
SplitBy = Literal["well", "plate", "image"]
_WELL = re.compile(r"^([A-Za-z]{1,2}\d{2})(?![0-9])")


@dataclass(frozen=True)
class SplitConfig:
    by: SplitBy = "well"
    train: float = 0.7
    val: float = 0.1
    test: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.by not in ("well", "plate", "image"):
            raise ValueError(f"split_by must be well, plate or image, got {self.by!r}")
        fractions = (self.train, self.val, self.test)
        if min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")


def plate_of(image_id: str) -> str:
    """The plate id of an image id ``<plate>[@<inspection>]/<well>[<drop suffix>]``."""
    return image_id.split("/", 1)[0].split("@", 1)[0]


def well_key(image_id: str) -> str:
    """``<plate>/<well>``: every inspection and drop of one well gives the same key.
    A name that is no well (a loose or quarantined file) is its own key."""
    plate = plate_of(image_id)
    rest = image_id.split("/", 1)[1] if "/" in image_id else image_id
    match = _WELL.match(rest)
    return f"{plate}/{match.group(1).upper() if match else rest}"


def group_key(image_id: str, by: SplitBy) -> str:
    if by == "well":
        return well_key(image_id)
    if by == "plate":
        return plate_of(image_id)
    return image_id


def side_for(key: str, config: SplitConfig = SplitConfig()) -> str:
    """The side of one group key, from a seeded hash of the key alone."""
    digest = hashlib.sha256(f"{config.seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < config.test:
        return "test"
    if u < config.test + config.val:
        return "val"
    return "train"


class _Groups:
    """Union-find over group keys; each set is represented by its smallest key."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:  # path compression
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            low, high = sorted((ra, rb))
            self.parent[high] = low


def _group_by_hash(images: Iterable[tuple[str, str | None]], by: SplitBy) -> tuple[_Groups, dict[str, str]]:
    """The groups of ``(image_id, sha256)`` pairs merged through shared hashes, and each image's own key."""
    groups = _Groups()
    first_with_hash: dict[str, str] = {}
    keys: dict[str, str] = {}
    for image_id, sha in images:
        key = group_key(image_id, by)
        keys[image_id] = key
        groups.find(key)
        if sha:
            if sha in first_with_hash:
                groups.union(first_with_hash[sha], key)
            else:
                first_with_hash[sha] = key
    return groups, keys


def assign_sides(images: Iterable[tuple[str, str | None]], config: SplitConfig = SplitConfig()) -> dict[str, str]:
    """``image_id -> side`` for ``(image_id, sha256)`` pairs (sha256 may be None)."""
    groups, keys = _group_by_hash(images, config.by)
    return {image_id: side_for(groups.find(key), config) for image_id, key in keys.items()}


def merged_group_sides(sharing: Iterable[tuple[str, str]], config: SplitConfig = SplitConfig()) -> dict[str, str]:
    """``group key -> side`` of the groups a shared file merges with a smaller key, from the
    ``(image_id, sha256)`` pairs of the labelled images whose hash another labelled image
    has too. Every other group keeps :func:`side_for` of its own key, so a caller streaming
    the labels needs only these (what :func:`assign_sides` gives, without holding every label)."""
    groups, keys = _group_by_hash(sharing, config.by)
    return {key: side_for(groups.find(key), config) for key in set(keys.values()) if groups.find(key) != key}


@dataclass(frozen=True)
class Leaks:
    """Groups (wells, under the default) and file hashes found on more than one side."""

    wells: list[str]
    hashes: list[str]

    @property
    def none(self) -> bool:
        return not self.wells and not self.hashes


def find_leaks(rows: Iterable[tuple[str, str, str | None]], by: SplitBy = "well") -> Leaks:
    """Leaks in ``(image_id, split, sha256)`` rows as stored: every group key of the
    configured kind, and every file hash, must sit on one side."""
    by_group: dict[str, set[str]] = {}
    by_hash: dict[str, set[str]] = {}
    for image_id, split, sha in rows:
        by_group.setdefault(group_key(image_id, by), set()).add(split)
        if sha:
            by_hash.setdefault(sha, set()).add(split)
    return Leaks(sorted(k for k, s in by_group.items() if len(s) > 1),
                 sorted(h for h, s in by_hash.items() if len(s) > 1))
