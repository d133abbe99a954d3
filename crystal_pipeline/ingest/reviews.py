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

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple

from crystal_pipeline.ingest.consensus import ConsensusConfig, ConsensusResult, agree
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


def latest_reviews(votes: Iterable[Vote]) -> tuple[dict[str, Vote], int]:
    """``image_id -> winning review`` and how many earlier reviews lost to a later file."""
    by_image: dict[str, list[Vote]] = defaultdict(list)
    for v in votes:
        if is_review(v.annotator):
            by_image[v.image_id].append(v)
    winners = {image: max(reviews, key=_recency) for image, reviews in by_image.items()}
    return winners, sum(len(r) - 1 for r in by_image.values())


def agree_with_reviews(votes: Iterable[Vote], config: ConsensusConfig = ConsensusConfig(), *,
                       review_overrides: bool = True, image_status: dict[str, str] | None = None,
                       hashes: dict[str, str] | None = None,
                       sources: Mapping[str, str] | None = None) -> tuple[ConsensusResult, ReviewSummary]:
    """Consensus labels with the reviews applied, and what the reviews changed.

    ``sources`` (image_id -> images.source) counts the incoming images a review labelled.
    The originals' own consensus (reviews left out) is what a review is compared with.
    """
    votes = list(votes)
    winners, superseded = latest_reviews(votes)
    originals = [(v.image_id, v.attributes) for v in votes if not is_review(v.annotator)]
    if review_overrides:
        final = [(image, a) for image, a in originals if image not in winners]
    else:
        final = list(originals)
    final += [(v.image_id, v.attributes) for v in winners.values()]
    result = agree(final, config, image_status, hashes)
    summary = ReviewSummary(enabled=review_overrides, superseded=superseded,
                            review_rows=sum(1 for v in votes if is_review(v.annotator)),
                            reviewed_images=len(winners))
    if not winners:
        return result, summary
    reviewed = set(winners)
    before = {l.image_id: l.class_name for l in
              agree([(i, a) for i, a in originals if i in reviewed], config, image_status).labels}
    after = {l.image_id: l.class_name for l in result.labels if l.image_id in reviewed}
    for image, review in winners.items():
        summary.by_reviewer[review.annotator] += 1
        summary.by_file[review.source_file] += 1
        old, new = before.get(image), after.get(image)
        if new is None:
            summary.unlabelled_by_review += 1
        elif old is None:
            summary.newly_labelled += 1
            summary.newly_labelled_incoming += (sources or {}).get(image) == "incoming"
        elif old == new:
            summary.confirmed += 1
        else:
            summary.changed_class += 1
        if old != new:
            summary.changes[(old or "-", new or "-")] += 1
    return result, summary
