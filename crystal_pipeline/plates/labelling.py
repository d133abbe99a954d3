"""Label one plate: every well image decoded, classified, or quarantined with a reason.

This is the library half of the plate job (the Dagster asset writes the rows into
``predictions``; the ``crystal-pipeline label`` command writes a report without
Dagster). The guarantees the plate's checks rely on:

- every file given comes back exactly once, labelled or quarantined
  (``labelled + quarantined == files``); a file the archive scan already flagged
  (``WellFile.error``) is quarantined with that reason and never decoded;
- rows come back in the order of the files given, whatever the decode order;
- decoding (threads of a pool kept for the life of the process,
  :func:`imaging.decode_threaded`; Pillow releases the GIL) runs while the model works on
  the previous batch, so a plate costs about max(decode, model), not the sum, and no
  process pool is started per plate.

On CPU the model runs in the precision :mod:`crystal_pipeline.model.precision` chooses:
fp32 through :mod:`crystal_pipeline.model.fast_cpu` (same outputs, fewer
multiplications), or bf16 through :mod:`crystal_pipeline.model.bf16_cpu` where the CPU has
AMX or AVX512-BF16; on CUDA through the plain module in bf16 autocast with channels_last,
where tensor cores make the direct convolution the fast path, each batch copied to the GPU
from pinned host memory (:class:`~crystal_pipeline.plates.predictor.PinnedStaging`). The engine
and precision that ran are in :class:`LabelTimings`. The batch loop itself is
:class:`crystal_pipeline.plates.label_run.LabelRun`; the engine, :func:`crystal_pipeline.plates.predictor.predictor`.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crystal_pipeline import wells
from crystal_pipeline.ingest.archive import WellFile
from crystal_pipeline.plates import fused_labelling
from crystal_pipeline.classes import CLASS_NAMES, marco_outcome

if TYPE_CHECKING:
    from crystal_pipeline.model.cam import CrystalPosition

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LabelledImage:
    """One image's prediction. ``class_id`` is 1-based like the warehouse's."""

    image_id: str
    well: str
    path: Path
    class_id: int
    class_name: str
    crystal_prob: float
    probs: tuple[float, ...]
    drop: int = 1
    # Where the crystal is (hits only, torch models: model.cam), fractions of the picture.
    crystal: "CrystalPosition | None" = field(default=None, compare=False)

    @property
    def slot(self) -> str:
        """``A01`` or ``A01_2``: the well and drop as hit lists and missing lists name them."""
        return wells.slot_name(self.well, self.drop)

    @property
    def marco_class(self) -> str:
        """MARCO's four-class outcome (crystals, precipitate, clear, other): the arg-max of
        the four sums of ``probs`` (:func:`crystal_pipeline.classes.marco_outcome`)."""
        return marco_outcome(self.probs)


@dataclass(frozen=True)
class QuarantinedImage:
    image_id: str
    well: str
    path: Path
    reason: str
    drop: int = 1


@dataclass(frozen=True)
class LabelTimings:
    """Wall-clock seconds. ``decode_wait_s`` is the time the labelling loop waited
    for decoded pixels (decode that overlapped the model is not in it); ``model_s``
    is the time the model spent on batches; ``images_per_s`` counts labelled images
    over ``total_s``."""

    decode_wait_s: float
    model_s: float
    total_s: float
    images_per_s: float
    images: int
    path: str  # which inference path ran: 'cpu-fast', 'cpu-bf16', 'cuda-bf16', 'onnxruntime', ...
    precision: str = "fp32"  # the model's arithmetic: 'fp32' or 'bf16'
    precision_reason: str = ""  # why (model.precision.PrecisionChoice.reason)

    @property
    def engine(self) -> str:
        """The inference engine that ran (the ``path``), as metadata and reports name it."""
        return self.path


@dataclass
class PlateLabels:
    """What :func:`label_plate` returns; rows and quarantine in input order."""

    rows: list[LabelledImage]
    quarantined: list[QuarantinedImage]
    timings: LabelTimings
    files: int
    resolution: int
    plate_ids: dict[str, tuple[str, str | None]] = field(default_factory=dict, repr=False)
    drops: int = 1  # drops per well of the plate (plate.json's, else the largest found)

    def __post_init__(self) -> None:
        if len(self.rows) + len(self.quarantined) != self.files:
            raise AssertionError(
                f"labelling lost files: {len(self.rows)} labelled + {len(self.quarantined)} quarantined"
                f" != {self.files} given")

    @property
    def probs(self) -> np.ndarray:
        """(labelled, 10) float32, row i belonging to ``rows[i]``."""
        if not self.rows:
            return np.zeros((0, len(CLASS_NAMES)), dtype=np.float32)
        return np.asarray([r.probs for r in self.rows], dtype=np.float32)

    def missing_wells(self, plate_format: int | None) -> list[str]:
        """Wells of ``plate_format`` with neither a label nor a quarantine entry, row-major
        (none for loose images, ``plate_format`` None)."""
        if plate_format is None:
            return []
        present = [wells.slot_name(r.well, r.drop) for r in self.rows]
        present += [wells.slot_name(q.well, q.drop) for q in self.quarantined]
        return wells.missing_wells(present, plate_format, self.drops)

    def hits(self, threshold: float) -> list[LabelledImage]:
        """Crystal hits (``crystal_prob >= threshold``), most likely first."""
        return sorted((r for r in self.rows if r.crystal_prob >= threshold),
                      key=lambda r: (-r.crystal_prob, r.image_id))

    def prediction_rows(self, model_version: str, predicted_at: _dt.datetime | None = None) -> list[dict[str, Any]]:
        """Rows in the shape of the warehouse's ``predictions`` table (DESIGN.md)."""
        predicted_at = predicted_at or _dt.datetime.now(_dt.timezone.utc)
        out = []
        for r in self.rows:
            plate_id, inspection = self.plate_ids.get(r.image_id, (None, None))
            out.append({
                "image_id": r.image_id, "plate_id": plate_id, "inspection": inspection, "well": r.well,
                "model_version": model_version, "class_id": r.class_id, "class_name": r.class_name,
                "crystal_prob": r.crystal_prob, "probs": list(r.probs), "marco_class": r.marco_class,
                "predicted_at": predicted_at,
            })
        return out


