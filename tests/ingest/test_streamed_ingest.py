"""Ingest in bounded batches gives what the in-memory rules give, whatever the batch size.

Every staged file is written and read in batches of ``staging.BATCH_ROWS`` rows; here it is
set to 2 or 3, so images, votes and duplicates fall across batch (and file) boundaries.
"""

import os
import shutil

import pytest

from crystal_pipeline.ingest import archive
from crystal_pipeline.ingest.annotations import AnnotationRefreshRefused, refresh_annotations
from crystal_pipeline.ingest.consensus import ConsensusConfig
from crystal_pipeline.ingest.image_files import ingest_files
from crystal_pipeline.ingest.reviews import Vote, agree_with_reviews
from crystal_pipeline.ingest.stored_consensus import store_consensus
from crystal_pipeline.synthetic import write_archive
from crystal_pipeline.warehouse import Warehouse, staging
from crystal_pipeline.warehouse import annotations as annotation_table
from crystal_pipeline.warehouse import images as image_table
from crystal_pipeline.warehouse import labels as label_table


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(staging, "BATCH_ROWS", 3)


def _formats(wh):
    return {archive.plate_key(r.plate_id, r.inspection if isinstance(r.inspection, str) else None):
            int(r.plate_format) for r in image_table.plate_formats(wh).itertuples()}


def _write(path, text, mtime_s=None):
    path.write_text(text)
    if mtime_s is not None:
        os.utime(path, (mtime_s, mtime_s))
    return path


@pytest.fixture
def archive_dir(tmp_path):
    """Two 96-well plates of the generator's, plus a byte-identical copy of one file in a third
    plate (identical files share a side), a broken file and a reviewer's corrections."""
    raw = tmp_path / "raw"
    write_archive(raw, plates=2, seed=3, wells=96, size=32, workers=1)
    plates = sorted((raw / "plates").iterdir())
    twin = raw / "plates" / "TWIN"
    twin.mkdir()
    shutil.copy(plates[0] / "A01.png", twin / "H12.png")
    (plates[1] / "B02.png").write_bytes(b"not a png")  # quarantined: its votes give no label
    folder = archive.annotations_dir(raw)
    p0, p1 = plates[0].name, plates[1].name
    _write(folder / "zz_review_1.csv", "plate_id,well,annotator,attributes\n"
           f"{p0},A02,review:ana,crystal\n{p0},A03,review:ana,clear\n{p1},C03,review:bo,skin\n", 1_000)
    _write(folder / "zz_review_2.csv", "plate_id,well,annotator,attributes\n"
           f"{p0},A03,review:ana,precipitate\nTWIN,H12,review:ana,crystal\nTWIN,H12,ann9,crystal\n", 2_000)
    return raw


def _ingest(raw, data):
    wh = Warehouse(data / "warehouse.duckdb")
    ingest_files(wh, archive.iter_archive(raw), workers=1)
    refresh_annotations(wh, archive.annotation_files(raw), _formats(wh), folder=archive.annotations_dir(raw))
    return wh


def test_raw_images_in_small_batches_store_the_same_rows_and_see_changes(tmp_path, archive_dir, monkeypatch):
    whole = Warehouse(tmp_path / "whole.duckdb")
    first = ingest_files(whole, archive.iter_archive(archive_dir), workers=1)
    monkeypatch.setattr(staging, "BATCH_ROWS", 2)
    batched = Warehouse(tmp_path / "batched.duckdb")
    summary = ingest_files(batched, archive.iter_archive(archive_dir), workers=2)
    columns = "image_id, plate_id, well, well_index, path, sha256, width, height, status, error, file_size, \"drop\""
    assert (batched.query_df(f"SELECT {columns} FROM images ORDER BY image_id")
            .equals(whole.query_df(f"SELECT {columns} FROM images ORDER BY image_id")))
    assert (summary.found, summary.new, summary.quarantined_new) == (first.found, first.new, 1) == (193, 193, 1)
    plate = sorted((archive_dir / "plates").iterdir())[0]
    (plate / "A05.png").unlink()
    shutil.copy(plate / "A07.png", plate / "A06.png")
    again = ingest_files(batched, archive.iter_archive(archive_dir), workers=1)
    assert (again.new, again.changed, again.unchanged, again.vanished) == (0, 1, 191, [f"{plate.name}/A05"])


def test_batched_consensus_gives_the_in_memory_labels_reviews_and_sides(tmp_path, archive_dir, monkeypatch):
    wh = _ingest(archive_dir, tmp_path)
    statuses = dict(wh.query_df("SELECT image_id, status FROM images").itertuples(index=False))
    hashes = dict(wh.query_df("SELECT image_id, sha256 FROM images WHERE sha256 IS NOT NULL").itertuples(index=False))
    sources = dict(wh.query_df("SELECT image_id, source FROM images").itertuples(index=False))
    votes = [Vote(r.image_id, r.annotator, tuple(r.attributes), r.source_file, int(r.source_line),
                  int(r.source_mtime_ns)) for r in annotation_table.votes_with_sources(wh).itertuples()]
    for config in (ConsensusConfig(), ConsensusConfig(rule="majority", min_annotators=2),
                   ConsensusConfig(split_by="image", seed=4)):
        expected, reviews = agree_with_reviews(votes, config, image_status=statuses, hashes=hashes, sources=sources)
        for batch_rows in (2, 3, 1000):
            stored = store_consensus(wh, config, batch_rows=batch_rows)
            table = label_table.consensus_labels(wh)
            assert [tuple(r) for r in table.itertuples(index=False)] == \
                [(l.image_id, l.class_id, l.class_name, l.has_crystal, l.n_annotators, l.agreement, l.split)
                 for l in expected.labels]
            assert stored.result.excluded == expected.excluded and stored.result.examples == expected.examples
            assert stored.result.unmapped_sets == expected.unmapped_sets
            assert stored.reviews == reviews and stored.labelled == len(expected.labels)
            assert stored.annotated_images == len({v.image_id for v in votes})
    assert reviews.reviewed_images == 4 and reviews.superseded == 1
    assert statuses[f"{sorted((archive_dir / 'plates').iterdir())[1].name}/B02"] == "quarantined"
    # The copied file sits on its original's side, though its well (a plate of its own) hashes elsewhere.
    sides = dict(label_table.consensus_labels(wh)[["image_id", "split"]].itertuples(index=False))
    original = f"{sorted((archive_dir / 'plates').iterdir())[0].name}/A01"
    assert "TWIN/H12" in sides and sides["TWIN/H12"] == sides.get(original, sides["TWIN/H12"])


