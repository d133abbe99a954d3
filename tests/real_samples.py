"""The real drop photographs the repository carries (tests/data/README.md: sources and licences).

A module of its own, imported as ``tests.real_samples``: test files used to import these names
``from conftest``, which resolves to whichever ``conftest`` pytest imported last, so a run that
collected ``tests/warehouse`` (it has its own conftest.py) beside them failed to import them.
"""

from pathlib import Path

REAL_SAMPLES = Path(__file__).resolve().parent / "data" / "real_samples"
REAL_SAMPLE_COUNT = 6
