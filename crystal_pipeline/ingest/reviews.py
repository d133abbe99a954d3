"""A reviewer's corrections in consensus: the review page's CSVs take precedence.

A crystallographer who reviews a plate (the plate report's review page) exports an
annotation CSV like any other, with annotator ``review:<name>``. Here those rows meet
the original annotators' votes:

- with ``review_overrides`` (the default) a reviewed image's label is the review's
  attribute set alone; without it the review is one more vote;
- two reviews of one image (by the same or different reviewers): the later file wins,
  "later" meaning the larger file mtime, then the larger file name, then the later
  line (docs/decisions.md);
- an image of an incoming plate has no original annotations; once reviewed it is
  labelled data like any archive image, with its side of the split by the usual rule.

:func:`agree_with_reviews` returns the labels and a :class:`ReviewSummary` that says
what the reviews changed, for the asset's metadata.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple, Sequence

from crystal_pipeline.ingest.consensus import ConsensusConfig, ConsensusResult, Label, label_image
from crystal_pipeline.ingest.splits import assign_sides
from crystal_pipeline.reporting import markdown as md

REVIEW_PREFIX = "review:"


def is_review(annotator: str) -> bool:
    """Whether an annotator name marks a reviewer's correction (``review:<name>``)."""
    return annotator.strip().lower().startswith(REVIEW_PREFIX)


class Vote(NamedTuple):
    """One stored annotation row, with what orders two reviews of one image."""

    image_id: str
    annotator: str
    attributes: tuple[str, ...]
    source_file: str
    source_line: int
    source_mtime_ns: int | None


def _recency(vote: Vote) -> tuple:
    """The sort key of "later": file mtime (unknown first), file name, line."""
    return (vote.source_mtime_ns is not None, vote.source_mtime_ns or 0, vote.source_file, vote.source_line)


@dataclass
class ReviewSummary:
    """What the reviews did to the labels (every count is of images, except ``review_rows``)."""

    enabled: bool
    review_rows: int = 0
    reviewed_images: int = 0
    superseded: int = 0  # earlier reviews of an image that a later file replaced
    confirmed: int = 0  # the review's class equals the original annotators' label
    changed_class: int = 0  # the original annotators agreed on another class
    newly_labelled: int = 0  # the originals gave no label (none, disagreement, unsure), the review does
    newly_labelled_incoming: int = 0  # of those, images of incoming plates
    unlabelled_by_review: int = 0  # the review itself maps to no class (unsure, no class): no label
    by_reviewer: Counter = field(default_factory=Counter)  # reviewer -> images whose winning review is theirs
    by_file: Counter = field(default_factory=Counter)  # review file -> images whose winning review it holds
    changes: Counter = field(default_factory=Counter)  # (original class, reviewed class) -> images

    def as_metadata(self) -> dict[str, int | bool]:
        return {"review_overrides": self.enabled, "review_rows": self.review_rows,
                "reviewed_images": self.reviewed_images, "reviews_superseded": self.superseded,
                "reviews_confirmed": self.confirmed, "reviews_changed_class": self.changed_class,
                "reviews_newly_labelled": self.newly_labelled,
                "reviews_newly_labelled_incoming": self.newly_labelled_incoming,
                "reviews_without_class": self.unlabelled_by_review}


    def markdown(self) -> str:
        """The summary as the consensus asset shows it: counts, reviewers, class changes."""
        if not self.reviewed_images:
            return "No reviews (no annotator named `review:<name>`)."
        rule = "reviews override the original annotators" if self.enabled else "a review is one more vote"
        counts = md.key_value_table([
            ("rule", rule), ("reviewed images", self.reviewed_images), ("review rows", self.review_rows),
            ("earlier reviews superseded by a later file", self.superseded),
            ("review confirmed the original label", self.confirmed),
            ("review changed the class", self.changed_class),
            ("newly labelled by a review", self.newly_labelled),
            ("... of them incoming-plate images", self.newly_labelled_incoming),
            ("review gave no class (unsure / no class)", self.unlabelled_by_review)])
        reviewers = md.table(["reviewer", "images"], sorted(self.by_reviewer.items()))
        files = md.table(["review file", "images it decides"], sorted(self.by_file.items()))
        changes = md.table(["original", "reviewed", "images"],
                           [(a, b, n) for (a, b), n in self.changes.most_common(20)])
        return md.blocks(counts, reviewers, files, "**Label changes**", changes)


