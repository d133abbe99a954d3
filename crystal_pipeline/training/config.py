"""What a training run computes: :class:`TrainConfig`, its presets, and which fields are runtime-only.

The whole config is one frozen dataclass saved in every checkpoint and artifact
(nanoGPT's habit), so a resumed run and a loaded model know exactly how they were made.
:data:`RUNTIME_FIELDS` change how a run is watched or executed, never its numbers: they
may differ between a run and its resumption, and :meth:`TrainConfig.identity_key`
leaves them out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from crystal_pipeline.classes import NUM_CLASSES
from crystal_pipeline.model import augment
from crystal_pipeline.model.precision import PRECISIONS, PrecisionChoice, choose_precision
from crystal_pipeline.training import balance


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
    class_balance: str = "none"  # 'none' (paper), 'sampling' or 'loss' (training/balance.py)
    balance_power: float = 0.5  # class weight n_c ** -power; 1 = every class equal, 0 = none
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
    # Arithmetic of the forward passes (training/steps.py training_precision): 'auto' is bf16
    # autocast on CUDA and on CPUs with AMX/AVX512-BF16, fp32 elsewhere; 'fp32'; 'bf16' (on a CPU
    # without bf16 units: emulated, slow, with a warning). Resolved per session on its machine
    # and recorded in the checkpoint and the artifact ('precision').
    precision: str = "auto"
    amp: bool = True  # older switch: False means fp32 under precision='auto' (docs/decisions.md)
    channels_last: bool = True  # CUDA only
    compile: bool = False
    deterministic: bool = False
    num_threads: int = 0  # CPU threads; 0 = all cores (divided among local ranks)
    # Which pictures the model reads (issue 20 item 3): 'auto' trains a fused visible + UV model
    # when the tensors carry UV pictures and a visible one otherwise; 'visible' reads the visible
    # picture only, even from UV tensors, so one UV archive gives the visible model that labels
    # plates without UV (plates.model_choice) as well as the fused one.
    inputs: str = "auto"
    max_updates_this_session: int = 0  # stop (with a checkpoint) after this many; 0 = no limit
    keep_checkpoint: bool = False
    # Fine-tuning (training/warm_start.py): the model version this run starts from (None:
    # from scratch). Part of the identity, so a fine-tune never resumes a from-scratch
    # checkpoint or one of another parent. The caller resolves 'production' to a version
    # and hands the trainer the parent's artifact file.
    init_from: str | None = None
    freeze_features: bool = False  # fine-tune only the fully connected layers

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
        if self.class_balance not in balance.MODES:
            problems.append(f"class_balance must be one of {balance.MODES}, got {self.class_balance!r}")
        if not 0 <= self.balance_power <= 1:
            problems.append(f"balance_power must lie in [0, 1], got {self.balance_power}")
        if not 0 < self.scale_min <= self.scale_max:
            problems.append("need 0 < scale_min <= scale_max")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "bf16" and not self.amp:
            problems.append("precision='bf16' contradicts amp=false (amp=false means fp32); drop amp")
        if self.inputs not in INPUTS:
            problems.append(f"inputs must be one of {', '.join(INPUTS)}, got {self.inputs!r}")
        if self.freeze_features and not self.init_from:
            problems.append("freeze_features needs init_from: frozen random convolutions learn nothing")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    @classmethod
    def from_preset(cls, name: str = "paper", overrides: Mapping[str, Any] | None = None, *,
                    device_type: str | None = None, cpu_flags: Iterable[str] | None = None) -> "TrainConfig":
        """A preset with overrides applied (values may be strings, as from ``--set``).

        ``device_type`` ('cpu', 'cuda', ...): the device this run will train on, when the caller
        knows it. A preset with a bf16 budget (:data:`BF16_UPDATES`) then takes it where the run
        trains in bf16 there (CUDA, or a CPU whose flags, ``cpu_flags`` or /proc/cpuinfo's, show
        bf16 units), unless ``updates`` is overridden. The budget is resolved here, once, and
        recorded as the config's ``updates``, so a run's identity and its resumption do not
        depend on the machine that resumes it."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        config = cls(**{**PRESETS[name], "preset": name}).with_overrides(overrides or {})
        if device_type is None or name not in BF16_UPDATES or "updates" in (overrides or {}):
            return config
        choice = config.precision_choice(device_type, cpu_flags)
        if choice.precision == "bf16" and not choice.emulated:
            return dataclasses.replace(config, updates=BF16_UPDATES[name])
        return config

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """``{'preset': 'demo', 'lr': 0.02, ...}``: the preset, then the other keys."""
        values = dict(values)
        return cls.from_preset(values.pop("preset", "paper"), values)

    def precision_choice(self, device_type: str, cpu_flags: Iterable[str] | None = None) -> PrecisionChoice:
        """The precision a run of this config trains in on ``device_type``: ``precision``
        resolved by :func:`~crystal_pipeline.model.precision.choose_precision` (``cpu_flags``:
        the CPU's, from /proc/cpuinfo by default), except that ``amp=False`` under ``auto``
        keeps meaning fp32. One rule for the session's arithmetic
        (:func:`~crystal_pipeline.training.steps.training_precision`) and the preset's budget."""
        if self.precision == "auto" and not self.amp:
            return PrecisionChoice("fp32", "amp=false: fp32")
        return choose_precision(self.precision, device_type, cpu_flags, fp32_path="fp32")

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


