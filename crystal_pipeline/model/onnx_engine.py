"""Label with an exported model through ONNX Runtime (``crystal-pipeline label --engine onnx``).

:class:`OnnxCrystalNet` looks to :func:`crystal_pipeline.plates.labelling.label_plate`
like the fast CPU model: ``predict_proba(uint8 pixels) -> probabilities`` and a
``resolution``. Its probabilities are already calibrated (the temperature is inside the
graph, :mod:`.onnx_export`), so it sets ``output_calibrated`` and labelling applies no
temperature again. The model card inside the file (or beside it) gives the version,
threshold and provenance a report shows.

onnxruntime is imported when a model is opened, never at import time: the torch path
and the GPU box (which has no onnxruntime) do not need it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from crystal_pipeline.model.model_card import CARD_METADATA_KEY, card_paths


class OnnxEngineError(RuntimeError):
    """onnxruntime is missing, or the file is not an exported CrystalNet."""


class OnnxCrystalNet:
    """An exported CrystalNet in an ONNX Runtime session (CPU)."""

    #: Tells label_plate the probabilities already have the temperature applied.
    output_calibrated = True

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise OnnxEngineError("--engine onnx needs onnxruntime: pip install 'crystal_pipeline[onnx]'") from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxEngineError(f"ONNX model not found: {self.path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise OnnxEngineError(f"cannot open ONNX model {self.path}: {exc}") from exc
        self.card = _card(self.session, self.path)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 3 or not isinstance(inputs[0].shape[1], int):
            raise OnnxEngineError(f"{self.path} is not an exported CrystalNet (input {inputs[0].shape})")
        self.input_name = inputs[0].name
        self.resolution = int(inputs[0].shape[1])
        calibration = self.card.get("calibration") or {}
        # What label's CLI reads from a torch artifact, from the card: the temperature is in the graph.
        self.artifact_meta: dict[str, Any] = {
            "model_version": self.card.get("model_version"),
            "trained_on": (self.card.get("training_data") or {}).get("trained_on"),
            "crystal_threshold": calibration.get("crystal_threshold"),
        }

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, 10) float32 for uint8 (N, R, R) pixels."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        if pixels.ndim == 2:
            pixels = pixels[None]
        if len(pixels) == 0:
            return np.zeros((0, len(self.card.get("classes") or range(10))), dtype=np.float32)
        return self.session.run(None, {self.input_name: pixels})[0].astype(np.float32, copy=False)


def _card(session: Any, path: Path) -> dict[str, Any]:
    """The model card embedded in the file, else the ``.card.json`` beside it, else empty."""
    text = session.get_modelmeta().custom_metadata_map.get(CARD_METADATA_KEY)
    if text is None:
        beside = card_paths(path)[0]
        text = beside.read_text() if beside.is_file() else "{}"
    try:
        card = json.loads(text)
    except ValueError:
        return {}
    return card if isinstance(card, dict) else {}
