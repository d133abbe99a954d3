"""The command line that runs training as its own process: torchrun over ``crystal-pipeline train``.

The Dagster asset launches this through Pipes (locally as a subprocess; on a cluster
the same argv in a pod), so building it is library work: one function, tested, that
every launcher uses. ``torch.distributed.run`` is torchrun's module, so the command
needs only the interpreter that has torch, not a ``torchrun`` script on the PATH.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Sequence


def torchrun_command(*, tensors_dir: str | os.PathLike, out_path: str | os.PathLike, result_path: str | os.PathLike,
                     preset: str, overrides: Mapping[str, str] | None = None, nproc_per_node: int = 1,
                     device: str = "auto", trained_on: str = "unknown", resume: bool = False,
                     python: str | None = None, init_artifact: str | os.PathLike | None = None) -> Sequence[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m crystal_pipeline train ...``;
    ``init_artifact`` (a fine-tune's parent file) becomes ``--init-artifact``, its version
    travels in ``overrides`` as ``init_from``."""
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be at least 1, got {nproc_per_node}")
    command = [python or sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(nproc_per_node),
               "-m", "crystal_pipeline", "train",
               "--tensors", str(Path(tensors_dir)), "--out", str(Path(out_path)), "--result", str(Path(result_path)),
               "--preset", preset, "--device", device, "--trained-on", trained_on]
    for key, value in sorted((overrides or {}).items()):
        command += ["--set", f"{key}={value}"]
    if init_artifact is not None:
        command += ["--init-artifact", str(Path(init_artifact))]
    if resume:
        command.append("--resume")
    return command
