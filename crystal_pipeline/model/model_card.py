"""The model card written beside an exported model: what it is, what it was trained on, how good it is.

A portable model leaves the pipeline (another lab's tool, a microscope vendor's
software), so it must carry what the warehouse would otherwise tell: its classes and
their MARCO grouping, the input it expects, the calibration baked into it, where its
training data came from, and its evaluation with intervals. One dict
(:func:`build_model_card`) is written twice: ``<name>.card.json`` for programs and
``<name>.card.md`` for people, and the same JSON travels inside the ONNX file's metadata
(key :data:`CARD_METADATA_KEY`) so the model file alone is enough to label with.

Only the standard library here (the card is read by the ONNX engine on boxes without torch).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from crystal_pipeline.classes import CLASS_NAMES, CLASS_TITLES, MARCO_CLASSES, MARCO_OF_CLASS

CARD_FORMAT = "crystalnet-model-card/1"
CARD_METADATA_KEY = "crystal_pipeline.model_card"
SYNTHETIC_WARNING = ("Trained on synthetic images: its outputs show that the pipeline runs; they are not "
                     "evidence about real crystals.")
#: metrics.json headline keys the card copies, each with its ``<key>_ci95`` interval when present.
_HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "crystal_auc")
_PLAIN = ("split", "n_images", "crystal_recall_target", "crystal_threshold_at_recall_target",
          "review_share_at_recall_target", "ece_before", "ece_after", "bootstrap")


def card_paths(model_path: str | Path) -> tuple[Path, Path]:
    """``<name>.card.json`` and ``<name>.card.md`` beside an exported ``<name>.onnx``: where the
    exporter writes the card and where the engine looks for it."""
    stem = Path(model_path).with_suffix("")
    return stem.with_name(stem.name + ".card.json"), stem.with_name(stem.name + ".card.md")


def _number(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_number(v) for v in value]
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    return value


def card_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The evaluation numbers a card shows, from a ``metrics.json`` dict (None without one)."""
    if not metrics:
        return None
    out: dict[str, Any] = {k: metrics[k] for k in _PLAIN if k in metrics}
    for key in _HEADLINE:
        if key in metrics:
            out[key] = {"value": metrics[key], "ci95": metrics.get(f"{key}_ci95")}
    if isinstance(metrics.get("marco"), Mapping):
        out["marco"] = dict(metrics["marco"])
    return _number(out)


def build_model_card(meta: Mapping[str, Any], *, model_version: str, temperature: float,
                     crystal_threshold: float, artifact_sha256: str | None,
                     metrics: Mapping[str, Any] | None, exported: Mapping[str, Any]) -> dict[str, Any]:
    """The card as one plain dict. ``meta`` is the artifact's metadata (``model.artifact_meta``),
    ``metrics`` the evaluation's ``metrics.json`` (None: the card says no evaluation was found),
    ``exported`` what the exporter adds (format, file, opset, verification)."""
    config = meta.get("model_config") or {}
    resolution = int(config.get("resolution", 0))
    train_config = meta.get("config") if isinstance(meta.get("config"), Mapping) else {}
    return _number({
        "format": CARD_FORMAT,
        "model_version": model_version,
        "created_at": meta.get("created_at"),
        "classes": [{"index": i, "id": i + 1, "name": CLASS_NAMES[i], "title": CLASS_TITLES[i],
                     "marco": MARCO_OF_CLASS[i + 1]} for i in range(len(CLASS_NAMES))],
        "marco_classes": list(MARCO_CLASSES),
        "crystal_class_ids": sorted(i for i, m in MARCO_OF_CLASS.items() if m == "crystals"),
        "input": {
            "name": exported.get("input_name", "pixels"), "dtype": "uint8", "shape": ["N", resolution, resolution],
            "meaning": (f"8-bit grey drop images already cropped and resized to {resolution} x {resolution} "
                        "(crystal_pipeline.ingest.imaging: ITU-R 601 grey, central square, Lanczos resize); per-pixel "
                        "standardisation and contrast normalisation happen inside the model"),
        },
        "output": {
            "name": exported.get("output_name", "probs"), "dtype": "float32", "shape": ["N", len(CLASS_NAMES)],
            "meaning": "calibrated class probabilities (softmax of logits / temperature), columns in class order",
        },
        "resolution": resolution,
        "calibration": {"temperature": temperature, "crystal_threshold": crystal_threshold},
        "training_data": {
            "trained_on": meta.get("trained_on"),
            "tensors_fingerprint": meta.get("tensors_fingerprint"),
            "preset": meta.get("preset"),
            "updates": meta.get("updates"),
            "seed": train_config.get("seed"),
            "torch_version": meta.get("torch_version"),
            "warning": SYNTHETIC_WARNING if meta.get("trained_on") == "synthetic" else None,
        },
        "source_artifact": {"sha256": artifact_sha256, "format": meta.get("format")},
        "metrics": card_metrics(metrics),
        "exported": dict(exported),
    })


def _interval(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    ci = entry.get("ci95")
    text = f"{entry['value']:.3f}"
    return text + (f" (95% CI {ci[0]:.3f} to {ci[1]:.3f})" if ci and None not in ci else "")


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card for people: the same facts as the JSON, as a page."""
    data, cal = card["training_data"], card["calibration"]
    lines = [f"# CrystalNet {card['model_version']}", ""]
    if data.get("warning"):
        lines += [f"> **Warning:** {data['warning']}", ""]
    lines += [
        "## Input and output", "",
        f"- input `{card['input']['name']}`: {card['input']['dtype']} {card['input']['shape']}: "
        f"{card['input']['meaning']}",
        f"- output `{card['output']['name']}`: {card['output']['dtype']} {card['output']['shape']}: "
        f"{card['output']['meaning']}",
        f"- temperature {cal['temperature']:.4f} (applied inside); crystal threshold {cal['crystal_threshold']:.4f} "
        "(crystal probability = sum of the crystal classes' columns)", "",
        "## Classes", "", "| column | id | class | MARCO |", "| --- | --- | --- | --- |",
        *[f"| {c['index']} | {c['id']} | {c['title']} | {c['marco']} |" for c in card["classes"]], "",
        "## Training data", "",
        *[f"- {key}: {value}" for key, value in data.items() if key != "warning" and value is not None],
        f"- source artifact sha256: {card['source_artifact'].get('sha256')}", "",
        "## Evaluation", "",
    ]
    metrics = card.get("metrics")
    if not metrics:
        lines.append("No evaluation (metrics.json) was found for this model version when it was exported.")
    else:
        lines.append(f"On the {metrics.get('split', '?')} split ({metrics.get('n_images', '?')} images), "
                     "95% bootstrap intervals:")
        lines += ["", "| metric | value |", "| --- | --- |"]
        lines += [f"| {key} | {_interval(metrics.get(key))} |" for key in _HEADLINE if key in metrics]
        marco = metrics.get("marco") or {}
        if marco.get("accuracy") is not None:
            ci = marco.get("accuracy_ci95") or [None, None]
            lines.append(f"| MARCO four-class accuracy | {_interval({'value': marco['accuracy'], 'ci95': ci})} |")
    exported = card.get("exported") or {}
    lines += ["", "## Export", ""] + [f"- {k}: {v}" for k, v in exported.items()]
    return "\n".join(lines) + "\n"
