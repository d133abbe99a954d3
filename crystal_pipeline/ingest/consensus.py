"""Agreeing one label per image, and the stable train/validation split.

The paper trains on the 85,188 of 163,894 images whose annotators agreed
unanimously; that is the default here. A majority rule (the most frequent class
among mappable votes, with a minimum share and a minimum number of annotators) is
available for labs with more annotators per image. Images whose agreed attribute
set maps to no class, or that carry ``unsure``, are counted and reported, never
silently dropped.

The split hashes the image id (or the plate id) with a seed, so it depends on
nothing but the id: a new plate never moves an old image to the other side, and a
model compared with an older one is scored on images neither trained on.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Literal

from crystal_pipeline.classes import class_for_attributes, class_name, has_crystal

SplitBy = Literal["image", "plate"]


@dataclass(frozen=True)
class ConsensusConfig:
    rule: Literal["unanimous", "majority"] = "unanimous"
    min_agreement: float = 0.5  # majority: winning share must be at least this (and > any other class)
    min_annotators: int = 1
    val_fraction: float = 0.2
    split_by: SplitBy = "image"
    seed: int = 0


@dataclass(frozen=True)
class Label:
    image_id: str
    class_id: int
    class_name: str
    has_crystal: bool
    n_annotators: int
    agreement: float
    split: str


@dataclass
class ConsensusResult:
    labels: list[Label] = field(default_factory=list)
    # Why images got no label: reason -> count, plus a few examples per reason.
    excluded: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # How many images had each unmappable attribute set (sorted, ';'-joined).
    unmapped_sets: Counter = field(default_factory=Counter)

    def exclude(self, image_id: str, reason: str) -> None:
        self.excluded[reason] += 1
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(image_id)


def split_for(key: str, *, seed: int = 0, val_fraction: float = 0.2) -> str:
    """``train`` or ``val`` from a seeded hash of the key alone."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "val" if u < val_fraction else "train"


def plate_of(image_id: str) -> str:
    """The plate id of an image id ``<plate>[@<inspection>]/<well>``."""
    return image_id.split("/", 1)[0].split("@", 1)[0]


def agree(votes: Iterable[tuple[str, tuple[str, ...]]], config: ConsensusConfig = ConsensusConfig(),
          image_status: dict[str, str] | None = None) -> ConsensusResult:
    """Labels from ``(image_id, attributes)`` votes (one per annotator).

    ``image_status`` (image_id -> images.status) excludes quarantined images: a
    label without a decodable picture cannot be trained on.
    """
    by_image: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for image_id, attributes in votes:
        by_image[image_id].append(tuple(sorted(attributes)))
    result = ConsensusResult()
    for image_id in sorted(by_image):
        sets = by_image[image_id]
        if image_status is not None and image_status.get(image_id) != "ok":
            result.exclude(image_id, "image quarantined")
            continue
        n = len(sets)
        if n < config.min_annotators:
            result.exclude(image_id, f"fewer than {config.min_annotators} annotators")
            continue
        decided = _decide(sets, config, result, image_id)
        if decided is None:
            continue
        class_id, agreement = decided
        split_key = plate_of(image_id) if config.split_by == "plate" else image_id
        result.labels.append(Label(
            image_id, class_id, class_name(class_id), has_crystal(class_id), n, agreement,
            split_for(split_key, seed=config.seed, val_fraction=config.val_fraction),
        ))
    return result


def _decide(sets, config: ConsensusConfig, result: ConsensusResult, image_id: str):
    n = len(sets)
    if config.rule == "unanimous":
        if len(set(sets)) > 1:
            result.exclude(image_id, "annotators disagree")
            return None
        only = sets[0]
        if "unsure" in only:
            result.exclude(image_id, "unsure")
            return None
        class_id = class_for_attributes(only)
        if class_id is None:
            result.exclude(image_id, "attribute set has no class")
            result.unmapped_sets[";".join(only)] += 1
            return None
        return class_id, 1.0
    classes = Counter()
    for s in sets:
        cid = None if "unsure" in s else class_for_attributes(s)
        if cid is not None:
            classes[cid] += 1
    if not classes:
        unsure = any("unsure" in s for s in sets)
        result.exclude(image_id, "unsure" if unsure else "attribute set has no class")
        if not unsure:
            result.unmapped_sets[";".join(sets[0])] += 1
        return None
    (best, votes), *rest = classes.most_common()
    if rest and rest[0][1] == votes:
        result.exclude(image_id, "tie between classes")
        return None
    share = votes / n
    if share < config.min_agreement:
        result.exclude(image_id, f"agreement below {config.min_agreement:g}")
        return None
    return best, share


def agreement_histogram(votes: Iterable[tuple[str, tuple[str, ...]]]) -> Counter:
    """How much annotators agreed, over every annotated image (labelled or not).

    Key ``(n_annotators, agreeing)``: of the image's ``n_annotators``, ``agreeing`` gave
    its most common attribute set. ``agreeing == n_annotators`` is a unanimous image
    (the paper keeps those: 85,188 of 163,894).
    """
    by_image: dict[str, Counter] = defaultdict(Counter)
    for image_id, attributes in votes:
        by_image[image_id][tuple(sorted(attributes))] += 1
    return Counter((sum(sets.values()), sets.most_common(1)[0][1]) for sets in by_image.values())
