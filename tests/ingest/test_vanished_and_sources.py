"""Files that vanish from disk, and archive vs incoming rows that share an image id."""

import shutil

import pytest

from crystal_pipeline.ingest import archive
from crystal_pipeline.ingest.consensus import ConsensusConfig, agree
from crystal_pipeline.ingest.image_files import SourceConflict, ingest_files
from crystal_pipeline.warehouse import ImageScope, Warehouse
from crystal_pipeline.warehouse import images as image_table
from tests.ingest.test_image_files import grey_png


def _plate(raw, plate_id, wells):
    for value, well in enumerate(wells):
        grey_png(raw / "plates" / plate_id / f"{well}.png", value=10 + value)
    (raw / "plates" / plate_id / "plate.json").write_text('{"format": 96}')


def _status(wh):
    return dict(wh.query_df("SELECT image_id, status FROM images").itertuples(index=False))


def test_a_vanished_file_is_marked_leaves_consensus_and_plate_reads_and_comes_back(tmp_path):
    raw = tmp_path / "raw"
    _plate(raw, "P1", ["A01", "A02", "A03"])
    wh = Warehouse(tmp_path / "w.duckdb")
    ingest_files(wh, archive.scan_archive(raw))
    kept = tmp_path / "A02.png"
    shutil.move(raw / "plates" / "P1" / "A02.png", kept)

    summary = ingest_files(wh, archive.scan_archive(raw))
    assert summary.vanished == ["P1/A02"]
    assert _status(wh) == {"P1/A01": "ok", "P1/A02": "vanished", "P1/A03": "ok"}
    # Consensus drops it (with its reason), the plate's files no longer list it (a missing well),
    # and the summary counts it apart from the quarantined.
    votes = [(i, ("clear",)) for i in ("P1/A01", "P1/A02", "P1/A03")]
    result = agree(votes, ConsensusConfig(), image_table.image_statuses(wh))
    assert [l.image_id for l in result.labels] == ["P1/A01", "P1/A03"]
    assert result.excluded["image vanished"] == 1
    assert list(image_table.images_in(wh, ImageScope.of_plate("P1", None))["image_id"]) == ["P1/A01", "P1/A03"]
    [summary_row] = image_table.plates_summary(wh).itertuples(index=False)
    assert (summary_row.images, summary_row.quarantined, summary_row.vanished) == (2, 0, 1)

    # A third scan leaves it vanished; the file put back unchanged (same size and mtime) is ok again.
    assert ingest_files(wh, archive.scan_archive(raw)).vanished == ["P1/A02"]
    shutil.move(kept, raw / "plates" / "P1" / "A02.png")
    again = ingest_files(wh, archive.scan_archive(raw))
    assert again.vanished == [] and again.changed == 1
    assert set(_status(wh).values()) == {"ok"}


def test_an_incoming_plate_named_like_an_archive_plate_is_refused_before_writing(tmp_path):
    raw, incoming = tmp_path / "raw", tmp_path / "incoming"
    _plate(raw, "P1", ["A01", "A02"])
    wh = Warehouse(tmp_path / "w.duckdb")
    ingest_files(wh, archive.scan_archive(raw), source="archive")
    before = wh.query_df("SELECT * FROM images ORDER BY image_id")

    grey_png(incoming / "P1" / "A01.png", value=200)
    files = archive.scan_plate(incoming / "P1", "P1")
    with pytest.raises(SourceConflict, match=r"plate\(s\) P1.*source archive.*P1/A01"):
        ingest_files(wh, files, source="incoming", scope=ImageScope.of_plate("P1", None))
    # Also when no id clashes: the archive rows in the plate's scope would be marked vanished.
    (incoming / "P1" / "A01.png").rename(incoming / "P1" / "H12.png")
    with pytest.raises(SourceConflict, match="P1/A0"):
        ingest_files(wh, archive.scan_plate(incoming / "P1", "P1"), source="incoming",
                     scope=ImageScope.of_plate("P1", None))
    after = wh.query_df("SELECT * FROM images ORDER BY image_id")
    assert after.equals(before)

    # The other way round: an archive scan meeting an incoming plate's ids.
    grey_png(incoming / "N1" / "A01.png")
    ingest_files(wh, archive.scan_plate(incoming / "N1", "N1"), source="incoming",
                 scope=ImageScope.of_plate("N1", None))
    _plate(raw, "N1", ["A01"])
    with pytest.raises(SourceConflict, match="source incoming"):
        ingest_files(wh, archive.scan_archive(raw), source="archive")


def test_tensors_leave_a_vanished_file_out_and_are_not_rewritten_on_every_read(tmp_path, monkeypatch):
    import pandas as pd

    from crystal_pipeline.layout import DataLayout
    from crystal_pipeline.tensors import preparation
    from crystal_pipeline.warehouse import labels as label_table

    raw = tmp_path / "raw"
    wells = [f"A{c:02d}" for c in range(1, 9)]
    _plate(raw, "P1", wells)
    wh = Warehouse(tmp_path / "w.duckdb")
    ingest_files(wh, archive.scan_archive(raw))
    labels = agree([(f"P1/{w}", ("clear",)) for w in wells], ConsensusConfig(), image_table.image_statuses(wh))
    label_table.replace_consensus_labels(wh, pd.DataFrame([vars(l) for l in labels.labels]))
    (raw / "plates" / "P1" / "A03.png").unlink()
    ingest_files(wh, archive.scan_archive(raw))  # consensus not re-run yet: the label is still stored

    layout = DataLayout.under(tmp_path / "data")
    writes = []
    real = preparation.prepare_resolution
    monkeypatch.setattr(preparation, "prepare_resolution", lambda *a, **k: writes.append(1) or real(*a, **k))
    for split in ("train", "val", "test") * 2:
        preparation.current_split(wh, layout, 16, split, workers=1)
    assert len(writes) == 1  # written once, then the stored ids match the warehouse's
    ids = [i for s in ("train", "val", "test") for i in preparation.current_split(wh, layout, 16, s).image_ids]
    assert sorted(ids) == [f"P1/{w}" for w in wells if w != "A03"]
