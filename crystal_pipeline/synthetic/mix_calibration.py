"""The drawn class mix that gives a consensus set with Table 2's shares, at any difficulty.

Table 2 describes the images the experts agreed on, not the wells drawn. How often a
panel agrees depends on the class (clear wells almost always, phase-precipitate
rarely) and on the difficulty knob, and some disagreements land on *another* class
(a faint crystal under precipitate agreed as plain precipitate). So this module
measures, per drawn class ``c``, where its unanimous labels go: the matrix
``M[c, k]`` = P(a well drawn as ``c`` is unanimously labelled ``k``), by rendering
wells and simulating the annotator panel exactly as the archive does (no files are
written). The drawn mix ``w`` is then the non-negative solution of ``w @ M = t`` for
Table 2's shares ``t``.

    python -m crystal_pipeline.synthetic.mix_calibration --difficulty 0.3 --per-class 300

prints the mix to paste into ``class_mix.CALIBRATED_DRAWN_MIX`` and the consensus
shares it predicts; ``tests/synthetic`` checks the committed mix on a generated archive.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from crystal_pipeline.classes import CLASS_IDS, unanimous_class
from crystal_pipeline.synthetic.annotators import annotate, annotator_pool
from crystal_pipeline.synthetic.class_mix import TABLE2_TOTALS
from crystal_pipeline.synthetic.render import render_well


def table2_shares() -> np.ndarray:
    totals = np.array([TABLE2_TOTALS[c] for c in CLASS_IDS], dtype=np.float64)
    return totals / totals.sum()


# An imager with lighting fixed per plate (HWI) is measured over this many plates' lightings.
LIGHTING_PLATES = 20


def unanimity_matrix(difficulty: float, per_class: int = 300, seed: int = 0, size: int = 256,
                     imager: str = "A") -> np.ndarray:
    """``M[c, k]``: share of wells drawn as class ``c`` that the panel unanimously labels ``k``
    (rows over classes 1..10; a row sums to the class's unanimity rate, at most 1).

    Under imager HWI well ``j`` is lit as plate ``j % LIGHTING_PLATES`` of the archive would
    be, so the matrix averages over plates' lightings as an archive does.
    """
    from crystal_pipeline.synthetic.archive import plate_ids
    from crystal_pipeline.synthetic.hwi import plate_lighting
    from crystal_pipeline.synthetic.imager import imager_named
    from crystal_pipeline.synthetic.render_pool import plate_key

    camera = imager_named(imager)
    lightings = [plate_lighting(seed, plate_key(p), camera)
                 for p in plate_ids(LIGHTING_PLATES if camera.optics is not None else 1)]
    pool = annotator_pool(seed)
    n = len(CLASS_IDS)
    matrix = np.zeros((n, n), dtype=np.float64)
    for row, class_id in enumerate(CLASS_IDS):
        for j in range(per_class):
            _, truth = render_well(np.random.default_rng([seed, 0xCA1, class_id, j, 0]), class_id, size, difficulty,
                                   camera, lightings[j % len(lightings)])
            labels = annotate(np.random.default_rng([seed, 0xCA1, class_id, j, 1]), truth, pool)
            k = unanimous_class(attributes for _, attributes in labels)
            if k is not None:
                matrix[row, CLASS_IDS.index(k)] += 1
    return matrix / per_class


def solve_mix(matrix: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """Drawn shares ``w >= 0`` (summing to 1) whose consensus ``w @ M`` is closest to ``target``."""
    from scipy.optimize import nnls

    target = table2_shares() if target is None else np.asarray(target, dtype=np.float64)
    weights, _ = nnls(matrix.T, target)
    if weights.sum() <= 0:
        raise ValueError("no non-negative mix reaches the target shares")
    return weights / weights.sum()


def predicted_consensus(matrix: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """Consensus class shares a drawn ``mix`` gives under ``matrix``."""
    agreed = np.asarray(mix) @ matrix
    return agreed / agreed.sum()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--difficulty", type=float, required=True)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="rows the archive draws (its --size)")
    parser.add_argument("--imager", default="A")
    args = parser.parse_args(argv)
    matrix = unanimity_matrix(args.difficulty, args.per_class, args.seed, args.size, args.imager)
    mix = solve_mix(matrix)
    shares = predicted_consensus(matrix, mix)
    print(json.dumps({
        "difficulty": args.difficulty, "imager": args.imager, "size": args.size,
        "drawn_mix_percent": {c: round(100 * float(w), 2) for c, w in zip(CLASS_IDS, mix)},
        "predicted_consensus_percent": {c: round(100 * float(s), 2) for c, s in zip(CLASS_IDS, shares)},
        "table2_percent": {c: round(100 * float(s), 2) for c, s in zip(CLASS_IDS, table2_shares())},
        "unanimity_rate": {c: round(float(r), 3) for c, r in zip(CLASS_IDS, matrix.sum(1))},
        "unanimous_agreed_as_drawn": {c: round(float(matrix[i, i]), 3) for i, c in enumerate(CLASS_IDS)},
    }))


if __name__ == "__main__":
    main()
