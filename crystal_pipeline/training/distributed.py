"""DistributedDataParallel set-up and teardown, from the environment torchrun provides.

One process (no ``WORLD_SIZE``, or 1) needs nothing; more means one rank per process,
nccl on CUDA and gloo on CPU. Rank 0 alone evaluates, logs and writes files; the others
train their share of every global batch (see :class:`~crystal_pipeline.training.steps.BatchPlan`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    created: bool = False  # this process initialized the process group, so it tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; more than one process means DDP
    (nccl on CUDA, gloo on CPU), initialized from the environment. Returns the rank's
    info and its device (``cuda:<local rank>`` on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        world=world,
        local_rank=local_rank,
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            # One rank per GPU: a second rank on a one-GPU box would otherwise die in set_device
            # with "invalid device ordinal" and take the others down with a SIGTERM.
            raise RuntimeError(f"rank {info.rank} would train on cuda:{local_rank}, but this machine has {gpus} "
                               f"GPU(s): start at most {gpus} processes per node (torchrun --nproc_per_node, "
                               f"the asset's compute.nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        info.created = True
    return info, device


def wrap_ddp(net: torch.nn.Module, device: torch.device, info: DistInfo) -> torch.nn.Module:
    """``net`` for training on this rank: DDP-wrapped when there is more than one."""
    if info.world <= 1:
        return net
    from torch.nn.parallel import DistributedDataParallel as DDP

    # The normalization buffers never change, so there is nothing to broadcast.
    return DDP(net, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def teardown_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if info.created:
        import torch.distributed as dist

        dist.destroy_process_group()
