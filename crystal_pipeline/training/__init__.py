"""Training CrystalNet on the pipeline's Parquet tensors (the paper's "Learning").

One public entry point, :func:`train`, used by the ``crystal-pipeline train``
command and by the Dagster ``crystalnet_model`` asset alike. The shape follows
the references named in STYLE.md: the whole config is one dataclass saved in
every checkpoint and artifact (nanoGPT), the training set lives on the device as
uint8 and augmentation happens there (airbench), checkpoints are written to a
temp file and ``os.replace``d (timm), evaluation under ``inference_mode``.

Repeatability is built in rather than hoped for: the batch order of update ``u``
comes from a permutation seeded by (seed, epoch) and its augmentation from a
generator seeded by (seed, u). Nothing depends on RNG state carried between
updates, so a resumed run, or a DDP run that splits each global batch across
ranks, sees exactly the batches and transforms an uninterrupted single-process
run would.
"""

from __future__ import annotations

import contextlib
import hashlib
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from crystal_pipeline.model import augment
from crystal_pipeline.tensors import training_data as tdata
from crystal_pipeline.classes import NUM_CLASSES
from crystal_pipeline.evaluation.metrics import binary_auc, crystal_probability
from crystal_pipeline.model import (
    ARTIFACT_FORMAT,
    CRYSTAL_INDICES,
    CrystalNet,
    build_model,
    init_weights,
    resolve_device,
)

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "crystalnet-checkpoint/1"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Defaults are the ``paper`` preset.

    The paper's momentum update (mu = 0.9 mu - lr * grad; theta += mu) is
    PyTorch's SGD with a constant learning rate. Weight decay (the paper's L2
    constant) applies to weights, not biases. ``init='kaiming'`` is the default
    because the paper's N(0, 0.01) does not train this network (see
    docs/model_and_training.md); ``init='paper'`` keeps it available.
    """

    preset: str = "paper"
    resolution: int = 128
    num_classes: int = NUM_CLASSES
    batch_size: int = 128
    updates: int = 150_000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: str = "constant"  # 'constant' (paper) or 'cosine' (to zero)
    warmup_updates: int = 0
    init: str = "kaiming"  # 'kaiming' or 'paper' (N(0, 0.01))
    augment: bool = True
    mirror_p: float = 0.5
    max_shift_px: float | None = None  # None: 8 px at 128, scaled with resolution
    max_rotation_deg: float = 60.0
    scale_min: float = 0.8
    scale_max: float = 1.2
    cn_eps: float = 0.1
    seed: int = 0
    eval_every: int = 2000
    checkpoint_every: int = 2000
    log_every: int = 100
    eval_batch_size: int = 512
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False
    deterministic: bool = False
    num_threads: int = 0  # CPU threads; 0 = all cores (divided among local ranks)
    max_updates_this_session: int = 0  # stop (with a checkpoint) after this many; 0 = no limit
    keep_checkpoint: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.resolution < 32 or self.resolution % 16:
            problems.append(f"resolution must be a multiple of 16 and >= 32, got {self.resolution}")
        for name in ("batch_size", "updates", "eval_every", "checkpoint_every", "log_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.lr_schedule not in ("constant", "cosine"):
            problems.append(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.init not in ("kaiming", "paper"):
            problems.append(f"init must be 'kaiming' or 'paper', got {self.init!r}")
        if not 0 < self.scale_min <= self.scale_max:
            problems.append("need 0 < scale_min <= scale_max")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    @classmethod
    def from_preset(cls, name: str = "paper", overrides: Mapping[str, Any] | None = None) -> "TrainConfig":
        """A preset with overrides applied (values may be strings, as from ``--set``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], "preset": name}).with_overrides(overrides or {})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """``{'preset': 'demo', 'lr': 0.02, ...}``: the preset, then the other keys."""
        values = dict(values)
        return cls.from_preset(values.pop("preset", "paper"), values)

    def with_overrides(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        hints = typing.get_type_hints(TrainConfig)
        unknown = sorted(set(overrides) - set(hints))
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; valid: {sorted(hints)}")
        changes = {k: _coerce(k, v, hints[k]) for k, v in overrides.items()}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity_key(self) -> str:
        """12 hex digits naming what this config computes: every field but
        :data:`RUNTIME_FIELDS`. A resume is keyed by this, so changing how a run is
        watched (``log_every``, ``max_updates_this_session``, ...) never restarts it."""
        identity = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]

    def augment_params(self) -> augment.AugmentParams | None:
        if not self.augment:
            return None
        return augment.AugmentParams(
            mirror_p=self.mirror_p,
            max_shift_px=self.max_shift_px,
            max_rotation_deg=self.max_rotation_deg,
            scale_min=self.scale_min,
            scale_max=self.scale_max,
        )

    def model_config(self) -> dict[str, Any]:
        params = self.augment_params()
        return {
            "num_classes": self.num_classes,
            "resolution": self.resolution,
            "cn_eps": self.cn_eps,
            "augment": None if params is None else dataclasses.asdict(params),
        }