#: ``TrainConfig.inputs``: what a model reads from the tensors.
INPUTS = ("auto", "visible")

PRESETS: dict[str, dict[str, Any]] = {
    # The paper: 128 px, SGD 0.01 / 0.9 / 1e-4, batch 128, 150,000 updates.
    "paper": {},
    # A few minutes on a 2-core CPU over the ~2,700-image demo archive at 64 px:
    # 900 x 32 = 28,800 images, about 11 epochs, at ~120 images/s on idle cores.
    # On the 4-plate synthetic archive 300 updates at lr 0.01 predicted only clear
    # and precipitate (val 0.741, crystal AUC 0.78); 900 at lr 0.02 reached 0.798 and
    # crystal AUC 0.889 (docs/model_and_training.md).
    # Class-balanced batches (square-root weights) since issue 9: on the demo archive's test
    # split they raised balanced accuracy 0.272 -> 0.332 and accuracy 0.688 -> 0.704 at the same
    # crystal AUC (0.801 -> 0.805); full balance (power 1) and loss weighting did worse
    # (docs/model_and_training.md "Class balance", bench/regime.py).
    "demo": {
        "class_balance": "sampling",
        "balance_power": 0.5,
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
    # Fine-tuning a demo-preset model on a lab's own labels (init_from says which model):
    # the demo preset's batch and resolution, a sixth of its updates at a fifth of its
    # learning rate, so the parent's features are adapted rather than overwritten. About
    # 2 CPU minutes (200 updates took 2.6 under load; bench/finetune.py, docs/benchmarks.md). Set
    # resolution to the parent's when it was not trained at 64 px (the asset does).
    "finetune": {
        "resolution": 64,
        "batch_size": 32,
        "updates": 150,
        "lr": 0.004,
        "lr_schedule": "cosine",
        "warmup_updates": 10,
        "eval_every": 50,
        "checkpoint_every": 50,
        "log_every": 10,
        "eval_batch_size": 256,
    },
    # Seconds, for tests: the smallest resolution, a handful of updates; fp32, so that the
    # tests' numbers do not depend on whether the box has bf16 units (precision='auto').
    "smoke": {
        "precision": "fp32",
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

#: A preset's number of updates where its run trains in bf16 (CUDA, or a CPU with AMX or
#: AVX512-BF16 units; ``TrainConfig.from_preset(device_type=...)``): the time bf16 saves per update
#: (about half, issue 19) spent on more updates in the same minutes (issue 17 item 5). A CPU
#: without bf16 units keeps the preset's ``updates``: there the demo's 900 already take most of
#: ``make demo``'s 10 minutes. Chosen on the validation split (docs/benchmarks.md, "The demo's
#: budget in bf16").
BF16_UPDATES: dict[str, int] = {"demo": 1800}


def updates_reason(preset: str, updates: int, *, overridden: bool) -> str:
    """One line for a run's metadata: where its number of updates came from, so that a reader of
    two demo runs, one on a CPU with bf16 units and one without, sees why they differ."""
    if overridden:
        return f"{updates:,}: set in the run's overrides"
    plain = TrainConfig.from_preset(preset).updates
    if updates != plain and BF16_UPDATES.get(preset) == updates:
        return f"{updates:,}: the {preset} preset's budget where it trains in bf16 ({plain:,} in fp32)"
    return f"{updates:,}: the {preset} preset's"


# Settings that may change between a run and its resumption: they change how a
# run is watched or executed, not what it computes. 'precision' (and 'amp') do change the
# numbers, in the last bits: they are here because 'auto' resolves on each session's machine,
# and a run may resume elsewhere. The checkpoint records each session's resolved precision
# and a resume in another one warns (training/loop.py); for a given precision resume is
# bit-exact.
RUNTIME_FIELDS = frozenset({
    "eval_every", "checkpoint_every", "log_every", "eval_batch_size", "amp", "precision", "channels_last",
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
