"""One plate's labelling loop: decoded pictures in batches through the model, every file accounted for.

:func:`crystal_pipeline.plates.labelling.label_plate` chooses the model's engine
(:mod:`crystal_pipeline.plates.predictor`) and the decoder; :class:`LabelRun` holds what it
needs while the plate is in progress: which files are labelled or quarantined so far, the
time spent waiting for pixels and in the model, and the hits' pixels kept for their crystal
positions. Kept apart from ``labelling`` so that module stays the plate's public face
(``label_plate`` and the types it returns) and this one the loop that makes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crystal_pipeline.classes import CLASS_NAMES, CRYSTAL_COLUMNS
from crystal_pipeline.ingest.archive import WellFile
from crystal_pipeline.plates.labelling import (LabelledImage, LabelTimings, PlateLabels, Progress,
                                               QuarantinedImage)

if TYPE_CHECKING:
    from crystal_pipeline.model.precision import PrecisionChoice

log = logging.getLogger(__name__)


class LabelRun:
    """One plate's labelling in progress: what is labelled, quarantined and timed so far.

    Files the archive scan already flagged are quarantined at once and never decoded;
    :meth:`feed` decodes the rest and runs the model; :meth:`result` puts rows back in
    the order of ``files``.
    """

    def __init__(self, files: list[WellFile], predict: Callable[[np.ndarray], np.ndarray],
                 progress: Progress | None) -> None:
        self.files, self.predict, self.progress = files, predict, progress
        self.quarantined: dict[int, QuarantinedImage] = {}
        self.labelled: dict[int, LabelledImage] = {}
        self.to_decode = [i for i, f in enumerate(files) if f.error is None]
        for i, f in enumerate(files):
            if f.error is not None:
                self.quarantined[i] = QuarantinedImage(f.image_id, f.well, f.path, f.error, f.drop)
        self.model_s = 0.0
        self.decode_wait = 0.0
        self.locate_s = 0.0
        self.done = len(self.quarantined)
        self.keep_threshold: float | None = None  # keep the pixels of rows reaching it, to locate crystals
        self.kept: dict[int, np.ndarray] = {}

    def _run_batch(self, indices: list[int], pixels: np.ndarray) -> tuple[list[int], np.ndarray, float, np.ndarray]:
        t0 = time.perf_counter()
        probs = self.predict(pixels)
        return indices, probs, time.perf_counter() - t0, pixels

    def _collect(self, future: Future) -> None:
        """Turn a finished batch's probabilities into labelled rows, then report progress."""
        indices, probs, seconds, pixels = future.result()
        self.model_s += seconds
        crystal = probs[:, list(CRYSTAL_COLUMNS)].sum(axis=1)
        best = probs.argmax(axis=1)
        for row, i in enumerate(indices):
            f = self.files[i]
            self.labelled[i] = LabelledImage(
                image_id=f.image_id, well=f.well, path=f.path, class_id=int(best[row]) + 1,
                class_name=CLASS_NAMES[int(best[row])], crystal_prob=float(crystal[row]),
                probs=tuple(float(p) for p in probs[row]), drop=f.drop,
            )
            if self.keep_threshold is not None and crystal[row] >= self.keep_threshold:
                self.kept[i] = pixels[row].copy()
        self.done += len(indices)
        if self.progress is not None:
            self.progress(self.done, len(self.files))

    def feed(self, decode: Callable[[list[Path]], Any], batch_size: int, shape: tuple[int, ...]) -> None:
        """Decode the files (``decode(paths)`` yields ``(k, pixels or UnreadableImage)``)
        and label them in batches.

        One model thread: batch k runs there while this thread gathers batch k+1 from
        the decode threads.
        """
        from crystal_pipeline.ingest import imaging

        runner = ThreadPoolExecutor(1, thread_name_prefix="label-model")
        pending: Future | None = None
        try:
            batch_idx: list[int] = []
            batch = np.empty((batch_size, *shape), dtype=np.uint8)  # (res, res), or (2, res, res) fused
            decoded = decode([self.files[i].path for i in self.to_decode])
            t_wait = time.perf_counter()
            for k, result in decoded:
                self.decode_wait += time.perf_counter() - t_wait
                i = self.to_decode[k]
                if isinstance(result, imaging.UnreadableImage):
                    f = self.files[i]
                    self.quarantined[i] = QuarantinedImage(f.image_id, f.well, f.path, result.reason, f.drop)
                    self.done += 1
                else:
                    batch[len(batch_idx)] = result
                    batch_idx.append(i)
                    if len(batch_idx) == batch_size:
                        if pending is not None:
                            self._collect(pending)
                        pending = runner.submit(self._run_batch, batch_idx, batch)
                        batch_idx, batch = [], np.empty_like(batch)
                t_wait = time.perf_counter()
            if pending is not None:
                self._collect(pending)
                pending = None
            if batch_idx:
                self._collect(runner.submit(self._run_batch, batch_idx, batch[: len(batch_idx)]))
        finally:
            runner.shutdown(wait=True)

    def locate(self, model: Any, batch_size: int, precision: str = "fp32") -> None:
        """The kept hits' crystal positions (:func:`crystal_pipeline.model.cam.crystal_positions`),
        each against its picture's size as taken (read from the file's header), in the plate's
        own ``precision`` (bf16 where the labels were bf16; ``bench/crystal_position.py`` measures the gain)."""
        if not self.kept:
            return
        import dataclasses

        from PIL import Image

        from crystal_pipeline.model.cam import crystal_positions

        t0 = time.perf_counter()
        order = sorted(self.kept)
        sizes = []
        for i in order:
            with Image.open(self.files[i].path) as im:  # the header only: it was decoded a moment ago
                sizes.append(im.size)
        positions = crystal_positions(model, np.stack([self.kept[i] for i in order]), sizes, batch_size=batch_size,
                                      precision=precision)
        for i, position in zip(order, positions):
            self.labelled[i] = dataclasses.replace(self.labelled[i], crystal=position)
        self.kept.clear()
        self.locate_s = time.perf_counter() - t0
        log.info("crystal positions of %d hits in %.2f s", len(order), self.locate_s)

    def result(self, resolution: int, path_name: str, total_s: float, choice: "PrecisionChoice") -> PlateLabels:
        rows = [self.labelled[i] for i in sorted(self.labelled)]
        timings = LabelTimings(
            decode_wait_s=self.decode_wait, model_s=self.model_s, total_s=total_s,
            images_per_s=len(rows) / total_s if total_s > 0 else 0.0, images=len(rows), path=path_name,
            precision=choice.precision, precision_reason=choice.reason,
        )
        return PlateLabels(
            rows=rows, quarantined=[self.quarantined[i] for i in sorted(self.quarantined)], timings=timings,
            files=len(self.files), resolution=resolution,
            plate_ids={f.image_id: (f.plate_id, f.inspection) for f in self.files},
            drops=max((f.plate_drops for f in self.files), default=1),
        )
