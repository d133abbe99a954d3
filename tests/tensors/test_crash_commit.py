"""SIGKILL at each step of the tensor commit, then a plain re-run (issue 18, docs/reliability.md).

After each kill every split is one whole generation (the old or the new) or absent, never
a mix; the killed writer's lock is freed by the kernel, so the next writer proceeds, removes
what the dead one left and ends with exactly what a never-killed write gives.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from crystal_pipeline.tensors import SPLITS, TensorDataError, fingerprint, read_split, write_tensors
from tests.crash_harness import killed_at, run_clean

RES = 8
#: The commit's kill points in the order a write reaches them, and what each leaves per split.
#: ``between_renames`` exists only where the system cannot exchange two folders atomically
#: (``files.exchange_paths``): that child is made to fall back to two renames.
STATES = {
    "tensors.before_commit": {"train": "old", "val": "old", "test": "old"},
    "tensors.between_renames": {"train": "absent", "val": "old", "test": "old"},
    "tensors.between_splits": {"train": "new", "val": "old", "test": "old"},
    "tensors.after_commit": {"train": "new", "val": "new", "test": "new"},
}
_NO_EXCHANGE = "import crystal_pipeline.tensors.writer as w\nw.exchange_paths = lambda a, b: False\n"


def _rows(folder, gen: str) -> list[tuple[str, int, str, str]]:
    ids = range(0, 18) if gen == "old" else range(6, 30)
    shift = 0 if gen == "old" else 3
    return [(f"img{i:03d}", (i + shift) % 10 + 1, SPLITS[i % 3], str(folder / f"img{i:03d}.png")) for i in ids]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i in range(30):
        Image.fromarray(np.full((12, 12), 8 * i, np.uint8)).save(folder / f"img{i:03d}.png")
    return folder


def _child(images, out) -> str:
    rows = json.dumps(_rows(images, "new"))
    return ("import json\nfrom crystal_pipeline.tensors import SPLITS, write_tensors\n"
            f"write_tensors([tuple(r) for r in json.loads({rows!r})], {str(out)!r}, {RES}, workers=1, "
            "rows_per_part=4, splits=SPLITS)\n")


def _state(split_dir, generations: dict[str, str]) -> str:
    try:
        found = fingerprint(split_dir)
    except TensorDataError as error:
        assert "no part-" in str(error)
        return "absent"
    matches = [gen for gen, fp in generations.items() if fp == found]
    assert matches, f"{split_dir.name} is neither the old nor the new generation"
    return matches[0]


def test_a_kill_at_each_commit_step_leaves_whole_generations_and_a_rerun_completes(images, tmp_path):
    never_killed = tmp_path / "never_killed" / "r8"
    per_split: dict[str, dict[str, str]] = {split: {} for split in SPLITS}
    for gen in ("old", "new"):
        write_tensors(_rows(images, gen), never_killed, RES, workers=1, rows_per_part=4, splits=SPLITS)
        for split in SPLITS:
            per_split[split][gen] = fingerprint(never_killed / split)
    out = tmp_path / "killed" / "r8"
    write_tensors(_rows(images, "old"), out, RES, workers=1, rows_per_part=4, splits=SPLITS)

    for point, expected in STATES.items():
        killed_at(point, (_NO_EXCHANGE if point == "tensors.between_renames" else "") + _child(images, out))
        assert {split: _state(out / split, per_split[split]) for split in SPLITS} == expected, point

    run_clean(_child(images, out))  # the dead writers' lock is free; their temp folders go
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLITS)
    assert fingerprint([out / s for s in SPLITS]) == fingerprint([never_killed / s for s in SPLITS])
    for split in SPLITS:
        got, want = read_split(out / split, RES), read_split(never_killed / split, RES)
        assert got.image_ids == want.image_ids
        np.testing.assert_array_equal(got.class_ids, want.class_ids)


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2(RENAME_EXCHANGE) is Linux's")
def test_the_exchange_commit_never_passes_between_two_renames(images, tmp_path):
    out = tmp_path / "r8"
    write_tensors(_rows(images, "old"), out, RES, workers=1, splits=SPLITS)
    run_clean(_child(images, out), env={"CRYSTAL_CRASH_AT": "tensors.between_renames"})  # never reached
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLITS)
    assert read_split(out / "train", RES).image_ids == [r[0] for r in _rows(images, "new") if r[2] == "train"]
