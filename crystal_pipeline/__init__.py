"""crystal_pipeline: the domain library behind the CrystalNet pipeline.

Nothing in this package imports Dagster, so training and plate labelling run on a
bare GPU box through the ``crystal-pipeline`` command (``python -m crystal_pipeline``).
"""

__version__ = "0.1.0"
