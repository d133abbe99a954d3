"""The paper's published numbers (HWI data, 17,033 validation images), transcribed as constants.

Every table of our report prints these beside our own, so a reader sees at a glance how a
run on another archive compares. They are transcribed from the paper's text
(``crystalnet_aaai2016.txt``, Tables 2-5); ``tests/test_evaluation.py`` checks that Table 2
is self-consistent (rows sum to the Total column, the diagonal gives the printed recalls,
the trace gives 0.9080), which catches a mistyped count.
"""

from __future__ import annotations

import numpy as np

PAPER_DATA_LABEL = "paper (HWI data, 17,033 validation images)"

# Table 2: rows true class (ids 1..10, the paper's order), columns predicted.
PAPER_TABLE2_COUNTS = np.array(
    [
        [5831, 9, 2, 26, 0, 0, 0, 0, 2, 7],  # Clear
        [29, 5563, 6, 38, 34, 54, 0, 6, 0, 2],  # Precipitate
        [65, 20, 1069, 19, 167, 3, 41, 0, 5, 2],  # Crystal
        [51, 31, 10, 1007, 11, 1, 6, 2, 1, 1],  # Phase
        [2, 258, 135, 12, 864, 37, 31, 0, 0, 0],  # Precipitate & Crystal
        [0, 85, 0, 1, 4, 776, 0, 0, 7, 0],  # Precipitate & Skin
        [3, 6, 90, 67, 65, 4, 157, 1, 0, 0],  # Phase & Crystal
        [0, 29, 0, 13, 7, 3, 1, 30, 0, 0],  # Phase & Precipitate
        [12, 0, 0, 0, 0, 6, 0, 0, 116, 2],  # Skin
        [30, 4, 1, 0, 0, 0, 0, 0, 0, 53],  # Junk
    ],
    dtype=np.int64,
)
PAPER_TABLE2 = {
    "counts": PAPER_TABLE2_COUNTS,
    "row_totals": np.array([5877, 5732, 1391, 1121, 1339, 873, 393, 83, 136, 88]),
    "column_totals": np.array([6023, 6005, 1313, 1183, 1152, 884, 236, 39, 131, 67]),
    "total": 17033,
    "recall": np.array([0.9922, 0.9705, 0.7685, 0.8983, 0.6453, 0.8889, 0.3995, 0.3614, 0.8529, 0.6023]),
    "precision": np.array([0.9681, 0.9264, 0.8142, 0.8512, 0.7500, 0.8778, 0.6653, 0.7692, 0.8855, 0.7910]),
    "auc": np.array([0.9990, 0.9937, 0.9863, 0.9938, 0.9725, 0.9957, 0.9751, 0.9754, 0.9969, 0.9975]),
    "accuracy": 0.9080,
}

# Table 4: crystal vs no-crystal; index 0 = no-crystal, 1 = has-crystal. As printed: folding
# Table 2's counts gives [[13828, 82], [504, 2619]], 2 images off in each cell with the same
# row totals, so the paper's two tables disagree slightly; we show Table 4 as published.
PAPER_TABLE4 = {
    "counts": np.array([[13830, 80], [506, 2617]], dtype=np.int64),
    "recall": np.array([0.9942, 0.8380]),
    "precision": np.array([0.9647, 0.9703]),
    "accuracy": 0.9656,
}

# Figure 5: CrystalNet's crystal AUC, quoted in the text ("Classification Analysis").
PAPER_CRYSTAL_AUC = 0.9903

# Table 3: resolution (px) -> (accuracy %, average time s).
PAPER_TABLE3: dict[int, tuple[float, float]] = {
    256: (90.5, 528.0),
    128: (90.8, 300.0),
    64: (86.5, 114.0),
    32: (78.5, 32.0),
}

# Table 5: model -> (10-way accuracy %, prediction time on the validation set, s).
# RF and Neural Net times exclude feature extraction (the paper's footnote).
PAPER_TABLE5: dict[str, tuple[float, float]] = {
    "CrystalNet": (90.8, 300.0),
    "Neural Net": (86.9, 1.0),
    "RF": (82.8, 209.0),
    "Nearest Neighbor": (70.7, 286.0),
}
