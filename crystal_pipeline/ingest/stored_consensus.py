"""Consensus over the stored votes, image by image, into ``consensus_labels``.

The ``consensus_labels`` asset's path. Its memory does not grow with the archive: the
votes are read back from the warehouse in image order, batch by batch (staged on disk,
``warehouse.annotations.stage_votes_in_image_order``), each image is agreed as soon as
its last vote is read (:class:`~crystal_pipeline.ingest.reviews.ReviewedConsensus`, the
same rules as ``agree_with_reviews``), and its label is staged with the side of its own
group. The one rule that needs every label, identical files on one side, is settled from
the few labels whose file another label shares (``splits.merged_group_sides``) when the
staged labels are stored, in one transaction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import pandas as pd
import pyarrow as pa

from crystal_pipeline.ingest.consensus import ConsensusConfig, ConsensusResult, agreement_of
from crystal_pipeline.ingest.reviews import ReviewedConsensus, ReviewSummary, Vote
from crystal_pipeline.ingest.splits import group_key, merged_group_sides, side_for
from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse import annotations as annotation_table
from crystal_pipeline.warehouse import labels as label_table
from crystal_pipeline.warehouse.staging import StagedRows, batches


@dataclass
class StoredConsensus:
    """What a consensus run stored and why images got no label, for the asset's metadata.

    ``result`` holds the exclusions (its ``labels`` stay empty: they are in the table);
    ``counts`` the stored labels per ``class_id, split`` (column ``labels``); ``agreement``
    :func:`~crystal_pipeline.ingest.consensus.agreement_histogram` of every annotated image.
    """

    result: ConsensusResult
    reviews: ReviewSummary
    counts: pd.DataFrame
    annotated_images: int = 0
    agreement: Counter = field(default_factory=Counter)

    @property
    def labelled(self) -> int:
        return int(self.counts["labels"].sum()) if len(self.counts) else 0


def store_consensus(warehouse: Warehouse, config: ConsensusConfig = ConsensusConfig(), *,
                    review_overrides: bool = True, batch_rows: int | None = None) -> StoredConsensus:
    """Agree every annotated image's label from the stored votes and make ``consensus_labels``
    hold exactly those labels, with their sides (one transaction). ``batch_rows``: votes
    read back at a time (default ``staging.BATCH_ROWS``)."""
    split = config.split  # validates split_by and the fractions before any work
    consensus = ReviewedConsensus(config, review_overrides=review_overrides)
    agreement: Counter = Counter()
    annotated = 0
    with warehouse.staging() as folder:
        annotation_table.stage_votes_in_image_order(warehouse, folder / "votes.parquet")
        with StagedRows(folder / "labels.parquet", label_table.STAGED_LABEL_SCHEMA) as labels:
            for image_id, votes, status, source in image_votes(batches(folder / "votes.parquet",
                                                                       batch_rows=batch_rows)):
                annotated += 1
                agreement[agreement_of(v.attributes for v in votes)] += 1
                label = consensus.label(image_id, votes, status=status, source=source)
                if label is not None:
                    key = group_key(image_id, split.by)
                    labels.add((label.image_id, label.class_id, label.class_name, label.has_crystal,
                                label.n_annotators, label.agreement, side_for(key, split), key))
        moved = merged_group_sides(label_table.labelled_sharing_a_file(warehouse, labels.path), split)
        counts = label_table.replace_staged_consensus_labels(warehouse, labels.path, moved, folder)
    return StoredConsensus(consensus.result, consensus.summary, counts, annotated, agreement)


def image_votes(vote_batches: Iterable[pa.RecordBatch]
                ) -> Iterator[tuple[str, list[Vote], str | None, str | None]]:
    """``(image_id, votes, status, source)`` per image from vote rows sorted by image (an
    image's votes may span two batches; it is yielded once its last vote is read)."""
    current, votes, status, source = None, [], None, None
    for batch in vote_batches:
        for row in batch.to_pylist():
            if row["image_id"] != current:
                if current is not None:
                    yield current, votes, status, source
                current, votes, status, source = row["image_id"], [], row["status"], row["source"]
            votes.append(Vote(row["image_id"], row["annotator"], tuple(row["attributes"]), row["source_file"],
                              int(row["source_line"]), row["source_mtime_ns"]))
    if current is not None:
        yield current, votes, status, source
