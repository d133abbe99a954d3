"""A labelled grid of synthetic examples per class, for the docs and for eyeballing.

The committed ``docs/images/synthetic_classes.png`` is regenerated with
``python -m crystal_pipeline.synthetic.contact_sheet docs/images/synthetic_classes.png``;
columns run from the most obvious example of a class to the least (by the rendered
difficulty), so the sheet shows the range a classifier faces, not only the easy end.
``--imager HWI`` draws the HWI imager's sheet (``docs/images/synthetic_hwi_contact_sheet.png``):
every image lit as one plate's (its lighting is fixed per plate), 4:3 frames.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from crystal_pipeline.classes import CLASS_IDS, CLASS_TITLES
from crystal_pipeline.synthetic.hwi import plate_lighting
from crystal_pipeline.synthetic.imager import DEFAULT_IMAGER, imager_named
from crystal_pipeline.synthetic.render import DEFAULT_DIFFICULTY, render_well


def contact_sheet(path: str | Path, per_class: int = 8, size: int | None = None, seed: int = 0,
                  difficulty: float = DEFAULT_DIFFICULTY, imager: str = DEFAULT_IMAGER) -> Path:
    """Write the grid as an 8-bit grey PNG and return its path; ``size`` rows (default: the
    imager's own, the size its archives are drawn at: 128 for HWI, 256 for A and B)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    camera = imager_named(imager)
    size = camera.default_size if size is None else size
    lighting = plate_lighting(seed, 0, camera)
    aspect = camera.optics.aspect if camera.optics is not None else 1.0
    fig, axes = plt.subplots(len(CLASS_IDS), per_class,
                             figsize=(per_class * 1.2 * aspect + 1.6, len(CLASS_IDS) * 1.2 + 0.4),
                             gridspec_kw={"wspace": 0.04, "hspace": 0.06})
    for r, class_id in enumerate(CLASS_IDS):
        examples = [render_well(np.random.default_rng([seed, class_id, j]), class_id, size, difficulty, camera, lighting)
                    for j in range(per_class)]
        examples.sort(key=lambda e: e[1].difficulty)
        for c, (pixels, truth) in enumerate(examples):
            ax = axes[r, c]
            ax.imshow(pixels, cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.text(3, size - 6, f"d={truth.difficulty:.2f}", color="yellow", fontsize=5.5)
        axes[r, 0].set_ylabel(f"{class_id}. {CLASS_TITLES[r]}", rotation=0, ha="right", va="center", fontsize=8)
    lab = "" if camera.name == DEFAULT_IMAGER else f", imager {camera.name}"
    fig.suptitle(f"Synthetic drop images per class (difficulty knob {difficulty}; d = rendered difficulty{lab})",
                 fontsize=9, y=0.995)
    fig.subplots_adjust(left=0.17, right=0.99, bottom=0.01, top=0.96)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(buf).convert("L").save(path, optimize=True)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="docs/images/synthetic_classes.png")
    parser.add_argument("--imager", default=DEFAULT_IMAGER, help="A (default), B or HWI")
    args = parser.parse_args()
    print(contact_sheet(args.path, imager=args.imager))
