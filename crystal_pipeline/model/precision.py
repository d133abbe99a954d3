"""Which arithmetic a plate is labelled in: fp32 or bf16, chosen at run time from the CPU.

``crystal-pipeline label --precision`` and the plate asset's ``precision`` config take
``auto``, ``fp32`` or ``bf16``. ``auto`` picks bf16 on a CPU only where the processor has
bf16 multiply units (Intel AMX or AVX512-BF16: oneDNN's bf16 convolutions there run 5-8x
the fp32 FLOP rate, issue 19), and otherwise the exact fp32 Winograd path of
:mod:`crystal_pipeline.model.fast_cpu`. On such a CPU without those units (an AVX2-only
AMD box) bf16 is emulated in software and measured about 8x *slower* than fp32, so ``auto``
never picks it there; a forced ``bf16`` still runs, with a warning, because the agreement
between the two precisions is the same number whichever CPU computes it
(docs/decisions.md). On CUDA, ``auto`` keeps the existing bf16 autocast path.

The choice is decided once per plate and reported (:class:`PrecisionChoice`) so that a
plate's metadata, report and ``hits.csv`` sidecar say what arithmetic produced its labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PRECISIONS = ("auto", "fp32", "bf16")
#: /proc/cpuinfo flags of bf16 multiply units that oneDNN uses for bf16 convolutions and matmuls.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a plate is labelled in and why (``reason`` is one short sentence)."""

    precision: str  # 'fp32' or 'bf16'
    reason: str
    emulated: bool = False  # bf16 forced on a CPU without bf16 units: correct but slow


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (empty where there is no /proc/cpuinfo)."""
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16_units(flags: Iterable[str] | None = None) -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16).

    Why a run-time check and not a build or config flag: the same install runs on Intel
    boxes with AMX, where bf16 is several times faster than fp32, and on AVX2-only AMD
    boxes, where oneDNN emulates bf16 about 8x slower than fp32. ``flags`` defaults to
    /proc/cpuinfo's; where that file is missing (not Linux) torch's own probe decides.
    """
    found = cpu_flags() if flags is None else frozenset(flags)
    if found or flags is not None:
        return any(flag in found for flag in BF16_FLAGS)
    try:  # pragma: no cover - non-Linux
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover
        return False


def choose_precision(requested: str = "auto", device_type: str = "cpu",
                     flags: Iterable[str] | None = None, *,
                     fp32_path: str = "fp32 Winograd path") -> PrecisionChoice:
    """The precision to label (or train, :func:`crystal_pipeline.training.steps.training_precision`)
    in on ``device_type`` ('cpu', 'cuda', ...) for a ``requested`` one; ``fp32_path`` names
    what ``auto`` falls back to on a CPU without bf16 units, in the reason."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if device_type == "cuda":
        if requested == "fp32":
            return PrecisionChoice("fp32", "fp32 asked for")
        return PrecisionChoice("bf16", "CUDA: bf16 autocast on tensor cores"
                               + (" (auto)" if requested == "auto" else ""))
    if device_type != "cpu":
        if requested == "bf16":
            raise ValueError(f"bf16 labelling is implemented for cpu and cuda, not {device_type}")
        return PrecisionChoice("fp32", f"{device_type}: fp32")
    units = cpu_has_bf16_units(flags)
    if requested == "fp32":
        return PrecisionChoice("fp32", "fp32 asked for")
    if requested == "bf16":
        if units:
            return PrecisionChoice("bf16", "bf16 asked for; the CPU has bf16 units")
        return PrecisionChoice("bf16", "bf16 asked for on a CPU without AMX/AVX512-BF16: emulated, several "
                                       "times slower than fp32", emulated=True)
    if units:
        return PrecisionChoice("bf16", "auto: the CPU has AMX/AVX512-BF16")
    return PrecisionChoice("fp32", f"auto: the CPU has no AMX/AVX512-BF16, {fp32_path}")


def autocast_context(device, precision: str):
    """bf16 autocast on CUDA or the CPU when ``precision`` is 'bf16'; a no-op for fp32.
    One context for training, plate labelling and the crystal maps (``model.cam``), so the
    three compute in the arithmetic the plate's :class:`PrecisionChoice` names."""
    import contextlib

    import torch

    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"a resolved precision is 'fp32' or 'bf16', got {precision!r}")
    return contextlib.nullcontext()
