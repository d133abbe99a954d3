"""The built-in synthetic raw archive: plates of drop photographs with expert labels.

There is no public copy of the HWI images, so the demo, the tests and the benchmark
run on a generated archive in exactly the input format real archives use. Imports
here stay light (numpy, Pillow; no scipy, which the GPU box lacks); nothing imports Dagster.
"""

from crystal_pipeline.synthetic.archive import ArchiveSummary, PlateSummary, plate_ids, write_archive, write_plate
from crystal_pipeline.synthetic.class_mix import CALIBRATED_DRAWN_MIX, TABLE2_TOTALS, normalize_mix
from crystal_pipeline.synthetic.render import DEFAULT_DIFFICULTY, WellTruth, render_well

__all__ = [
    "ArchiveSummary",
    "DEFAULT_DIFFICULTY",
    "PlateSummary",
    "CALIBRATED_DRAWN_MIX",
    "TABLE2_TOTALS",
    "WellTruth",
    "normalize_mix",
    "plate_ids",
    "render_well",
    "write_archive",
    "write_plate",
]
