"""Two tensor writers of one resolution at once, and a reader while they swap splits (issue 18)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from crystal_pipeline import locks
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.tensors import TensorDataError, read_split, write_split

RES = 8


def _generation(k: int) -> tuple[list[str], list[int], np.ndarray]:
    """Generation ``k``: its own ids, row count, class id and pixel value, so a mix shows."""
    n = 6 + 5 * (k % 4)
    return [f"g{k:04d}-{i:03d}" for i in range(n)], [k % 10 + 1] * n, np.full((n, RES, RES), k % 251, np.uint8)


def _check_one_generation(split) -> None:
    generations = {image_id.split("-")[0] for image_id in split.image_ids}
    assert len(generations) == 1, f"rows of several generations: {sorted(generations)}"
    ids, classes, pixels = _generation(int(generations.pop()[1:]))
    assert split.image_ids == ids
    np.testing.assert_array_equal(split.class_ids, classes)
    np.testing.assert_array_equal(split.pixels, pixels)


def test_two_writers_and_a_reader_never_meet_a_mix(tmp_path):
    out = tmp_path / "r8"
    write_split(out, "train", *_generation(0), rows_per_part=4)
    errors: list[BaseException] = []

    def writer(first: int) -> None:
        try:
            for k in range(first, first + 60, 2):
                write_split(out, "train", *_generation(k), rows_per_part=4)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    reads, refusals = 0, 0
    writers = [threading.Thread(target=writer, args=(first,)) for first in (1, 2)]
    for thread in writers:
        thread.start()
    try:
        while any(t.is_alive() for t in writers):
            try:
                split = read_split(out / "train", RES)
            except TensorDataError as error:  # allowed, if it says what happened
                assert "replaced by a tensor writer" in str(error) or "no part-" in str(error)
                refusals += 1
                continue
            _check_one_generation(split)
            reads += 1
    finally:
        for thread in writers:
            thread.join()
    assert not errors, f"a writer failed: {errors[0]!r}"
    assert reads > 0
    _check_one_generation(read_split(out / "train", RES))
    assert sorted(p.name for p in out.iterdir()) == ["train"]  # no temp folders left


def test_a_writer_waits_for_the_lock_holder(tmp_path):
    out = tmp_path / "r8"
    done = threading.Event()
    with locks.exclusive(DataLayout.tensors_lock_in(out)):
        thread = threading.Thread(target=lambda: (write_split(out, "train", *_generation(3)), done.set()))
        thread.start()
        time.sleep(0.3)
        assert not done.is_set() and not (out / "train").exists()
    thread.join(timeout=30)
    assert done.is_set()
    _check_one_generation(read_split(out / "train", RES))


def test_layout_names_the_lock_beside_the_resolution(tmp_path):
    layout = DataLayout.under(tmp_path)
    assert layout.tensors_lock(64) == layout.tensors_dir(64).parent / ".r64.lock"
    with pytest.raises(TensorDataError, match="no part-"):
        read_split(layout.tensors_split_dir(64, "train"))


def test_stats_wait_for_a_tensor_writer_of_their_resolution(tmp_path):
    from crystal_pipeline.tensors import load_stats
    from crystal_pipeline.tensors.preparation import write_stats

    layout = DataLayout.under(tmp_path)
    write_split(layout.tensors_dir(RES), "train", *_generation(1))
    done = threading.Event()
    with locks.exclusive(layout.tensors_lock(RES)):  # a writer is replacing the splits
        thread = threading.Thread(target=lambda: (write_stats(layout, RES), done.set()))
        thread.start()
        time.sleep(0.3)
        assert not done.is_set() and not layout.stats_path(RES).exists()
    thread.join(timeout=30)
    mean, _ = load_stats(layout.stats_path(RES), RES)
    assert float(mean.mean()) == 1.0  # generation 1's pixels, read after the writer let go