def test_duplicates_and_unknown_images_are_reported_across_files_and_batches(tmp_path, small_batches):
    raw = tmp_path / "raw"
    write_archive(raw, plates=1, seed=1, wells=96, size=32, workers=1)
    plate = next((raw / "plates").iterdir()).name
    folder = archive.annotations_dir(raw)
    shutil.rmtree(folder)
    folder.mkdir()
    _write(folder / "a.csv", "plate_id,well,annotator,attributes\n"
           f"{plate},A01,ann1,clear\n{plate},A02,ann1,skin\n{plate},A03,ann1,clear\n{plate},A04,ann1,junk\n"
           f"{plate},A01,review:ana,crystal\n")
    _write(folder / "b.csv", "plate_id,well,annotator,attributes\n"
           f"{plate},A05,ann1,clear\n{plate},A06,ann1,clear\n"
           f"{plate},A01,ann1,precipitate\n"          # 4: ann1 already voted in a.csv:2
           f"{plate},A01,review:ana,skin\n"           # 5: a later file's review: kept
           f"{plate},A01,review:ana,clear\n"          # 6: the same review twice in one file
           f"{plate},H13,ann1,clears\n"               # 7: no such well
           f"{plate},A01,ann2,clears\n")              # 8: unknown attribute
    (raw / "plates" / plate / "A06.png").unlink()  # b.csv:3 now names no image
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    ingest_files(wh, archive.iter_archive(raw), workers=1)
    stored = refresh_annotations(wh, archive.annotation_files(raw), _formats(wh), folder=folder)
    errors = [tuple(r) for r in annotation_table.annotation_errors(wh)[["source_file", "source_line", "reason"]]
              .itertuples(index=False)]
    assert errors == [
        ("b.csv", 3, f"unknown image '{plate}/A06': no file for this well"),
        ("b.csv", 4, f"duplicate annotation of {plate}/A01 by 'ann1' (first at a.csv:2)"),
        ("b.csv", 6, f"duplicate annotation of {plate}/A01 by 'review:ana' (first at b.csv:5)"),
        ("b.csv", 7, errors[3][2]),
        ("b.csv", 8, "unknown attribute 'clears'"),
    ]
    assert errors[3][2].startswith("unknown well")
    assert (stored.votes, stored.error_rows, stored.images_annotated) == (7, 5, 5)
    # Per reason (the text before the first ':'), most common first, ties in order of appearance.
    assert list(stored.reasons.itertuples(index=False, name=None)) == [
        (f"unknown image '{plate}/A06'", 1), (f"duplicate annotation of {plate}/A01 by 'ann1' (first at a.csv", 1),
        (f"duplicate annotation of {plate}/A01 by 'review", 1), ("unknown well", 1),
        ("unknown attribute 'clears'", 1)]
    assert list(stored.per_image.itertuples(index=False, name=None)) == [(1, 4), (3, 1)]
    assert stored.first_errors["source_line"].tolist() == [3, 4, 6, 7, 8]


def test_a_refresh_losing_votes_across_files_is_refused_and_writes_nothing(tmp_path, small_batches):
    raw = tmp_path / "raw"
    write_archive(raw, plates=2, seed=1, wells=96, size=32, workers=1)
    wh = _ingest(raw, tmp_path)
    before = annotation_table.votes_with_sources(wh)
    errors_before = annotation_table.annotation_errors(wh)
    folder = archive.annotations_dir(raw)
    files = archive.annotation_files(raw)
    assert len(files) == 2  # one per plate: dropping one loses that plate's votes
    with pytest.raises(AnnotationRefreshRefused, match=r"of the \d+ stored votes .* max_vote_loss_share = 0.1"):
        refresh_annotations(wh, files[:1], _formats(wh), folder=folder, max_vote_loss_share=0.1)
    assert annotation_table.votes_with_sources(wh).equals(before)
    assert annotation_table.annotation_errors(wh).equals(errors_before)
    shutil.rmtree(folder)
    with pytest.raises(AnnotationRefreshRefused, match="is missing"):
        refresh_annotations(wh, [], _formats(wh), folder=folder)
    assert annotation_table.votes_with_sources(wh).equals(before)
    stored = refresh_annotations(wh, [], _formats(wh), folder=folder, allow_vote_loss=True)
    assert stored.votes == 0 and stored.loss.lost == stored.loss.stored == len(
        set(zip(before["image_id"], before["annotator"])))
