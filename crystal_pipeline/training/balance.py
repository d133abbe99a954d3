"""Class balance: how much rare classes count while training.

The paper trains with plain cross-entropy over batches drawn uniformly, so a class
seen in 0.5% of the images contributes 0.5% of the gradient; on a small archive the
network then never predicts skin, junk or the combined classes at all (recall 0),
which overall accuracy hides. Two standard remedies, chosen by ``TrainConfig``:

- ``class_balance='sampling'``: each update draws its batch with replacement, an image
  of class ``c`` with probability proportional to ``n_c ** -balance_power``
  (so ``balance_power=1`` gives every class the same share of the batch, ``0.5`` the
  square-root compromise, ``0`` the uniform draw).
- ``class_balance='loss'``: batches stay uniform; the loss weights class ``c`` by
  ``n_c ** -balance_power``, normalised so the average weight over the training
  images is 1 (the learning rate keeps its meaning).

The sampled batch of update ``u`` comes from a generator seeded by (seed, u) alone,
so a resumed run or a DDP run sees exactly the batches of an uninterrupted run, as
with the uniform plan. docs/model_and_training.md has the measured comparison.
"""

from __future__ import annotations

import numpy as np
import torch

from crystal_pipeline.classes import NUM_CLASSES

MODES = ("none", "sampling", "loss")


def class_counts(targets: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Images per class for 0-based ``targets``."""
    return np.bincount(np.asarray(targets, dtype=np.int64).ravel(), minlength=num_classes)[:num_classes]


def class_weights(targets: np.ndarray, power: float, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``n_c ** -power`` per class, scaled so the mean weight over ``targets`` is 1.

    A class absent from ``targets`` gets weight 0 (nothing to weight); ``power=0``
    gives all ones.
    """
    counts = class_counts(targets, num_classes).astype(np.float64)
    weights = np.zeros(num_classes, dtype=np.float64)
    present = counts > 0
    weights[present] = counts[present] ** -float(power)
    mean_over_images = float((weights * counts).sum() / max(counts.sum(), 1.0))
    return weights / mean_over_images if mean_over_images > 0 else weights


def image_sampling_weights(targets: np.ndarray, power: float, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Per-image draw probabilities (summing to 1) for ``class_balance='sampling'``."""
    per_image = class_weights(targets, power, num_classes)[np.asarray(targets, dtype=np.int64)]
    return per_image / per_image.sum()


def loss_weights(mode: str, targets: np.ndarray, power: float, device: torch.device) -> torch.Tensor | None:
    """The ``weight`` for ``cross_entropy`` in ``loss`` mode; None otherwise (plain loss)."""
    if mode != "loss":
        return None
    return torch.as_tensor(class_weights(targets, power), dtype=torch.float32, device=device)