class ReviewedConsensus:
    """Consensus with the reviews applied, one image at a time (images in id order, so the
    examples of each exclusion are the first ones by id), and what the reviews changed.

    ``result`` collects the exclusions (its ``labels`` stay empty: :meth:`label` returns
    each label to the caller, who sets its side); ``summary`` the reviews' counts.
    """

    def __init__(self, config: ConsensusConfig = ConsensusConfig(), *, review_overrides: bool = True):
        self.config = config
        self.result = ConsensusResult()
        self.summary = ReviewSummary(enabled=review_overrides)
        self._originals_only = ConsensusResult()  # the originals' own consensus: only its class is used

    def label(self, image_id: str, votes: Sequence[Vote], *, status: str | None = "ok",
              source: str | None = None) -> Label | None:
        """The label of one image from all its votes (in stored order), or None.

        ``status`` is its ``images.status`` (None: no row); ``source`` its ``images.source``
        (an incoming image a review labels is counted)."""
        reviews = [v for v in votes if is_review(v.annotator)]
        originals = [v.attributes for v in votes if not is_review(v.annotator)]
        if not reviews:
            return label_image(image_id, originals, self.config, self.result, status=status)
        winner = max(reviews, key=_recency)
        final = [winner.attributes] if self.summary.enabled else [*originals, winner.attributes]
        label = label_image(image_id, final, self.config, self.result, status=status)
        before = (label_image(image_id, originals, self.config, self._originals_only, status=status)
                  if originals else None)
        self._count(winner, len(reviews), None if before is None else before.class_name,
                    None if label is None else label.class_name, source)
        return label

    def _count(self, winner: Vote, reviews: int, old: str | None, new: str | None, source: str | None) -> None:
        summary = self.summary
        summary.review_rows += reviews
        summary.superseded += reviews - 1
        summary.reviewed_images += 1
        summary.by_reviewer[winner.annotator] += 1
        summary.by_file[winner.source_file] += 1
        if new is None:
            summary.unlabelled_by_review += 1
        elif old is None:
            summary.newly_labelled += 1
            summary.newly_labelled_incoming += source == "incoming"
        elif old == new:
            summary.confirmed += 1
        else:
            summary.changed_class += 1
        if old != new:
            summary.changes[(old or "-", new or "-")] += 1


def agree_with_reviews(votes: Iterable[Vote], config: ConsensusConfig = ConsensusConfig(), *,
                       review_overrides: bool = True, image_status: dict[str, str] | None = None,
                       hashes: dict[str, str] | None = None,
                       sources: Mapping[str, str] | None = None) -> tuple[ConsensusResult, ReviewSummary]:
    """Consensus labels with the reviews applied, and what the reviews changed.

    ``sources`` (image_id -> images.source) counts the incoming images a review labelled.
    The originals' own consensus (reviews left out) is what a review is compared with.
    In memory; the asset streams the stored votes through :class:`ReviewedConsensus` instead
    (``ingest.stored_consensus``).
    """
    split = config.split  # validates split_by and the fractions before any work
    by_image: dict[str, list[Vote]] = defaultdict(list)
    for vote in votes:
        by_image[vote.image_id].append(vote)
    consensus = ReviewedConsensus(config, review_overrides=review_overrides)
    labels = []
    for image_id in sorted(by_image):
        status = "ok" if image_status is None else image_status.get(image_id)
        label = consensus.label(image_id, by_image[image_id], status=status, source=(sources or {}).get(image_id))
        if label is not None:
            labels.append(label)
    hashes = hashes or {}
    sides = assign_sides(((l.image_id, hashes.get(l.image_id)) for l in labels), split)
    consensus.result.labels = [dataclasses.replace(l, split=sides[l.image_id]) for l in labels]
    return consensus.result, consensus.summary
