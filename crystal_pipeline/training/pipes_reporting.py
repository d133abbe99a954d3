"""Talking back to Dagster when training runs as an external process (Dagster Pipes).

The ``crystalnet_model`` asset launches ``torchrun ... -m crystal_pipeline train``
through Dagster Pipes. The trainer then streams its progress lines to the asset's
log and sends its final summary as a Pipes custom message. Only ``dagster_pipes``
is imported (a small protocol package with no Dagster dependency), and only when the
process was actually launched by Pipes, so ``crystal-pipeline train`` on a bare GPU
box without it behaves as before. Only rank 0 talks: under torchrun every rank
inherits the Pipes environment, and one voice is enough.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

# What Dagster's Pipes clients set in the launched process's environment.
PIPES_CONTEXT_ENV = "DAGSTER_PIPES_CONTEXT"


class PipesReporter:
    """Progress lines and a final summary, sent to Dagster when connected, else dropped."""

    def __init__(self, pipes: Any = None) -> None:
        self._pipes = pipes

    @property
    def connected(self) -> bool:
        return self._pipes is not None

    def progress(self, stats: dict[str, Any]) -> None:
        if self._pipes is None:
            return
        val = stats.get("val_acc")
        self._pipes.log.info(
            f"update {stats['update']}/{stats['total']} loss {stats['loss']:.3f} train_acc {stats['train_acc']:.3f}"
            + (f" val_acc {val:.3f}" if val is not None else "")
            + f" {stats['images_per_s']:.0f} img/s, ETA {stats.get('eta_s', 0):.0f}s")

    def summary(self, summary: dict[str, Any]) -> None:
        if self._pipes is not None:
            self._pipes.report_custom_message(summary)


@contextmanager
def pipes_reporter() -> Iterator[PipesReporter]:
    """A connected reporter on rank 0 of a Pipes-launched process; a silent one otherwise."""
    if int(os.environ.get("RANK", "0")) != 0 or PIPES_CONTEXT_ENV not in os.environ:
        yield PipesReporter()
        return
    try:
        from dagster_pipes import open_dagster_pipes
    except ImportError:  # launched by Pipes, but this interpreter lacks the protocol package
        logging.getLogger(__name__).warning("launched by Dagster Pipes but dagster-pipes is not installed: "
                                            "progress and summary go to stdout only")
        yield PipesReporter()
        return
    with open_dagster_pipes() as pipes:
        yield PipesReporter(pipes)

