"""Training CrystalNet on the pipeline's Parquet tensors (the paper's "Learning").

One public entry point, :func:`train`, used by the ``crystal-pipeline train`` command
and by the Dagster ``crystalnet_model`` asset alike.

- :mod:`.config`: :class:`TrainConfig`, :data:`PRESETS`, :data:`RUNTIME_FIELDS`.
- :mod:`.loop`: :func:`train` as named steps (load data, build the session, train the
  updates, finish), and :class:`TrainResult`.
- :mod:`.steps`: what an update and an evaluation are made of (model and optimizer
  construction, learning-rate schedule, the stateless batch plan, one SGD step).
- :mod:`.checkpoint`: atomic checkpoints and the resume check.
- :mod:`.distributed`: DDP set-up and teardown from torchrun's environment.

Imports only torch, numpy and pyarrow (no Dagster, DuckDB or pandas): it runs on a bare GPU box.
"""

from crystal_pipeline.training.checkpoint import CHECKPOINT_FORMAT, RunState, checkpoint_path_for
from crystal_pipeline.training.config import PRESETS, RUNTIME_FIELDS, TrainConfig
from crystal_pipeline.training.loop import TrainResult, train
from crystal_pipeline.training.steps import (
    BatchPlan,
    Evaluation,
    autocast_context,
    crystal_auc,
    evaluate,
    lr_at,
    make_model,
    make_optimizer,
    train_step,
    training_precision,
)

__all__ = [
    "CHECKPOINT_FORMAT", "PRESETS", "RUNTIME_FIELDS", "BatchPlan", "Evaluation", "RunState", "TrainConfig",
    "TrainResult", "autocast_context", "checkpoint_path_for", "crystal_auc", "evaluate", "lr_at", "make_model",
    "make_optimizer", "train", "train_step", "training_precision",
]