def missing_wells(files: Sequence[WellFile], plate_format: int | None = None) -> list[str]:
    """Wells of the plate's format with no file at all, in row-major order.

    A well whose only file is quarantined is not missing: it was imaged, and the
    quarantine list says what went wrong. Files with no valid well name occupy no
    well. ``plate_format`` defaults to the one the archive scan decided.
    """
    if plate_format is None:
        formats = {f.plate_format for f in files if f.plate_format is not None}
        if len(formats) > 1:
            raise ValueError(f"files from plates of several formats: {sorted(formats)}")
        if not formats:
            return []
        plate_format = formats.pop()
    if plate_format not in wells.PLATE_FORMATS:
        raise ValueError(f"unknown plate format {plate_format}: use one of {sorted(wells.PLATE_FORMATS)}")
    drops = max((f.plate_drops for f in files), default=1)
    return wells.missing_wells((f.slot for f in labelled_files(files) if f.row is not None), plate_format, drops)


def labelled_files(files: Sequence[WellFile]) -> list[WellFile]:
    """The files a plate's labelling accounts for: every visible picture, and a UV picture
    only when quarantined (a UV picture without its visible one must reach the quarantine
    list). An accepted UV picture is its visible partner's second channel, not a file of its own."""
    return [f for f in files if f.imaging != "uv" or f.error is not None]


