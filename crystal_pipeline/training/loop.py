"""Training CrystalNet on the pipeline's Parquet tensors (the paper's "Learning"): :func:`train`.

Read top to bottom it is the run: :func:`load_data` (tensors and stats onto the device),
:func:`build_session` (model, optimizer, resume from the checkpoint, device placement,
DDP), :func:`train_updates` (the updates of this session with their logging,
evaluation and checkpoints) and :func:`finish` (final evaluation and the artifact).
The shape follows the references named in STYLE.md: vision's reference trainer for the
named steps, nanoGPT for the config saved in every checkpoint and artifact, airbench
for the training set held on the device as uint8 with augmentation there.

Class ids are the paper's 1..10 everywhere, including in :class:`TrainResult`; the
loss alone works on 0-based indices, built here as ``class_ids - 1``.
"""

from __future__ import annotations

import dataclasses

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from crystal_pipeline import tensors
from crystal_pipeline.model import CrystalNet, resolve_device, save_artifact
from crystal_pipeline.model.precision import PrecisionChoice
from crystal_pipeline.training.checkpoint import (
    RunState,
    checkpoint_path_for,
    load_checkpoint,
    move_optimizer_state,
    save_checkpoint,
)
from crystal_pipeline.training import balance, warm_start
from crystal_pipeline.training.config import TrainConfig
from crystal_pipeline.training.distributed import (
    DistInfo,
    barrier,
    setup_distributed,
    teardown_distributed,
    wrap_ddp,
)
from crystal_pipeline.training.steps import (
    BatchPlan,
    Timer,
    autocast_context,
    crystal_auc,
    evaluate,
    lr_at,
    make_model,
    make_optimizer,
    model_config,
    train_step,
    training_precision,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """What a call to :func:`train` produced. ``finished`` is False when the run
    stopped at ``max_updates_this_session``; then ``path`` is None, no model file is
    written, and ``checkpoint_path`` holds the state to resume from.
    ``val_class_ids`` are the paper's ids 1..10, row-aligned with ``val_probs``."""

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
    val_class_ids: np.ndarray | None = field(default=None, repr=False)
    val_probs: np.ndarray | None = field(default=None, repr=False)
    model: CrystalNet | None = field(default=None, repr=False)
    precision: str = "fp32"  # the resolved training precision ('mixed' when sessions differed)


@dataclass
class TrainingData:
    """The splits and stats a run trains on, and their content fingerprint (rank 0 only)."""

    tensors_dir: Path
    train: tensors.Split
    val: tensors.Split | None
    mean: np.ndarray
    std: np.ndarray
    fingerprint: str | None

    @property
    def in_channels(self) -> int:
        """2 when the tensors carry UV pictures (a fused model is trained), else 1."""
        return self.train.in_channels


@dataclass
class Session:
    """Everything the updates of one session use, on the device."""

    config: TrainConfig
    device: torch.device
    dist: DistInfo
    model: CrystalNet
    optimizer: torch.optim.Optimizer
    net: torch.nn.Module  # the model as trained: compiled and/or DDP-wrapped
    plan: BatchPlan
    precision: PrecisionChoice  # this session's, resolved on its machine
    autocast: Any
    train_x: torch.Tensor
    train_y: torch.Tensor  # 0-based targets for the loss
    val_x: torch.Tensor
    val_y: torch.Tensor
    class_weight: torch.Tensor | None = None  # per-class loss weights (class_balance='loss')


def train(
    config: TrainConfig | Mapping[str, Any],
    tensors_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    trained_on: str = "unknown",
    resume: bool = False,
    progress: ProgressCallback | None = None,
    init_artifact: str | os.PathLike | None = None,
) -> TrainResult:
    """Train CrystalNet and write the artifact to ``out_path`` (DESIGN.md's model.pt).

    ``tensors_dir`` is the data dir, its ``tensors`` folder or the ``r<res>``
    folder. With ``resume`` an existing checkpoint (``<out_path>.ckpt``) is
    continued to the same total number of updates; the config must agree with
    the checkpoint's except for runtime settings (logging, evaluation and checkpoint
    cadence, session limit, speed flags), and the result is bit-identical to an
    uninterrupted run. With ``max_updates_this_session`` the run stops there with a
    checkpoint and returns ``finished=False`` without writing ``out_path``.
    ``progress`` receives a dict at every log line (update, total, loss, train_acc,
    val_acc, images_per_s, eta_s) on rank 0. With ``config.init_from`` the run fine-tunes
    the model in ``init_artifact`` (training/warm_start.py: its weights and normalization,
    not today's stats).
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig.from_dict(config)
    warm_start.check_init(config, init_artifact)
    dist_info, dev = setup_distributed(resolve_device(device))
    try:
        parent = warm_start.load_parent(init_artifact, config) if init_artifact is not None else None
        return _run(config, Path(tensors_dir), Path(out_path), dev, dist_info, trained_on, resume, progress, parent)
    finally:
        teardown_distributed(dist_info)


def _run(config: TrainConfig, tensors_arg: Path, out_path: Path, dev: torch.device, dist_info: DistInfo,
         trained_on: str, resume: bool, progress: ProgressCallback | None,
         parent: warm_start.Parent | None = None) -> TrainResult:
    wall0 = time.perf_counter()
    configure_backend(config, dev, dist_info)
    data = load_data(tensors_arg, config.resolution, with_fingerprint=dist_info.is_main, inputs=config.inputs)
    if parent is not None:  # the parent's normalization, not today's stats
        data.mean, data.std = parent.mean, parent.std
    ckpt_path = checkpoint_path_for(out_path)
    session, state = build_session(config, data, dev, dist_info, ckpt_path if resume else None, parent)
    end_update = config.updates
    if config.max_updates_this_session:
        end_update = min(config.updates, state.update + config.max_updates_this_session)
    if dist_info.is_main:
        log.info(
            "training CrystalNet r%d on %d images (%d val), preset %s, updates %d..%d of %d, batch %d, "
            "device %s x%d, %s (%s)", config.resolution, len(data.train), len(session.val_y), config.preset,
            state.update, end_update, config.updates, config.batch_size, dev, dist_info.world,
            session.precision.precision, session.precision.reason,
        )
    train_updates(session, state, end_update, ckpt_path, data.fingerprint, progress)

    result = TrainResult(
        path=None, finished=end_update >= config.updates, updates=end_update, history=state.history,
        val_accuracy=state.last_val_acc, crystal_auc=None, images_per_s=_images_per_s(state), device=str(dev),
        seconds=time.perf_counter() - wall0, checkpoint_path=ckpt_path, model=session.model,
        precision=run_precision(state),
    )
    if result.finished and dist_info.is_main:
        finish(session, data, state, result, out_path, trained_on, parent)
    barrier(dist_info)
    result.seconds = time.perf_counter() - wall0
    session.model.eval()
    return result


def configure_backend(config: TrainConfig, dev: torch.device, dist_info: DistInfo) -> None:
    """CPU threads (shared among local ranks), cuDNN autotuning and TF32, determinism."""
    if dev.type == "cpu":
        threads = config.num_threads or max(1, (os.cpu_count() or 1) // dist_info.local_world)
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = not config.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def load_data(tensors_arg: str | os.PathLike, resolution: int, *, with_fingerprint: bool,
              inputs: str = "auto") -> TrainingData:
    """Both splits (val may be absent) and the stats at ``resolution``; the tensors'
    content fingerprint when ``with_fingerprint`` (it hashes every pixel once). ``inputs``
    'visible' drops UV pictures the tensors carry (``TrainConfig.inputs``): the visible model
    then trains on, and fingerprints, exactly what a visible-only archive of those drops gives."""
    tensors_dir = tensors.resolve_tensors_dir(tensors_arg, resolution)
    train_split = tensors.read_split(tensors_dir / "train", resolution)
    val_dir = tensors_dir / "val"
    val_split = tensors.read_split(val_dir, resolution) if tensors.part_files(val_dir) else None
    if inputs == "visible":
        train_split = dataclasses.replace(train_split, uv=None)
        val_split = None if val_split is None else dataclasses.replace(val_split, uv=None)
    if val_split is not None and len(val_split) and val_split.in_channels != train_split.in_channels:
        raise tensors.TensorDataError(f"{tensors_dir}: train has {train_split.in_channels} channel(s), "
                                      f"val {val_split.in_channels}; prepare the tensors again")
    mean, std = tensors.load_channel_stats(tensors_dir / tensors.STATS_FILE, resolution, train_split.in_channels)
    fingerprint = None
    if with_fingerprint:
        splits = {"train": train_split, **({"val": val_split} if val_split is not None else {})}
        fingerprint = tensors.fingerprint_splits(splits)
    return TrainingData(tensors_dir, train_split, val_split, mean, std, fingerprint)


def build_session(config: TrainConfig, data: TrainingData, dev: torch.device, dist_info: DistInfo,
                  resume_from: Path | None, parent: warm_start.Parent | None = None) -> tuple[Session, RunState]:
    """The seeded model (or the ``parent``'s weights) and optimizer, continued from
    ``resume_from`` when that checkpoint exists, placed on the device (channels_last, compile, DDP as configured)."""
    model = make_model(config, data.mean, data.std, in_channels=data.in_channels)
    if parent is not None:
        warm_start.apply(model, parent, config.freeze_features)
    optimizer = make_optimizer(model, config)  # only the parameters that learn
    state = RunState()
    if resume_from is not None and resume_from.is_file():
        state = load_checkpoint(resume_from, config, model, optimizer, data.fingerprint)
        if dist_info.is_main:
            log.info("resuming %s at update %d/%d", resume_from, state.update, config.updates)
    elif resume_from is not None and dist_info.is_main:
        log.info("no checkpoint at %s; starting from update 0", resume_from)

    model.to(dev)
    move_optimizer_state(optimizer, dev)
    if dev.type == "cuda" and config.channels_last:
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    net: torch.nn.Module = torch.compile(model) if config.compile else model
    net = wrap_ddp(net, dev, dist_info)

    train_x = torch.from_numpy(data.train.channels()).to(dev)
    train_y = torch.from_numpy(data.train.class_ids - 1).to(dev)
    val_x = torch.from_numpy(data.val.channels()).to(dev) if data.val is not None else train_x[:0]
    val_y = torch.from_numpy(data.val.class_ids - 1).to(dev) if data.val is not None else train_y[:0]
    targets = data.train.class_ids - 1
    plan = BatchPlan(len(data.train), config, dev, dist_info.rank, dist_info.world, targets=targets)
    precision = training_precision(config, dev)
    record_precision(state, precision, log_warnings=dist_info.is_main)
    session = Session(config, dev, dist_info, model, optimizer, net, plan, precision,
                      autocast_context(dev, precision.precision),
                      train_x, train_y, val_x, val_y,
                      balance.loss_weights(config.class_balance, targets, config.balance_power, dev))
    return session, state


def record_precision(state: RunState, choice: PrecisionChoice, *, log_warnings: bool = True) -> None:
    """Note in ``state`` the precision the updates from ``state.update`` on run in. A resume in
    another precision than the checkpoint's is allowed (``auto`` resolves per machine) but
    warned about: the result is then not bit-identical to an uninterrupted run in either."""
    last = state.precision_log[-1]["precision"] if state.precision_log else None
    if log_warnings and choice.emulated:
        log.warning("training in bf16 on a CPU without bf16 units: emulated, slower than fp32 (%s)", choice.reason)
    if last == choice.precision:
        return
    if last is not None and log_warnings:
        log.warning("resuming at update %d in %s, the checkpoint's updates ran in %s (%s): the run will not be "
                    "bit-identical to an uninterrupted one", state.update, choice.precision, last, choice.reason)
    state.precision_log.append({"from_update": state.update, "precision": choice.precision})


def run_precision(state: RunState) -> str:
    """The precision a run trained in: one of the log's, or 'mixed' when sessions differed."""
    seen = {entry["precision"] for entry in state.precision_log}
    return seen.pop() if len(seen) == 1 else "mixed"


class _Interval:
    """Loss, accuracy and time accumulated on the device between two report points, so
    the host synchronizes only there."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0
        self.updates = 0
        self.timer = Timer(device)

    def add(self, loss: torch.Tensor, correct: torch.Tensor, images: int) -> None:
        self.loss += loss
        self.correct += correct
        self.seen += images
        self.updates += 1

    def close(self, config: TrainConfig, update: int, state: RunState) -> dict[str, Any]:
        """The interval's stats after 0-based ``update``; adds its time and images to ``state``."""
        seconds = self.timer.stop()
        state.train_seconds += seconds
        images = self.updates * config.batch_size
        state.images_trained += images
        stats = {
            "update": update + 1,
            "total": config.updates,
            "loss": float(self.loss) / self.updates,
            "train_acc": int(self.correct) / max(1, self.seen),
            "images_per_s": images / max(seconds, 1e-9),
            "lr": lr_at(config, update),
        }
        self.loss.zero_()
        self.correct.zero_()
        self.seen, self.updates = 0, 0
        return stats


def train_updates(session: Session, state: RunState, end_update: int, ckpt_path: Path,
                  tensors_fingerprint: str | None, progress: ProgressCallback | None) -> None:
    """Updates ``state.update`` .. ``end_update`` - 1, with a log line every ``log_every``,
    an evaluation every ``eval_every`` and a checkpoint every ``checkpoint_every`` updates
    and at the session's end. Only rank 0 evaluates, writes and reports."""
    config, model, optimizer, plan = session.config, session.model, session.optimizer, session.plan
    is_main = session.dist.is_main
    start_update = state.update
    interval = _Interval(session.device)
    session_wall0 = time.perf_counter()
    model.train()
    for update in range(start_update, end_update):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, update)
        idx = plan.indices(update)
        loss, correct = train_step(session.net, optimizer, session.train_x[idx], session.train_y[idx],
                                   plan.theta(update), session.autocast, session.class_weight)
        interval.add(loss, correct, idx.shape[0])
        done = state.update = update + 1
        at_log = done % config.log_every == 0
        at_eval = done % config.eval_every == 0 or done == config.updates
        at_ckpt = done % config.checkpoint_every == 0 or done == end_update
        if not (at_log or at_eval or at_ckpt):
            continue
        stats = interval.close(config, update, state)
        if at_eval and is_main:
            ev = evaluate(model, session.val_x, session.val_y, config.eval_batch_size, session.autocast)
            stats.update(val_loss=ev.loss, val_acc=ev.accuracy)  # None without a val split
            state.history.append({**stats, "seconds": state.train_seconds})
        if at_ckpt and is_main:
            save_checkpoint(ckpt_path, config, model, optimizer, state, tensors_fingerprint)
        if is_main:
            rate = (time.perf_counter() - session_wall0) / (done - start_update)
            stats["eta_s"] = rate * (config.updates - done)
            stats.setdefault("val_acc", state.last_val_acc)
            _log_progress(stats)
            if progress is not None:
                progress(dict(stats))
        interval.timer.start()


def finish(session: Session, data: TrainingData, state: RunState, result: TrainResult, out_path: Path,
           trained_on: str, parent: warm_start.Parent | None = None) -> None:
    """Rank 0 at the last update: evaluate with probabilities, fill ``result``, write the
    artifact, and drop the checkpoint unless ``keep_checkpoint``."""
    config = session.config
    final = evaluate(session.model, session.val_x, session.val_y, config.eval_batch_size, session.autocast,
                     keep_probs=True)
    result.val_accuracy = final.accuracy
    result.val_class_ids = data.val.class_ids if data.val is not None else np.zeros(0, np.int64)
    result.val_probs = final.probs
    result.val_image_ids = list(data.val.image_ids) if data.val is not None else []
    result.crystal_auc = crystal_auc(result.val_class_ids, final.probs)
    save_artifact(
        out_path, session.model, model_config=model_config(config, data.in_channels), preset=config.preset,
        config=config.to_dict(),
        normalization={"mean": torch.from_numpy(data.mean), "std": torch.from_numpy(data.std)},
        history=state.history, tensors_fingerprint=data.fingerprint, trained_on=trained_on,
        crop=data.train.crop,  # the square labelling must cut (preprocessing.crop)
        val_accuracy=result.val_accuracy, crystal_auc=result.crystal_auc,
        val_predictions={"image_ids": result.val_image_ids, "probs": torch.from_numpy(final.probs)},
        updates=result.updates, train_seconds=state.train_seconds, images_per_s=result.images_per_s,
        device=str(session.device), world_size=session.dist.world, torch_version=str(torch.__version__),
        precision=result.precision, precision_reason=session.precision.reason, precision_log=state.precision_log,
        **warm_start.provenance(parent, len(data.train)),
    )
    result.path = out_path
    ckpt_path = checkpoint_path_for(out_path)
    if not config.keep_checkpoint and ckpt_path.exists():
        ckpt_path.unlink()
    log.info("wrote %s: val_acc %s, crystal AUC %s, %.1f images/s", out_path, _fmt(result.val_accuracy),
             _fmt(result.crystal_auc), result.images_per_s)


def _images_per_s(state: RunState) -> float:
    return state.images_trained / state.train_seconds if state.train_seconds > 0 else 0.0


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
