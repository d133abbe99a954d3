"""Parquet tensors: what is written is what load_grey gives, atomically, with a stable fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from crystal_pipeline.ingest.imaging import load_grey
from crystal_pipeline.tensors import (
    STD_FLOOR,
    DecodeFailure,
    Split,
    compute_stats,
    TensorDataError,
    count_rows,
    fingerprint,
    fingerprint_splits,
    iter_batches,
    load_stats,
    pixel_width,
    read_split,
    save_stats,
    tensor_schema,
    write_split,
    write_tensors,
)

RES = 24


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, list[tuple[str, int, str, str]]]:
    """Eleven small images of assorted sizes and modes, with ids, classes and splits."""
    root = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(7)
    rows = []
    for i in range(11):
        h, w = 30 + 3 * i, 40 + 5 * (i % 4)
        pixels = rng.integers(0, 256, (h, w), dtype=np.uint8)
        if i % 3 == 0:
            im, suffix = Image.fromarray(np.stack([pixels] * 3, -1)), ".jpg"
        elif i % 3 == 1:
            im, suffix = Image.fromarray(pixels.astype(np.uint16) * 200), ".tif"
        else:
            im, suffix = Image.fromarray(pixels), ".png"
        path = root / f"w{i:02d}{suffix}"
        im.save(path)
        split = "val" if i % 4 == 0 else "train"
        rows.append((f"P1/{chr(65 + i)}01", 1 + i % 10, split, str(path)))
    return root, rows


def _summary_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def test_round_trip_per_split_matches_load_grey(archive, tmp_path):
    _, rows = archive
    out = tmp_path / "tensors" / f"r{RES}"
    calls = []
    summary = write_tensors(rows, out, RES, workers=2, rows_per_part=3, chunksize=2,
                            progress=lambda done, total: calls.append((done, total)))
    assert summary.rows_per_split == {"train": 8, "val": 3}
    assert summary.failures == []
    assert calls[-1] == (11, 11)
    assert _summary_dirs(out) == ["train", "val"]  # no temp dirs left behind
    assert [p.name for p in sorted((out / "train").iterdir())] == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert summary.bytes_written == sum(p.stat().st_size for p in out.rglob("*.parquet"))

    schema = pq.read_schema(out / "train" / "part-00000.parquet")
    assert schema.field("pixels").type == pa.binary(RES * RES)
    assert schema.field("class_id").type == pa.int16()
    assert schema.field("image_id").type == pa.string()
    assert schema.remove_metadata().equals(tensor_schema(RES).remove_metadata())

    for split in ("train", "val"):
        expected = [r for r in rows if r[2] == split]
        read = read_split(out / split, RES)
        ids, classes, pixels = read.image_ids, read.class_ids, read.pixels
        assert ids == [r[0] for r in expected]
        assert classes.dtype == np.int64 and classes.tolist() == [r[1] for r in expected]
        assert pixels.dtype == np.uint8 and pixels.shape == (len(expected), RES, RES)
        for got, row in zip(pixels, expected):
            np.testing.assert_array_equal(got, load_grey(row[3], RES))

    # The content fingerprint is reproducible from the files and independent of part size
    # and worker count; it changes when a label does.
    assert fingerprint([out / "val", out / "train"]) == summary.fingerprint
    assert fingerprint(out / "train") != summary.fingerprint
    again = write_tensors(rows, out, RES, workers=1, rows_per_part=100)
    assert again.fingerprint == summary.fingerprint
    assert again.split_fingerprints == summary.split_fingerprints
    assert _summary_dirs(out) == ["train", "val"]
    assert [p.name for p in (out / "train").iterdir()] == ["part-00000.parquet"]
    relabelled = [(i, c % 10 + 1, s, p) if i == rows[1][0] else (i, c, s, p) for i, c, s, p in rows]
    changed = write_tensors(relabelled, out, RES, workers=1)
    assert changed.fingerprint != summary.fingerprint
    assert changed.split_fingerprints["val"] == summary.split_fingerprints["val"]
    # Splits already in memory give the same fingerprint as their files (what training records).
    in_memory = {split: read_split(out / split) for split in ("train", "val")}
    assert fingerprint_splits(in_memory) == changed.fingerprint


def test_fingerprint_bytes_are_stable():
    """Feature caches are keyed by the fingerprint, so its definition must not drift: this
    value was computed by the tensors module before the package was split into modules."""
    pixels = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    split = Split(["P1/A01", "P1/B02"], np.array([3, 10]), pixels)
    assert fingerprint_splits({"train": split}) == (
        "ad448a1b8eea84d2d77929ab5508d598b28f689dd93215035dafebf0184db134")


def test_write_split_writes_arrays_the_same_way(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (7, RES, RES), dtype=np.uint8)
    ids, classes = [f"P/{i}" for i in range(7)], rng.integers(1, 11, 7)
    digest = write_split(tmp_path / "r24", "train", ids, classes, pixels, rows_per_part=3)
    assert [p.name for p in sorted((tmp_path / "r24" / "train").iterdir())] == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert _summary_dirs(tmp_path / "r24") == ["train"]
    assert digest == fingerprint(tmp_path / "r24" / "train")
    read = read_split(tmp_path / "r24" / "train")
    assert read.image_ids == ids and len(read) == 7 and read.resolution == RES
    np.testing.assert_array_equal(read.class_ids, classes)
    np.testing.assert_array_equal(read.pixels, pixels)
    first = read_split(tmp_path / "r24" / "train", max_parts=1)
    assert first.image_ids == ids[:3]
    np.testing.assert_array_equal(first.pixels, pixels[:3])


def test_reader_names_the_file_it_cannot_use(tmp_path):
    with pytest.raises(TensorDataError, match="no part-"):
        read_split(tmp_path / "absent")
    bad = tmp_path / "r24" / "train"
    bad.mkdir(parents=True)
    pq.write_table(pa.table({"image_id": ["a"], "class_id": pa.array([1], pa.int16()), "pixels": [b"xyz"]}),
                   bad / "part-00000.parquet")
    with pytest.raises(TensorDataError, match="part-00000.parquet: pixels are binary"):
        read_split(bad)
    with pytest.raises(TensorDataError, match="stats.npz"):
        load_stats(tmp_path / "stats.npz")


def test_unreadable_image_is_skipped_and_reported(archive, tmp_path):
    root, rows = archive
    empty = root / "empty.png"
    empty.write_bytes(b"")
    truncated = root / "cut.png"
    data = Path(rows[2][3]).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    bad_rows = rows[:3] + [("P1/X01", 3, "train", str(empty)), ("P1/X02", 4, "val", str(truncated))] + rows[3:]
    summary = write_tensors(bad_rows, tmp_path / "r24", RES, workers=1)
    assert summary.failures == [DecodeFailure("P1/X01", "empty file"),
                                DecodeFailure("P1/X02", "truncated image")]
    assert summary.rows_per_split == {"train": 8, "val": 3}
    ids = read_split(tmp_path / "r24" / "train").image_ids
    assert "P1/X01" not in ids and len(ids) == 8


def test_a_failed_write_leaves_the_previous_tensors_intact(archive, tmp_path):
    _, rows = archive
    out = tmp_path / "r24"
    before = write_tensors(rows[:6], out, RES, workers=1)

    def crash(done, total):
        raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        write_tensors(rows, out, RES, workers=1, rows_per_part=2, progress=crash)
    assert _summary_dirs(out) == ["train", "val"]
    assert fingerprint([out / "train", out / "val"]) == before.fingerprint


def test_stale_temp_dirs_of_dead_writers_are_removed(archive, tmp_path):
    _, rows = archive
    out = tmp_path / "r24"
    stale = out / ".train.tmp-999999999-0123456789ab"
    stale.mkdir(parents=True)
    (stale / "part-00000.parquet").write_bytes(b"half")
    write_tensors(rows[:2], out, RES, workers=1)
    assert _summary_dirs(out) == ["train", "val"]


def test_named_empty_split_is_written_with_its_schema(archive, tmp_path):
    _, rows = archive
    out = tmp_path / "r24"
    summary = write_tensors(rows[:3], out, RES, workers=1, splits=("train", "val", "test"))
    assert summary.rows_per_split["test"] == 0
    empty = read_split(out / "test")
    assert empty.image_ids == [] and empty.class_ids.shape == (0,) and empty.pixels.shape == (0, RES, RES)


def test_unlabelled_rows_are_refused(archive, tmp_path):
    _, rows = archive
    with pytest.raises(ValueError, match="labelled"):
        write_tensors([(rows[0][0], None, "train", rows[0][3])], tmp_path / "r24", RES, workers=1)
    assert not list((tmp_path / "r24").iterdir())


def test_iter_batches_streams_every_row(archive, tmp_path):
    _, rows = archive
    out = tmp_path / "r24"
    write_tensors(rows, out, RES, workers=1, rows_per_part=5)
    batches = list(iter_batches(out / "train", batch_rows=3))
    assert [len(b[0]) for b in batches] == [3, 2, 3]
    whole = read_split(out / "train").pixels
    np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]), whole)


def test_compute_stats_equals_numpy_and_round_trips(archive, tmp_path):
    _, rows = archive
    out = tmp_path / "r24"
    write_tensors(rows, out, RES, workers=1, rows_per_part=4)
    pixels = read_split(out / "train").pixels
    mean, std = compute_stats(out / "train", batch_rows=3)
    assert mean.dtype == np.float32 and std.dtype == np.float32 and mean.shape == (RES, RES)
    x = pixels.astype(np.float64)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, np.maximum(x.std(axis=0), STD_FLOOR), rtol=1e-5)

    stats = out / "stats.npz"
    save_stats(stats, mean, std)
    loaded_mean, loaded_std = load_stats(stats, RES)
    np.testing.assert_array_equal(loaded_mean, mean)
    np.testing.assert_array_equal(loaded_std, std)
    with pytest.raises(TensorDataError, match="expected \\(32, 32\\)"):
        load_stats(stats, 32)
    assert sorted(p.name for p in out.iterdir()) == ["stats.npz", "train", "val"]


def test_std_is_floored_where_a_pixel_never_changes(tmp_path):
    paths = []
    for i in range(4):
        a = np.full((RES, RES), 10 * i, np.uint8)
        a[0, 0] = 200  # the same in every image
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    out = tmp_path / "r24"
    write_tensors([(f"id{i}", 1, "train", str(p)) for i, p in enumerate(paths)], out, RES, workers=1)
    mean, std = compute_stats(out / "train")
    assert mean[0, 0] == 200 and std[0, 0] == STD_FLOOR
    assert np.isclose(std[5, 5], np.std([0, 10, 20, 30]))


def test_footer_only_row_count_and_pixel_width(archive, tmp_path):
    _, rows = archive
    out = tmp_path / "r24"
    write_tensors(rows, out, RES, workers=1, rows_per_part=3)
    assert count_rows(out / "train") == 8 and count_rows(out / "val") == 3
    assert pixel_width(out / "train") == RES * RES
    assert count_rows(out / "absent") == 0 and pixel_width(out / "absent") is None