PRESETS: dict[str, dict[str, Any]] = {
    # The paper: 128 px, SGD 0.01 / 0.9 / 1e-4, batch 128, 150,000 updates.
    "paper": {},
    # A few minutes on a 2-core CPU over the ~2,700-image demo archive at 64 px:
    # 900 x 32 = 28,800 images, about 11 epochs, at ~120 images/s on idle cores.
    # On the 4-plate synthetic archive 300 updates at lr 0.01 predicted only clear
    # and precipitate (val 0.741, crystal AUC 0.78); 900 at lr 0.02 reached 0.798 and
    # crystal AUC 0.889 (docs/model_and_training.md).
    "demo": {
        "resolution": 64,
        "batch_size": 32,
        "updates": 900,
        "lr": 0.02,
        "lr_schedule": "cosine",
        "warmup_updates": 20,
        "eval_every": 300,
        "checkpoint_every": 300,
        "log_every": 20,
        "eval_batch_size": 256,
    },
    # Seconds, for tests: the smallest resolution, a handful of updates.
    "smoke": {
        "resolution": 32,
        "batch_size": 16,
        "updates": 12,
        "lr": 0.01,
        "eval_every": 6,
        "checkpoint_every": 6,
        "log_every": 3,
        "eval_batch_size": 128,
    },
}

# Settings that may change between a run and its resumption: they change how a
# run is watched or executed, not what it computes.
RUNTIME_FIELDS = frozenset({
    "eval_every", "checkpoint_every", "log_every", "eval_batch_size", "amp", "channels_last",
    "compile", "deterministic", "num_threads", "max_updates_this_session", "keep_checkpoint",
})


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Turn ``--set`` strings (and loosely typed dict values) into the field's type."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null", ""):
            return None
        try:
            if base is bool:
                lowered = text.lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError(text)
            if base is int:
                number = float(text)
                if not number.is_integer():
                    raise ValueError(text)
                return int(number)
            if base is float:
                return float(text)
            return text
        except ValueError:
            raise ValueError(f"setting {name}: cannot read {value!r} as {base.__name__}") from None
    if value is None:
        if optional:
            return None
        raise ValueError(f"setting {name} cannot be None")
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ValueError(f"setting {name}: expected {base.__name__}, got {value!r}")
    return value


@dataclass
class TrainResult:
    """What a call to :func:`train` produced. ``finished`` is False when the run
    stopped at ``max_updates_this_session``; then ``path`` is None and the
    checkpoint holds the state to resume from."""

    path: Path | None
    finished: bool
    updates: int
    history: list[dict[str, Any]]
    val_accuracy: float | None
    crystal_auc: float | None
    images_per_s: float
    device: str
    seconds: float
    checkpoint_path: Path
    val_image_ids: list[str] = field(default_factory=list)
    val_labels: np.ndarray | None = field(default=None, repr=False)
    val_probs: np.ndarray | None = field(default=None, repr=False)
    model: CrystalNet | None = field(default=None, repr=False)


ProgressCallback = Callable[[dict[str, Any]], None]


