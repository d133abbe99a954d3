"""CrystalNet: the network, its artifact, and inference.

- :mod:`.network`: :class:`CrystalNet` (Table 1), contrast normalization, initialization.
- :mod:`.augment`: the training-time mirror and similarity transforms (layers 2-3).
- :mod:`.device`: :func:`resolve_device` (CUDA, then MPS, then CPU).
- :mod:`.artifact`: ``model.pt`` written (:func:`save_artifact`) and read (:func:`load`) together.
- :mod:`.inference`: the one batched-softmax loop (:func:`predict_proba`).
- :mod:`.fast_cpu`: the same function rebuilt for fast CPU inference.

This package imports only torch and numpy (no Dagster, DuckDB or pandas): it runs on a
bare GPU box and in the labelling command.
"""

from crystal_pipeline.model.artifact import (
    ARTIFACT_FORMAT,
    DEFAULT_THRESHOLD,
    ArtifactError,
    add_calibration,
    calibration_of,
    cpu_state,
    load,
    load_artifact,
    save_artifact,
)
from crystal_pipeline.model.device import resolve_device
from crystal_pipeline.model.inference import apply_temperature, batched_softmax, calibrated, predict_proba, softmax_probs
from crystal_pipeline.model.network import (
    CN_EPS,
    CN_WINDOW,
    CrystalNet,
    build_model,
    contrast_normalize,
    feature_size,
    init_weights,
    weight_counts,
)

__all__ = [
    "ARTIFACT_FORMAT", "CN_EPS", "CN_WINDOW", "ArtifactError", "CrystalNet", "batched_softmax", "build_model",
    "contrast_normalize", "cpu_state", "feature_size", "init_weights", "load", "load_artifact", "predict_proba",
    "resolve_device", "save_artifact", "softmax_probs", "weight_counts", "DEFAULT_THRESHOLD", "add_calibration",
    "apply_temperature", "calibrated", "calibration_of",
]
