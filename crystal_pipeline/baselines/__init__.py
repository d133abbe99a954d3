"""The paper's baselines: engineered features (Cumbaa & Jurisica style) with RF and a neural
net, and nearest neighbour on pixels; plus the Table 5 comparison with CrystalNet.
"""

from crystal_pipeline.baselines.comparison import CRYSTALNET, baselines_for_metrics, model_scores, table5_markdown
from crystal_pipeline.baselines.feature_cache import FeatureTable, cache_path, extract_features_cached
from crystal_pipeline.baselines.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    NUM_FEATURES,
    SMALL_SIDE,
    extract_features,
    image_features,
)
from crystal_pipeline.baselines.models import (
    KNN_SIDE,
    NEAREST_NEIGHBOR,
    NEURAL_NET,
    RF,
    BaselineModel,
    BaselinePrediction,
    fit_baselines,
    full_probabilities,
    pixels_for_knn,
    predict_proba_baselines,
)

__all__ = [
    "CRYSTALNET", "FEATURE_NAMES", "FEATURE_VERSION", "KNN_SIDE", "NEAREST_NEIGHBOR", "NEURAL_NET",
    "NUM_FEATURES", "RF", "SMALL_SIDE", "BaselineModel", "BaselinePrediction", "FeatureTable",
    "cache_path", "extract_features", "extract_features_cached", "fit_baselines",
    "full_probabilities", "image_features", "model_scores", "pixels_for_knn",
    "predict_proba_baselines", "table5_markdown",
]
