"""The pieces one training update and one evaluation are made of (also timed by bench/train_throughput.py).

Repeatability is built in rather than hoped for: the batch order of update ``u`` comes
from a permutation seeded by (seed, epoch) and its augmentation from a generator seeded
by (seed, u). Nothing depends on RNG state carried between updates, so a resumed run, or
a DDP run that splits each global batch across ranks, sees exactly the batches and
transforms an uninterrupted single-process run would.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from crystal_pipeline.evaluation.metrics import binary_auc, crystal_probability, crystal_truth
from crystal_pipeline.model import CrystalNet, augment, build_model, init_weights
from crystal_pipeline.model.inference import eval_mode, iter_logits, softmax_probs
from crystal_pipeline.model.precision import PrecisionChoice, autocast_context
from crystal_pipeline.reporting.numbers import finite_or_none
from crystal_pipeline.training import balance
from crystal_pipeline.training.config import TrainConfig


def model_config(config: TrainConfig, in_channels: int = 1) -> dict:
    """``config.model_config()`` for a model reading ``in_channels`` (2: visible + UV tensors,
    ``model.fusion``); a visible-only model's config has no ``in_channels``, as before UV."""
    return {**config.model_config(), **({"in_channels": in_channels} if in_channels != 1 else {})}


def make_model(config: TrainConfig, mean: np.ndarray | None = None, std: np.ndarray | None = None, *,
               in_channels: int = 1) -> CrystalNet:
    """Seeded construction: the same seed gives the same initial weights."""
    torch.manual_seed(config.seed)
    model = build_model(model_config(config, in_channels))
    init_weights(model, config.init)
    if mean is not None and std is not None:
        model.set_normalization(mean, std)
    return model


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """The paper's SGD with momentum; weight decay on weights, not on biases. Frozen
    parameters (a fine-tune's convolutions with ``freeze_features``) are left out."""
    learning = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in learning if p.dim() >= 2]
    no_decay = [p for p in learning if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def lr_at(config: TrainConfig, update: int) -> float:
    """Learning rate for 0-based update ``update``."""
    if update < config.warmup_updates:
        return config.lr * (update + 1) / config.warmup_updates
    if config.lr_schedule == "constant":
        return config.lr
    span = max(1, config.updates - config.warmup_updates)
    progress = min(1.0, (update - config.warmup_updates) / span)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def training_precision(config: TrainConfig, device: torch.device,
                       flags: Iterable[str] | None = None) -> PrecisionChoice:
    """The precision this session trains in on ``device`` (:meth:`TrainConfig.precision_choice`;
    ``flags``: the CPU's, from /proc/cpuinfo by default).

    Why bf16 on CPUs only with AMX/AVX512-BF16: there an update runs about 2x faster
    (issue 19: 611 vs 272 images/s at 64 px); on an AVX2-only CPU bf16 is emulated and slower.
    """
    return config.precision_choice(device.type, flags)


def _mix(seed: int, stream: int, index: int) -> int:
    """A well-spread 63-bit seed per (run seed, stream, index)."""
    high, low = np.random.SeedSequence([seed & 0xFFFFFFFF, stream, index]).generate_state(2)
    return (int(high) << 32 | int(low)) >> 1


class BatchPlan:
    """Stateless batches: update ``u``'s indices and transforms depend only on
    (seed, u), so resuming or splitting across ranks changes nothing."""

    def __init__(self, n_images: int, config: TrainConfig, device: torch.device, rank: int = 0, world: int = 1,
                 targets: np.ndarray | None = None):
        if n_images < config.batch_size:
            raise ValueError(
                f"the training split has {n_images} images, fewer than batch_size {config.batch_size};"
                " lower batch_size (--set batch_size=...)"
            )
        if config.batch_size % world:
            raise ValueError(f"batch_size {config.batch_size} does not divide among {world} ranks")
        self.n, self.config, self.device, self.rank, self.world = n_images, config, device, rank, world
        self.steps_per_epoch = n_images // config.batch_size
        self.params = config.augment_params()
        self._epoch = -1
        self._perm: torch.Tensor | None = None
        self._draw: torch.Tensor | None = None
        if config.class_balance == "sampling":
            if targets is None or len(targets) != n_images:
                raise ValueError("class_balance='sampling' needs the training targets")
            self._draw = torch.as_tensor(balance.image_sampling_weights(targets, config.balance_power),
                                         dtype=torch.float64)

    def indices(self, update: int) -> torch.Tensor:
        if self._draw is not None:  # class-balanced: a seeded draw per update, with replacement
            gen = torch.Generator().manual_seed(_mix(self.config.seed, 3, update))
            drawn = torch.multinomial(self._draw, self.config.batch_size, replacement=True, generator=gen)
            return drawn.to(self.device)[self.rank :: self.world]
        epoch, pos = divmod(update, self.steps_per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(_mix(self.config.seed, 1, epoch))
            self._perm = torch.randperm(self.n, generator=gen).to(self.device)
            self._epoch = epoch
        b = self.config.batch_size
        return self._perm[pos * b : (pos + 1) * b][self.rank :: self.world]

    def theta(self, update: int) -> torch.Tensor | None:
        if self.params is None:
            return None
        gen = torch.Generator(device=self.device).manual_seed(_mix(self.config.seed, 2, update))
        theta = augment.random_theta(
            self.config.batch_size, self.config.resolution, self.params, generator=gen, device=self.device
        )
        return theta[self.rank :: self.world]


def train_step(net, optimizer, images, targets, theta, autocast,
               class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD update on 0-based ``targets``; returns (loss, number correct) as device
    tensors so the caller decides when to synchronize. ``class_weight`` weights the loss
    per class (``class_balance='loss'``); the loss is then the weighted mean."""
    with autocast:
        logits = net(images, theta)
    loss = F.cross_entropy(logits.float(), targets, weight=class_weight)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    correct = (logits.detach().argmax(1) == targets).sum()
    return loss.detach(), correct


@dataclass
class Evaluation:
    loss: float | None
    accuracy: float | None
    probs: np.ndarray | None


def evaluate(model: CrystalNet, images: torch.Tensor, targets: torch.Tensor, batch_size: int,
             autocast=contextlib.nullcontext(), keep_probs: bool = False) -> Evaluation:
    """Deterministic evaluation (central crop, no augmentation) against 0-based ``targets``."""
    if images.shape[0] == 0:
        return Evaluation(None, None, np.zeros((0, model.num_classes), np.float32) if keep_probs else None)
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    probs = []
    with eval_mode(model), torch.inference_mode():
        for start, logits in iter_logits(model, images, batch_size, autocast=autocast):
            y = targets[start : start + logits.shape[0]]
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            if keep_probs:
                probs.append(softmax_probs(logits).cpu())
    n = images.shape[0]
    return Evaluation(float(loss_sum) / n, int(correct) / n, torch.cat(probs).numpy() if keep_probs else None)


def crystal_auc(class_ids: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC AUC of crystal_prob (p3 + p5 + p7) for 'has crystal' from class ids 1..10;
    None when only one side (no crystals, or only crystals) is present."""
    class_ids = np.asarray(class_ids)
    if len(class_ids) == 0:
        return None
    return finite_or_none(binary_auc(crystal_truth(class_ids), crystal_probability(probs)), digits=None)


class Timer:
    """Training-interval timing: CUDA events on a GPU (no host sync per update),
    perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.start()

    def start(self) -> None:
        if self.cuda:
            self._begin = torch.cuda.Event(enable_timing=True)
            self._begin.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return self._begin.elapsed_time(end) / 1000.0
        return time.perf_counter() - self._t0
