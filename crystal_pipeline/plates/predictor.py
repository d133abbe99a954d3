"""Which engine runs a model on a plate's batches: one ``predict(uint8 pixels) -> probs`` per model.

A prepared fast CPU model and an exported ONNX model run in their own precision; a torch
CrystalNet runs through the fast CPU path (fp32 or bf16, :mod:`crystal_pipeline.model.precision`),
on CUDA in bf16 autocast with channels_last from pinned host memory (:class:`PinnedStaging`),
or eager (a fused model, ``cpu_path="eager"``). :func:`predictor` returns the engine's name and
precision with it, which :class:`crystal_pipeline.plates.labelling.LabelTimings` reports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from crystal_pipeline.model.precision import PrecisionChoice

log = logging.getLogger(__name__)


class PinnedStaging:
    """A page-locked (pinned) host buffer that a CUDA predictor copies each batch through.

    Why: a copy from pageable memory to the GPU is staged by the driver through its own pinned
    buffer, synchronously; from pinned memory it is one DMA that ``non_blocking=True`` can
    issue without the host waiting (issue 19 item 4: a GPU plate in half a second). One buffer
    per predictor, reused: the predictor's result comes back with ``.cpu()``, which waits for
    the stream, so the previous batch's copy has finished before the buffer is refilled.
    """

    def __init__(self) -> None:
        self.buffer = None

    def hold(self, pixels: np.ndarray):
        """A pinned uint8 tensor holding ``pixels`` (N, H, W); needs a CUDA build of torch."""
        import torch

        if self.buffer is None or self.buffer.shape[0] < len(pixels) or self.buffer.shape[1:] != pixels.shape[1:]:
            self.buffer = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
        view = self.buffer[: len(pixels)]
        view.numpy()[...] = pixels
        return view


Predictor = tuple[Callable[[np.ndarray], np.ndarray], int, str, Callable[[], None], "PrecisionChoice"]


def predictor(model: Any, cpu_path: str = "fast", precision: str = "auto") -> Predictor:
    """(predict uint8 -> probs, resolution, path name, cleanup, precision) for a model on its device."""
    import torch

    from crystal_pipeline.model.bf16_cpu import Bf16CrystalNet
    from crystal_pipeline.model.fast_cpu import FastCrystalNet
    from crystal_pipeline.model.fusion import model_channels
    from crystal_pipeline.model.inference import batched_softmax, predict_proba
    from crystal_pipeline.model.precision import PRECISIONS, PrecisionChoice, choose_precision

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if isinstance(model, FastCrystalNet):  # prepared by the caller: its own precision
        if precision not in ("auto", model.precision):
            raise ValueError(f"a prepared {type(model).__name__} runs in {model.precision}, not {precision}")
        name = "cpu-bf16" if model.precision == "bf16" else "cpu-fast"
        return (model.predict_proba, model.resolution, name, lambda: None,
                PrecisionChoice(model.precision, "the prepared model's"))
    if getattr(model, "output_calibrated", False):  # model.onnx_engine.OnnxCrystalNet (not imported: optional)
        if precision == "bf16":
            raise ValueError("the ONNX engine runs in fp32; use --engine torch for bf16")
        return model.predict_proba, model.resolution, "onnxruntime", lambda: None, PrecisionChoice("fp32", "ONNX: fp32")
    device = next(model.parameters()).device
    choice = choose_precision(precision, device.type)
    if choice.emulated:
        log.warning("%s", choice.reason)
    # The fast CPU path is built for Table 1's one input channel; a fused model runs eager.
    if device.type == "cpu" and cpu_path == "fast" and model_channels(model) == 1:
        fast = (Bf16CrystalNet if choice.precision == "bf16" else FastCrystalNet).from_model(model)
        return (fast.predict_proba, model.resolution, "cpu-bf16" if choice.precision == "bf16" else "cpu-fast",
                fast.close, choice)
    if device.type == "cuda" and choice.precision == "bf16":
        model.eval().to(memory_format=torch.channels_last)
        model.channels_last = True
        staging = PinnedStaging()

        def predict_cuda(pixels: np.ndarray) -> np.ndarray:
            return batched_softmax(model, staging.hold(pixels), max(1, len(pixels)), num_classes=model.num_classes,
                                   device=device, autocast=torch.autocast("cuda", dtype=torch.bfloat16))

        return predict_cuda, model.resolution, "cuda-bf16", lambda: None, choice

    if device.type == "cpu":
        model.eval().to(memory_format=torch.channels_last)
        model.channels_last = True
    if choice.precision == "bf16":  # eager CPU in bf16 autocast, for comparisons

        def predict_autocast(pixels: np.ndarray) -> np.ndarray:
            return batched_softmax(model, torch.from_numpy(pixels), max(1, len(pixels)), num_classes=model.num_classes,
                                   autocast=torch.autocast("cpu", dtype=torch.bfloat16))

        return predict_autocast, model.resolution, f"{device.type}-eager-bf16", lambda: None, choice
    return ((lambda pixels: predict_proba(model, pixels, batch_size=max(1, len(pixels)))), model.resolution,
            f"{device.type}-eager", lambda: None, choice)
