"""Export a CrystalNet artifact to ONNX: the whole labelling function in one portable file.

The graph holds everything between "8-bit grey crop" and "calibrated probabilities":
per-pixel standardisation (the training set's mean and std images), the 7x7 contrast
normalisation, the central crop, the network, and softmax(logits / T) with the
artifact's calibrated temperature. So a tool that can resize an image and run ONNX
gets the pipeline's probabilities, not something that needs our Python to finish.

The input is uint8 (N, R, R), what :func:`crystal_pipeline.ingest.imaging.decode_many`
yields and the tensors store: a float input would invite the 0..1 versus 0..255 mistake.

Exported with torch's dynamo exporter (the supported one in torch 2.13; the TorchScript
exporter is deprecated), which needs ``onnx`` and ``onnxscript``; the result is checked
against the torch model with ONNX Runtime before anything is written (:data:`TOLERANCE`).
All three are imported here, lazily, and only by ``crystal-pipeline export``: the
training and labelling paths never need them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from crystal_pipeline.files import atomic_write_bytes, atomic_write_text, file_sha256
from crystal_pipeline.model.artifact import calibration_of, load
from crystal_pipeline.model.model_card import CARD_METADATA_KEY, build_model_card, card_markdown, card_paths
from crystal_pipeline.model.network import CrystalNet

INPUT_NAME = "pixels"
OUTPUT_NAME = "probs"
OPSET = 18
#: Largest |ONNX - torch| probability the export accepts (the issue's bound for the engine).
TOLERANCE = 1e-4
_INSTALL_HINT = "pip install 'crystal_pipeline[onnx]' (onnx, onnxscript, onnxruntime)"


class CalibratedCrystalNet(torch.nn.Module):
    """uint8 (N, R, R) -> calibrated probabilities (N, 10): what the ONNX graph computes."""

    def __init__(self, net: CrystalNet, temperature: float) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.net = net
        self.temperature = float(temperature)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(pixels.float()) / self.temperature, dim=1)


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    card_json: Path
    card_md: Path
    card: dict[str, Any]
    max_abs_diff: float


class ExportError(RuntimeError):
    """The export could not run (a missing library) or its result differs from the torch model."""


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs {module}: {_INSTALL_HINT}") from exc


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's progress lines, torchvision notices and deprecation warnings are not ours
    to show a user: silence them for the call (errors still raise)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(artifact_path: str | os.PathLike, out_path: str | os.PathLike, *,
                metrics: Mapping[str, Any] | None = None, model_version: str | None = None,
                check_images: int = 8, seed: int = 0) -> ExportResult:
    """Write ``out_path`` (.onnx) and its card (``.card.json``, ``.card.md``) beside it.

    ``metrics`` is the evaluation's ``metrics.json`` dict for this model (None: the card
    says there was none). ``check_images`` random images go through both the torch model
    and ONNX Runtime; a difference above :data:`TOLERANCE` raises and writes nothing.
    """
    _require("onnx")
    _require("onnxscript")
    ort = _require("onnxruntime")
    artifact_path, out_path = Path(artifact_path), Path(out_path)
    net = load(artifact_path, "cpu").eval()
    meta = dict(getattr(net, "artifact_meta", {}) or {})
    temperature, threshold = calibration_of(meta)
    version = model_version or str(meta.get("model_version") or artifact_path.resolve().parent.name)
    wrapper = CalibratedCrystalNet(net, temperature).eval()
    res = net.resolution
    example = torch.zeros((2, res, res), dtype=torch.uint8)
    with _quiet_exporter():
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), opset_version=OPSET,
            external_data=False, verbose=False, optimize=True,
        )
    proto = program.model_proto
    images = np.random.default_rng(seed).integers(0, 256, (check_images, res, res), dtype=np.uint8)
    with torch.inference_mode():
        expected = wrapper(torch.from_numpy(images)).numpy()
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= TOLERANCE:
        raise ExportError(f"ONNX output differs from the torch model by {diff:.2e} (> {TOLERANCE:.0e})")
    exported = {
        "format": "onnx", "file": out_path.name, "opset": OPSET, "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME, "exporter": f"torch {torch.__version__} (dynamo)",
        "checked_images": check_images, "max_abs_diff_vs_torch": diff,
    }
    card = build_model_card(meta, model_version=version, temperature=temperature, crystal_threshold=threshold,
                            artifact_sha256=file_sha256(artifact_path), metrics=metrics, exported=exported)
    card_json = json.dumps(card, indent=2, sort_keys=False)
    entry = proto.metadata_props.add()
    entry.key, entry.value = CARD_METADATA_KEY, card_json
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = atomic_write_bytes(out_path, proto.SerializeToString())
    json_target, md_target = card_paths(out_path)
    json_path = atomic_write_text(json_target, card_json + "\n")
    md_path = atomic_write_text(md_target, card_markdown(card))
    return ExportResult(onnx_path, json_path, md_path, card, diff)