# -- building blocks (also used by bench/train_throughput.py) ---------------------
def make_model(config: TrainConfig, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> CrystalNet:
    """Seeded construction: the same seed gives the same initial weights."""
    torch.manual_seed(config.seed)
    model = build_model(config.model_config())
    init_weights(model, config.init)
    if mean is not None and std is not None:
        model.set_normalization(mean, std)
    return model


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.SGD:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
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


def autocast_context(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _mix(seed: int, stream: int, index: int) -> int:
    """A well-spread 63-bit seed per (run seed, stream, index)."""
    high, low = np.random.SeedSequence([seed & 0xFFFFFFFF, stream, index]).generate_state(2)
    return (int(high) << 32 | int(low)) >> 1


class BatchPlan:
    """Stateless batches: update ``u``'s indices and transforms depend only on
    (seed, u), so resuming or splitting across ranks changes nothing."""

    def __init__(self, n_images: int, config: TrainConfig, device: torch.device, rank: int = 0, world: int = 1):
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

    def indices(self, update: int) -> torch.Tensor:
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


def train_step(net, optimizer, images, labels, theta, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD update; returns (loss, number correct) as device tensors so the
    caller decides when to synchronize."""
    with autocast:
        logits = net(images, theta)
    loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    correct = (logits.detach().argmax(1) == labels).sum()
    return loss.detach(), correct


@dataclass
class Evaluation:
    loss: float | None
    accuracy: float | None
    probs: np.ndarray | None


def evaluate(model: CrystalNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
             autocast=contextlib.nullcontext(), keep_probs: bool = False) -> Evaluation:
    """Deterministic evaluation (central crop, no augmentation)."""
    if images.shape[0] == 0:
        return Evaluation(None, None, np.zeros((0, model.num_classes), np.float32) if keep_probs else None)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    probs = []
    try:
        with torch.inference_mode():
            for start in range(0, images.shape[0], batch_size):
                x, y = images[start : start + batch_size], labels[start : start + batch_size]
                with autocast:
                    logits = model(x).float()
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(1) == y).sum()
                if keep_probs:
                    probs.append(torch.softmax(logits, 1).cpu())
    finally:
        model.train(was_training)
    n = images.shape[0]
    return Evaluation(
        float(loss_sum) / n, int(correct) / n, torch.cat(probs).numpy() if keep_probs else None
    )


def crystal_auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC AUC of crystal_prob (p3 + p5 + p7) for 'has crystal' from 0-based labels;
    None when only one side (no crystals, or only crystals) is present."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return None
    auc = binary_auc(np.isin(labels, CRYSTAL_INDICES), crystal_probability(probs))
    return None if math.isnan(auc) else auc


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then os.replace: a
    crash at any moment leaves either the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def checkpoint_path_for(out_path: str | os.PathLike) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".ckpt")


class _Timer:
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


# -- distributed -------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    created: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: torch.device) -> tuple[_Dist, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; more than one process means DDP
    (nccl on CUDA, gloo on CPU), initialized from the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    info = _Dist(
        rank=int(os.environ["RANK"]),
        world=world,
        local_rank=local_rank,
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        info.created = True
    return info, device


# -- the entry point -----------------------------------------------------------------
def train(
    config: TrainConfig | Mapping[str, Any],
    tensors_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    trained_on: str = "unknown",
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train CrystalNet and write the artifact to ``out_path`` (DESIGN.md's model.pt).

    ``tensors_dir`` is the data dir, its ``tensors`` folder or the ``r<res>``
    folder. With ``resume`` an existing checkpoint (``<out_path>.ckpt``) is
    continued to the same total number of updates; the config must agree with
    the checkpoint's except for runtime settings (logging, checkpoint cadence,
    session limit, speed flags). ``progress`` receives a dict at every log line
    (update, total, loss, train_acc, val_acc, images_per_s, eta_s) on rank 0.
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig.from_dict(config)
    dist_info, dev = _setup_distributed(resolve_device(device))
    try:
        return _train(config, Path(tensors_dir), Path(out_path), dev, dist_info, trained_on, resume, progress)
    finally:
        if dist_info.created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _configure_backend(config: TrainConfig, dev: torch.device, dist_info: _Dist) -> None:
    if dev.type == "cpu":
        threads = config.num_threads or max(1, (os.cpu_count() or 1) // dist_info.local_world)
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = not config.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _train(config, tensors_arg, out_path, dev, dist_info, trained_on, resume, progress) -> TrainResult:
    wall0 = time.perf_counter()
    _configure_backend(config, dev, dist_info)
    tensors_dir = tdata.resolve_tensors_dir(tensors_arg, config.resolution)
    ckpt_path = checkpoint_path_for(out_path)

    train_split = tdata.read_split(tensors_dir, "train", config.resolution)
    has_val = bool(tdata.split_files(tensors_dir, "val"))
    val_split = tdata.read_split(tensors_dir, "val", config.resolution) if has_val else None
    mean, std = tdata.read_stats(tensors_dir, config.resolution)
    digests = tdata.file_digests(tensors_dir) if dist_info.is_main else {}

    model = make_model(config, mean, std)
    optimizer = make_optimizer(model, config)
    start_update, history, train_seconds_before, images_before = 0, [], 0.0, 0

    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        _check_resumable(ckpt, config, digests, ckpt_path)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_update = int(ckpt["update"])
        history = list(ckpt["history"])
        train_seconds_before = float(ckpt["train_seconds"])
        images_before = int(ckpt["images_trained"])
        if dist_info.is_main:
            log.info("resuming %s at update %d/%d", ckpt_path, start_update, config.updates)
    elif resume and dist_info.is_main:
        log.info("no checkpoint at %s; starting from update 0", ckpt_path)

    model.to(dev)
    _move_optimizer_state(optimizer, dev)
    if dev.type == "cuda" and config.channels_last:
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    net: torch.nn.Module = model
    if config.compile:
        net = torch.compile(model)
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # The normalization buffers never change, so there is nothing to broadcast.
        net = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False)

    train_x = torch.from_numpy(train_split.pixels).to(dev)
    train_y = torch.from_numpy(train_split.labels).to(dev)
    val_x = torch.from_numpy(val_split.pixels).to(dev) if val_split else train_x[:0]
    val_y = torch.from_numpy(val_split.labels).to(dev) if val_split else train_y[:0]
    plan = BatchPlan(len(train_split), config, dev, dist_info.rank, dist_info.world)
    autocast = autocast_context(dev, config.amp)

    end_update = config.updates
    if config.max_updates_this_session:
        end_update = min(config.updates, start_update + config.max_updates_this_session)
    if dist_info.is_main:
        log.info(
            "training CrystalNet r%d on %d images (%d val), preset %s, updates %d..%d of %d, batch %d, "
            "device %s x%d", config.resolution, len(train_split), len(val_y), config.preset, start_update,
            end_update, config.updates, config.batch_size, dev, dist_info.world,
        )

    def save_checkpoint(update: int) -> None:
        if not dist_info.is_main:
            return
        atomic_save({
            "format": CHECKPOINT_FORMAT,
            "config": config.to_dict(),
            "state_dict": _cpu_state(model),
            "optimizer": optimizer.state_dict(),
            "update": update,
            "history": history,
            "train_seconds": train_seconds,
            "images_trained": images_trained,
            "tensor_files": digests,
        }, ckpt_path)

    train_seconds, images_trained = train_seconds_before, images_before
    loss_acc = torch.zeros((), device=dev)
    correct_acc = torch.zeros((), device=dev, dtype=torch.long)
    seen = 0
    interval_updates = 0
    last_val_acc = history[-1]["val_acc"] if history else None
    session_wall0, session_updates = time.perf_counter(), 0
    model.train()
    timer = _Timer(dev)
    for update in range(start_update, end_update):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, update)
        idx = plan.indices(update)
        loss, correct = train_step(net, optimizer, train_x[idx], train_y[idx], plan.theta(update), autocast)
        loss_acc += loss
        correct_acc += correct
        seen += idx.shape[0]
        interval_updates += 1
        session_updates += 1
        done = update + 1
        at_log = done % config.log_every == 0
        at_eval = done % config.eval_every == 0 or done == config.updates
        at_ckpt = done % config.checkpoint_every == 0 or done == end_update
        if not (at_log or at_eval or at_ckpt):
            continue
        seconds = timer.stop()
        train_seconds += seconds
        interval_images = interval_updates * config.batch_size
        images_trained += interval_images
        stats = {
            "update": done,
            "total": config.updates,
            "loss": float(loss_acc) / interval_updates,
            "train_acc": int(correct_acc) / max(1, seen),
            "images_per_s": interval_images / max(seconds, 1e-9),
            "lr": lr_at(config, update),
        }
        loss_acc.zero_()
        correct_acc.zero_()
        seen, interval_updates = 0, 0
        if at_eval and dist_info.is_main:
            ev = evaluate(model, val_x, val_y, config.eval_batch_size, autocast)
            stats.update(val_loss=ev.loss, val_acc=ev.accuracy)  # None without a val split
            last_val_acc = ev.accuracy
        if at_eval and dist_info.is_main:
            history.append({**stats, "seconds": train_seconds})
        if at_ckpt:
            save_checkpoint(done)
        if dist_info.is_main:
            rate = (time.perf_counter() - session_wall0) / session_updates
            stats["eta_s"] = rate * (config.updates - done)
            stats.setdefault("val_acc", last_val_acc)
            _log_progress(stats)
            if progress is not None:
                progress(dict(stats))
        timer.start()

    finished = end_update >= config.updates
    images_per_s = images_trained / train_seconds if train_seconds > 0 else 0.0
    result = TrainResult(
        path=None, finished=finished, updates=end_update, history=history, val_accuracy=last_val_acc,
        crystal_auc=None, images_per_s=images_per_s, device=str(dev), seconds=time.perf_counter() - wall0,
        checkpoint_path=ckpt_path, model=model,
    )
    if finished and dist_info.is_main:
        final = evaluate(model, val_x, val_y, config.eval_batch_size, autocast, keep_probs=True)
        result.val_accuracy = final.accuracy
        result.val_labels = val_split.labels if val_split else np.zeros(0, np.int64)
        result.val_probs = final.probs
        result.val_image_ids = list(val_split.image_ids) if val_split else []
        result.crystal_auc = crystal_auc(result.val_labels, final.probs)
        atomic_save({
            "format": ARTIFACT_FORMAT,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model_config": config.model_config(),
            "preset": config.preset,
            "config": config.to_dict(),
            "state_dict": _cpu_state(model),
            "normalization": {"mean": torch.from_numpy(mean), "std": torch.from_numpy(std)},
            "history": history,
            "tensors_sha256": tdata.combined_digest(digests),
            "tensor_files": digests,
            "trained_on": trained_on,
            "val_accuracy": result.val_accuracy,
            "crystal_auc": result.crystal_auc,
            "val_predictions": {"image_ids": result.val_image_ids, "probs": torch.from_numpy(final.probs)},
            "updates": end_update,
            "train_seconds": train_seconds,
            "images_per_s": images_per_s,
            "device": str(dev),
            "world_size": dist_info.world,
            "torch_version": str(torch.__version__),
        }, Path(out_path))
        result.path = Path(out_path)
        if not config.keep_checkpoint and ckpt_path.exists():
            ckpt_path.unlink()
        log.info(
            "wrote %s: val_acc %s, crystal AUC %s, %.1f images/s", out_path,
            _fmt(result.val_accuracy), _fmt(result.crystal_auc), images_per_s,
        )
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
    result.seconds = time.perf_counter() - wall0
    model.eval()
    return result


def _check_resumable(ckpt: Mapping[str, Any], config: TrainConfig, digests: dict[str, str], path: Path) -> None:
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a CrystalNet training checkpoint")
    saved = ckpt["config"]
    current = config.to_dict()
    differing = sorted(k for k in current if k not in RUNTIME_FIELDS and saved.get(k) != current[k])
    if differing:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}" for k in differing)
        raise ValueError(f"cannot resume {path}: the config changed ({detail})")
    if digests and ckpt.get("tensor_files") and ckpt["tensor_files"] != digests:
        raise ValueError(f"cannot resume {path}: the training tensors changed since it was written")


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                state[key] = value.to(device)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _log_progress(stats: Mapping[str, Any]) -> None:
    eta = stats.get("eta_s") or 0.0
    log.info(
        "update %d/%d  loss %.4f  train_acc %.3f  val_acc %s  %.1f img/s  lr %.4g  ETA %s",
        stats["update"], stats["total"], stats["loss"], stats["train_acc"], _fmt(stats.get("val_acc")),
        stats["images_per_s"], stats["lr"], _duration(eta),
    )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
