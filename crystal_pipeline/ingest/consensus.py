"""Agreeing one label per image, and its side of the train / val / test split.

The paper trains on the 85,188 of 163,894 images whose annotators agreed
unanimously; that is the default here. A majority rule (the most frequent class
among mappable votes, with a minimum share and a minimum number of annotators) is
available for labs with more annotators per image. Images whose agreed attribute
set maps to no class, or that carry ``unsure``, are counted and reported, never
silently dropped.

The split is :mod:`crystal_pipeline.ingest.splits` (the one split implementation): by
well by default, identical files (same sha256) on one side, a seeded hash of the group
key, so a new plate never moves an old image and a model compared with an older one
is scored on images neither trained on.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Literal

from crystal_pipeline.classes import class_for_attributes, class_name, has_crystal
from crystal_pipeline.ingest.splits import SplitBy, SplitConfig, assign_sides


@dataclass(frozen=True)
class ConsensusConfig:
    rule: Literal["unanimous", "majority"] = "unanimous"
    min_agreement: float = 0.5  # majority: winning share must be at least this (and > any other class)
    min_annotators: int = 1
    split_by: SplitBy = "well"
    train_fraction: float = 0.7
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0

    @property
    def split(self) -> SplitConfig:
        return SplitConfig(by=self.split_by, train=self.train_fraction, val=self.val_fraction,
                           test=self.test_fraction, seed=self.seed)


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


def agree(votes: Iterable[tuple[str, tuple[str, ...]]], config: ConsensusConfig = ConsensusConfig(),
          image_status: dict[str, str] | None = None, hashes: dict[str, str] | None = None) -> ConsensusResult:
    """Labels from ``(image_id, attributes)`` votes (one per annotator).

    ``image_status`` (image_id -> images.status) excludes quarantined and vanished
    images: a label without a decodable picture on disk cannot be trained on. ``hashes`` (image_id ->
    sha256) puts byte-identical files on one side of the split.
    """
    split = config.split  # validates split_by and the fractions before any work
    by_image: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for image_id, attributes in votes:
        by_image[image_id].append(attributes)
    result = ConsensusResult()
    for image_id in sorted(by_image):
        status = "ok" if image_status is None else image_status.get(image_id)
        label = label_image(image_id, by_image[image_id], config, result, status=status)
        if label is not None:
            result.labels.append(label)
    hashes = hashes or {}
    sides = assign_sides(((l.image_id, hashes.get(l.image_id)) for l in result.labels), split)
    result.labels = [dataclasses.replace(l, split=sides[l.image_id]) for l in result.labels]
    return result


def label_image(image_id: str, attribute_sets: Iterable[Iterable[str]], config: ConsensusConfig,
                result: ConsensusResult, *, status: str | None = "ok") -> Label | None:
    """One image's label from its annotators' attribute sets (in vote order), its side not
    yet set (``split`` empty); None, with the reason counted in ``result``, when it gets none.
    ``status`` is its ``images.status`` (None: no row): only an ``ok`` image is labelled.
    Images are independent of each other here, so consensus can stream them one by one."""
    if status != "ok":
        result.exclude(image_id, "image vanished" if status == "vanished" else "image quarantined")
        return None
    sets = [tuple(sorted(attributes)) for attributes in attribute_sets]
    n = len(sets)
    if n < config.min_annotators:
        result.exclude(image_id, f"fewer than {config.min_annotators} annotators")
        return None
    decided = _decide(sets, config, result, image_id)
    if decided is None:
        return None
    class_id, agreement = decided
    return Label(image_id, class_id, class_name(class_id), has_crystal(class_id), n, agreement, "")


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
    by_image: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for image_id, attributes in votes:
        by_image[image_id].append(attributes)
    return Counter(agreement_of(sets) for sets in by_image.values())


def agreement_of(attribute_sets: Iterable[Iterable[str]]) -> tuple[int, int]:
    """``(n_annotators, agreeing)`` of one image: :func:`agreement_histogram`'s key."""
    sets = Counter(tuple(sorted(attributes)) for attributes in attribute_sets)
    return sum(sets.values()), sets.most_common(1)[0][1]
