"""Evaluation of a 10-way classifier against the paper: metrics, the paper's tables, the report.

- :mod:`.metrics`: confusion matrix, recall/precision/AUC (NaN where undefined), the crystal
  view (Table 4, ROC) and the screening view (threshold and review share at a recall).
- :mod:`.paper`: the paper's published numbers (Tables 2-5) as constants.
- :mod:`.tables`: those tables laid out as the paper prints them, as Markdown and HTML.
- :mod:`.report`: :func:`evaluation_report`, everything above in one report.
"""

from crystal_pipeline.evaluation.metrics import (
    CRYSTAL_COLUMNS,
    ReviewShare,
    binary_auc,
    binary_metrics,
    confusion_matrix,
    confusion_metrics,
    crystal_confusion,
    crystal_probability,
    crystal_truth,
    one_vs_rest_auc,
    predicted_classes,
    review_share_at_recall,
    review_shares,
    roc_curve,
    threshold_for_recall,
)
from crystal_pipeline.evaluation.paper import (
    PAPER_CRYSTAL_AUC,
    PAPER_DATA_LABEL,
    PAPER_TABLE2,
    PAPER_TABLE3,
    PAPER_TABLE4,
    PAPER_TABLE5,
)
from crystal_pipeline.evaluation.report import Report, evaluation_report
from crystal_pipeline.evaluation.tables import (
    confusion_grid,
    crystal_grid,
    html_table,
    markdown_table,
    model_comparison_grid,
    resolution_grid,
)

__all__ = [
    "CRYSTAL_COLUMNS", "PAPER_CRYSTAL_AUC", "PAPER_DATA_LABEL", "PAPER_TABLE2", "PAPER_TABLE3",
    "PAPER_TABLE4", "PAPER_TABLE5", "Report", "ReviewShare", "binary_auc", "binary_metrics",
    "confusion_grid", "confusion_matrix", "confusion_metrics", "crystal_confusion", "crystal_grid",
    "crystal_probability", "crystal_truth", "evaluation_report", "html_table", "markdown_table",
    "model_comparison_grid", "one_vs_rest_auc", "predicted_classes", "resolution_grid",
    "review_share_at_recall", "review_shares", "roc_curve", "threshold_for_recall",
]
