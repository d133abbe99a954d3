"""The paper's two model-variation studies: training-set size (Figure 4) and resolution (Table 3).

Each point trains a fresh CrystalNet with every setting but the one studied held
fixed (its training history watches ``val``), and scores it on the same ``test`` split,
which only reports. Subsets of the training split are
nested (10% is inside 20%, ...) and drawn with a seed, so the curve shows the effect
of more data rather than of different data.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from crystal_pipeline import tensors


@dataclass(frozen=True)
class StudyPoint:
    setting: float  # fraction of the training split, or resolution in px
    train_images: int
    test_accuracy: float
    crystal_auc: float | None  # on the test split
    seconds: float
    test_images: int


def nested_subset(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of the first ``fraction`` of one seeded permutation (so subsets nest)."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: max(1, int(round(fraction * n)))])


def write_subset(source_res_dir: Path, target_res_dir: Path, fraction: float, seed: int = 0) -> int:
    """A tensors folder whose train split is a nested subset and whose val and test splits are the full ones."""
    train = tensors.read_split(source_res_dir / "train")
    keep = nested_subset(len(train), fraction, seed)
    if target_res_dir.exists():
        shutil.rmtree(target_res_dir)
    target_res_dir.mkdir(parents=True)
    tensors.write_split(target_res_dir, "train", [train.image_ids[i] for i in keep], train.class_ids[keep],
                        train.pixels[keep])
    for split in ("val", "test"):
        shutil.copytree(source_res_dir / split, target_res_dir / split)
    shutil.copy(source_res_dir / "stats.npz", target_res_dir / "stats.npz")
    return len(keep)


def training_size_study(res_dir: Path, work_dir: Path, config, fractions: Sequence[float], *, device: str = "auto",
                        progress: Callable[[str], None] | None = None) -> list[StudyPoint]:
    """Train on nested fractions of the training split; score each on the full test split.

    ``config`` is a TrainConfig; the normalization stats stay those of the full
    training split, as the paper's per-pixel normalization is fixed before training.
    """
    from crystal_pipeline.training import train

    points = []
    for fraction in fractions:
        subset_dir = work_dir / f"fraction_{fraction:.2f}" / res_dir.name
        n = write_subset(res_dir, subset_dir, fraction, seed=config.seed)
        started = time.perf_counter()
        result = train(config, subset_dir, subset_dir.parent / "model.pt", device=device)
        points.append(_point(fraction, n, result, subset_dir, time.perf_counter() - started))
        if progress:
            progress(f"{fraction:.0%} of the training split ({n} images): test accuracy "
                     f"{points[-1].test_accuracy:.3f} on {points[-1].test_images} images")
    return points


def resolution_study(prepare: Callable[[int], Path], work_dir: Path, config, resolutions: Sequence[int], *,
                     device: str = "auto", progress: Callable[[str], None] | None = None) -> list[StudyPoint]:
    """Train at each resolution; ``prepare(res)`` returns the tensors folder for that resolution."""
    from crystal_pipeline.training import train

    points = []
    for res in resolutions:
        res_dir = prepare(res)
        cfg = dataclasses.replace(config, resolution=res)
        started = time.perf_counter()
        result = train(cfg, res_dir, work_dir / f"r{res}" / "model.pt", device=device)
        points.append(_point(res, tensors.count_rows(res_dir / "train"), result, res_dir,
                             time.perf_counter() - started))
        if progress:
            progress(f"{res} px: test accuracy {points[-1].test_accuracy:.3f} in {points[-1].seconds:.0f}s")
    return points


def _point(setting: float, train_images: int, result, res_dir: Path, seconds: float) -> StudyPoint:
    """One study point: the trained model scored on ``res_dir``'s test split."""
    from crystal_pipeline.evaluation.registry import score
    from crystal_pipeline.model import predict_proba
    from crystal_pipeline.model.fusion import model_inputs

    test = tensors.read_split(res_dir / "test")
    if not len(test) or result.model is None:
        return StudyPoint(setting, train_images, float("nan"), None, seconds, len(test))
    scores = score(test.class_ids, predict_proba(result.model, model_inputs(result.model, test)))
    auc = None if scores.crystal_auc != scores.crystal_auc else float(scores.crystal_auc)
    return StudyPoint(setting, train_images, scores.val_accuracy, auc, seconds, len(test))
