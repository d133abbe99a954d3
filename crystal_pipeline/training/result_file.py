"""A training run's result as a file, so a process that launched the trainer gets it back.

The ``crystalnet_model`` asset runs training as an external process (Dagster Pipes,
torchrun): the run's scores, history and validation probabilities must come back
exactly as :func:`~crystal_pipeline.training.train` returned them in process, so the
promotion decision does not depend on how training was launched. One ``.npz`` holds
the arrays and a JSON header; it is written atomically by rank 0.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from crystal_pipeline.files import atomic_write
from crystal_pipeline.training.loop import TrainResult

_SCALARS = ("finished", "updates", "history", "val_accuracy", "crystal_auc", "images_per_s", "device", "seconds",
            "precision")


def write_result(result: TrainResult, path: str | os.PathLike, progress: list[dict] | None = None) -> Path:
    """Save everything but the in-memory model (the artifact at ``result.path`` holds it),
    and the progress lines the run logged (the asset draws its training curves from them)."""
    header = {name: getattr(result, name) for name in _SCALARS}
    header["progress"] = list(progress or [])
    header["path"] = None if result.path is None else str(result.path)
    header["checkpoint_path"] = str(result.checkpoint_path)
    arrays = {
        "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
        "val_image_ids": np.asarray(result.val_image_ids, dtype=str),
        "val_class_ids": np.asarray([] if result.val_class_ids is None else result.val_class_ids, dtype=np.int64),
        "val_probs": np.asarray(np.zeros((0, 0)) if result.val_probs is None else result.val_probs),
    }

    def write(handle) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        handle.write(buffer.getvalue())

    return atomic_write(path, write)


def read_result(path: str | os.PathLike) -> tuple[TrainResult, list[dict]]:
    """The :class:`TrainResult` saved by :func:`write_result` (``model`` is None) and its
    progress lines."""
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(z["header"].tobytes().decode())
        ids, class_ids, probs = z["val_image_ids"].tolist(), z["val_class_ids"], z["val_probs"]
    return TrainResult(
        path=None if header["path"] is None else Path(header["path"]),
        checkpoint_path=Path(header["checkpoint_path"]),
        **{name: header[name] for name in _SCALARS},
        val_image_ids=ids,
        val_class_ids=class_ids if len(ids) else None,
        val_probs=probs if len(ids) else None,
    ), header["progress"]
