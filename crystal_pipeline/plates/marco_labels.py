"""A plate's predictions beside a file of MARCO labels (``labels.csv``: ``file,marco_label[,label_quality]``).

shared/real_samples ships real drop photographs with MARCO's four-class labels; labelling
that folder should say how the model's four-class outcome compares, image by image. The
result is a fact about *this* model on *these* photographs (a synthetic-trained model on
real images is expected to do badly), written beside the report as such, never a target
or a score the pipeline optimises. Images without a label (an empty ``marco_label``) and
labels of files that were not labelled are left out and counted.

Standard library only (the labelling command runs on a bare GPU box).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from crystal_pipeline.classes import MARCO_CLASSES, marco_probs
from crystal_pipeline.files import atomic_write_bytes, atomic_write_text
from crystal_pipeline.plates.labelling import LabelledImage

LABELS_FILE = "labels.csv"
CAVEAT = ("This compares one model's four-class outcome with the labels shipped beside the images. It is a "
          "fact about this model on these photographs, not a target: a model trained on synthetic drops is "
          "not expected to read real photographs well, and weak labels (model output or file name) are not "
          "ground truth.")


@dataclass(frozen=True)
class MarcoComparison:
    rows: list[dict[str, str]]  # one per labelled image with a label
    unlabelled: int  # labelled images with no label in the file
    unmatched: int  # labels naming no labelled image

    def agreement(self) -> dict[str, tuple[int, int]]:
        """label_quality -> (agree, images), plus ``all``."""
        out: dict[str, list[int]] = {}
        for row in self.rows:
            for key in ("all", row["label_quality"] or "unknown"):
                entry = out.setdefault(key, [0, 0])
                entry[0] += row["agree"] == "1"
                entry[1] += 1
        return {k: (v[0], v[1]) for k, v in out.items()}


def read_marco_labels(path: Path) -> dict[str, tuple[str, str]] | None:
    """file name -> (marco_label, label_quality), or None when ``path`` has no marco_label column."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if "file" not in (reader.fieldnames or []) or "marco_label" not in (reader.fieldnames or []):
            return None
        return {row["file"].strip(): ((row["marco_label"] or "").strip().lower(),
                                      " ".join((row.get("label_quality") or "").split()))
                for row in reader if row.get("file")}


def compare(rows: Sequence[LabelledImage], labels: dict[str, tuple[str, str]]) -> MarcoComparison:
    """Each labelled image that has a MARCO label: the label, the model's outcome and four-class probabilities."""
    out, unlabelled, seen = [], 0, set()
    for r in sorted(rows, key=lambda r: r.path.name):
        label, quality = labels.get(r.path.name, ("", ""))
        if label not in MARCO_CLASSES:
            unlabelled += 1
            continue
        seen.add(r.path.name)
        four = marco_probs([r.probs])[0]
        out.append({"file": r.path.name, "marco_label": label, "label_quality": quality,
                    "predicted": r.marco_class, "agree": str(int(label == r.marco_class)),
                    **{f"p_{name}": f"{p:.4f}" for name, p in zip(MARCO_CLASSES, four)}})
    unmatched = sum(1 for name, (label, _) in labels.items() if label in MARCO_CLASSES and name not in seen)
    return MarcoComparison(out, unlabelled, unmatched)


def write_comparison(out_dir: Path, comparison: MarcoComparison, model_version: str) -> dict[str, Path]:
    """``marco_vs_labels.csv`` and ``marco_vs_labels.md`` in ``out_dir``."""
    columns = ["file", "marco_label", "label_quality", "predicted", "agree", *[f"p_{m}" for m in MARCO_CLASSES]]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(comparison.rows)
    csv_path = atomic_write_bytes(out_dir / "marco_vs_labels.csv", buffer.getvalue().encode())
    lines = [f"# Model {model_version}: MARCO four-class outcome beside {LABELS_FILE}", "", f"> {CAVEAT}", "",
             "| label quality | agree | images |", "| --- | --- | --- |"]
    lines += [f"| {k} | {a} | {n} |" for k, (a, n) in comparison.agreement().items()]
    confusion = Counter((r["marco_label"], r["predicted"]) for r in comparison.rows)
    lines += ["", "| label \\ predicted | " + " | ".join(MARCO_CLASSES) + " |", "| --- " * 5 + "|"]
    lines += [f"| {t} | " + " | ".join(str(confusion[(t, p)]) for p in MARCO_CLASSES) + " |" for t in MARCO_CLASSES]
    lines += ["", f"{comparison.unlabelled} labelled images have no label; {comparison.unmatched} labels name no "
                  "labelled image.", ""]
    lines += ["| file | label | quality | predicted |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['file']} | {r['marco_label']} | {r['label_quality']} | {r['predicted']} |"
              for r in comparison.rows]
    md_path = atomic_write_text(out_dir / "marco_vs_labels.md", "\n".join(lines) + "\n")
    return {"marco_csv": csv_path, "marco_md": md_path}
