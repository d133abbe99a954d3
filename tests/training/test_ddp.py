"""DistributedDataParallel on CPU: two gloo ranks, as torchrun would start them."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from crystal_pipeline import tensors as tensor_files
from crystal_pipeline.training import TrainConfig, train

RES = 32
CONFIG = TrainConfig.from_preset("smoke", {"updates": 4, "batch_size": 8, "num_threads": 1,
                                           "eval_every": 4, "checkpoint_every": 4, "log_every": 2})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, data_dir: str, out_dir: str) -> None:
    """What torchrun gives each process: the env contract, then the same call."""
    os.environ.update({
        "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    })
    result = train(CONFIG, data_dir, Path(out_dir) / "model.pt", device="cpu")
    torch.save(result.model.state_dict(), Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.skipif(sys.platform == "win32", reason="gloo over localhost")
def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    rng = np.random.default_rng(0)
    tensors = tmp_path / "tensors" / f"r{RES}"
    pixels = rng.integers(0, 256, (40, RES, RES), dtype=np.uint8)
    tensor_files.write_split(tensors, "train", [f"i{k}" for k in range(40)], rng.integers(1, 11, 40), pixels)
    tensor_files.write_split(tensors, "val", [f"v{k}" for k in range(8)], rng.integers(1, 11, 8), pixels[:8])
    tensor_files.save_stats(tensors / "stats.npz", *tensor_files.compute_stats(tensors / "train"))

    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path), str(tmp_path)), nprocs=2, join=True)

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in rank0:
        torch.testing.assert_close(rank1[key], rank0[key], rtol=0, atol=0)
    assert (tmp_path / "model.pt").is_file()  # written once, by rank 0

    # Each rank takes its half of the same global batch and transforms, so the
    # averaged gradient is the single-process one: DDP reproduces a 1-process run.
    os.environ.pop("WORLD_SIZE", None)
    single = train(CONFIG, tmp_path, tmp_path / "single.pt", device="cpu").model.state_dict()
    for key in rank0:
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-4, atol=1e-5)


def test_more_cuda_ranks_than_gpus_is_one_clear_error(monkeypatch):
    from crystal_pipeline.training.distributed import setup_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match="this machine has 1 GPU"):
        setup_distributed(torch.device("cuda"))
