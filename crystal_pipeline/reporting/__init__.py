"""Reporting: figures and the Markdown/HTML helpers that the evaluation and plate reports share.

- :mod:`.figures`: :func:`~.figures.pyplot` (Agg) and :func:`~.figures.figure_png` (PNG bytes),
  which every figure uses, and the pipeline's small charts (class bars, image grids,
  training curves).
- :mod:`.evaluation_figures`: the paper's figures (crystal ROC, confusion heatmap, filters,
  training-size curve); :mod:`.plate_map`: a labelled plate's grid.
- :mod:`.markdown`, :mod:`.html`, :mod:`.embed`: table cells and tables, escaping, images
  embedded as data URIs; used by both reports and by the Dagster metadata.
- :mod:`.numbers`: :func:`~.numbers.finite_or_none`, NaN to None for metadata and JSON.

Nothing here imports pandas, Dagster or (until a figure is drawn) matplotlib, so the
``crystal-pipeline label`` command can write its report on a GPU box without them.
"""