def label_plate(
    files: list[WellFile],
    model: Any,
    *,
    batch_size: int = 128,
    workers: int | None = None,
    progress: Progress | None = None,
    cpu_path: str = "fast",
    precision: str = "auto",
    locate_threshold: float | None = None,
) -> PlateLabels:
    """Classify every file of a plate with ``model`` (a CrystalNet, or a prepared
    :class:`~crystal_pipeline.model.fast_cpu.FastCrystalNet`, or an
    exported :class:`~crystal_pipeline.model.onnx_engine.OnnxCrystalNet`).

    Probabilities (and so ``crystal_prob``) are calibrated with the temperature stored in
    the model's artifact (``model.artifact_meta``; T = 1 for artifacts without one).

    ``workers``: decode threads (default: the CPUs this process may use; 0 or 1
    decodes in the calling thread, before each batch). ``progress(done, total)`` is called
    after each batch. ``precision``: ``auto``, ``fp32`` or ``bf16``
    (:func:`crystal_pipeline.model.precision.choose_precision`); a prepared fast model or an
    ONNX model runs in its own precision (fp32 for ONNX; asking it for bf16 is an error).
    ``cpu_path="eager"`` runs the plain module on CPU instead of the fast path (for
    comparisons and as a fallback; both give the same labels). The eager CPU and the
    CUDA paths move ``model`` to channels_last (as :func:`model.load` does on CUDA);
    the fast path copies the weights and leaves ``model`` as it is. A fused visible + UV
    model (``in_channels`` 2) reads each visible picture with its UV partner among ``files``
    (:mod:`crystal_pipeline.plates.fused_labelling`); one without is quarantined.

    ``locate_threshold``: the images whose crystal_prob reaches it (the plate's hits) get their
    crystal's position (``LabelledImage.crystal``, :mod:`crystal_pipeline.model.cam`), from the
    decoded pixels kept for them alone, in batches after the plate is labelled; only for a
    torch CrystalNet (an ONNX or prepared fast model has no gradients to follow).
    """
    from crystal_pipeline.ingest import imaging

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    started = time.perf_counter()
    if cpu_path not in ("fast", "eager"):
        raise ValueError(f"cpu_path must be 'fast' or 'eager', got {cpu_path!r}")
    from crystal_pipeline.model.artifact import calibration_of
    from crystal_pipeline.model.fusion import model_channels
    from crystal_pipeline.model.inference import calibrated
    from crystal_pipeline.plates.label_run import LabelRun
    from crystal_pipeline.plates.predictor import predictor

    predict, resolution, path_name, cleanup, choice = predictor(model, cpu_path, precision)
    # An exported ONNX model has its temperature inside the graph (model.onnx_engine).
    temperature = (1.0 if getattr(model, "output_calibrated", False)
                   else calibration_of(getattr(model, "artifact_meta", None))[0])
    workers = imaging.default_workers() if workers is None else workers
    # Keep at least a batch decoding ahead: decode_threaded holds 4 * workers chunks in flight.
    chunksize = max(4, math.ceil(batch_size / (4 * max(1, workers))))
    # The square the model was trained on (preprocessing.crop; artifacts before it: the centre).
    crop = (getattr(model, "artifact_meta", None) or {}).get("crop", imaging.DEFAULT_CROP)
    decode = lambda paths: imaging.decode_threaded(paths, resolution, workers, chunksize, crop=crop)  # noqa: E731
    todo, shape = labelled_files(files), (resolution, resolution)
    if model_channels(model) > 1:  # visible + UV stacked (plates.fused_labelling)
        todo, uv_of = fused_labelling.fused_files(files)
        decode = fused_labelling.pair_decoder(uv_of, resolution, workers, chunksize, crop)
        shape = (2, *shape)
    run = LabelRun(todo, calibrated(predict, temperature), progress)
    # Crystal positions (model.cam) map a visible picture's central square back to the picture:
    # not yet for a fused model's two channels or a drop-centred crop (docs/decisions.md).
    locatable = hasattr(model, "conv4") and shape == (resolution, resolution) and crop == imaging.DEFAULT_CROP
    run.keep_threshold = locate_threshold if locatable else None
    try:
        run.feed(decode, batch_size, shape)
    finally:
        cleanup()
    run.locate(model, batch_size, choice.precision)
    return run.result(resolution, path_name, time.perf_counter() - started, choice)
