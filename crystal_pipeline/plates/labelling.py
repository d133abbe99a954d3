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
from pinned host memory (:class:`PinnedStaging`). The engine and precision
that ran are in :class:`LabelTimings`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crystal_pipeline import wells
from crystal_pipeline.ingest.archive import WellFile
from crystal_pipeline.plates import fused_labelling
from crystal_pipeline.classes import CLASS_NAMES, CRYSTAL_COLUMNS, marco_outcome

if TYPE_CHECKING:
    from crystal_pipeline.model.cam import CrystalPosition
    from crystal_pipeline.model.precision import PrecisionChoice

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


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

    predict, resolution, path_name, cleanup, choice = _predictor(model, cpu_path, precision)
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
    run = _LabelRun(todo, calibrated(predict, temperature), progress)
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


class _LabelRun:
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


class PinnedStaging:
    """A page-locked (pinned) host buffer that a CUDA predictor copies each batch through.

    Why: a copy from pageable memory to the GPU is staged by the driver through its own pinned
    buffer, synchronously; from pinned memory it is one DMA that ``non_blocking=True`` can
    issue without the host waiting (issue 19 item 4: a GPU plate in half a second). One buffer
    per predictor, reused: the predictor's result comes back with ``.cpu()``, which waits for
    the stream, so the previous batch's copy has finished before the buffer is refilled.
    """

    def __init__(self) -> None:
        self.buffer = None

    def hold(self, pixels: np.ndarray):
        """A pinned uint8 tensor holding ``pixels`` (N, H, W); needs a CUDA build of torch."""
        import torch

        if self.buffer is None or self.buffer.shape[0] < len(pixels) or self.buffer.shape[1:] != pixels.shape[1:]:
            self.buffer = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
        view = self.buffer[: len(pixels)]
        view.numpy()[...] = pixels
        return view


Predictor = tuple[Callable[[np.ndarray], np.ndarray], int, str, Callable[[], None], "PrecisionChoice"]


def _predictor(model: Any, cpu_path: str = "fast", precision: str = "auto") -> Predictor:
    """(predict uint8 -> probs, resolution, path name, cleanup, precision) for a model on its device."""
    import torch

    from crystal_pipeline.model.bf16_cpu import Bf16CrystalNet
    from crystal_pipeline.model.fast_cpu import FastCrystalNet
    from crystal_pipeline.model.fusion import model_channels
    from crystal_pipeline.model.inference import batched_softmax, predict_proba
    from crystal_pipeline.model.precision import PRECISIONS, PrecisionChoice, choose_precision

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if isinstance(model, FastCrystalNet):  # prepared by the caller: its own precision
        if precision not in ("auto", model.precision):
            raise ValueError(f"a prepared {type(model).__name__} runs in {model.precision}, not {precision}")
        name = "cpu-bf16" if model.precision == "bf16" else "cpu-fast"
        return (model.predict_proba, model.resolution, name, lambda: None,
                PrecisionChoice(model.precision, "the prepared model's"))
    if getattr(model, "output_calibrated", False):  # model.onnx_engine.OnnxCrystalNet (not imported: optional)
        if precision == "bf16":
            raise ValueError("the ONNX engine runs in fp32; use --engine torch for bf16")
        return model.predict_proba, model.resolution, "onnxruntime", lambda: None, PrecisionChoice("fp32", "ONNX: fp32")
    device = next(model.parameters()).device
    choice = choose_precision(precision, device.type)
    if choice.emulated:
        log.warning("%s", choice.reason)
    # The fast CPU path is built for Table 1's one input channel; a fused model runs eager.
    if device.type == "cpu" and cpu_path == "fast" and model_channels(model) == 1:
        fast = (Bf16CrystalNet if choice.precision == "bf16" else FastCrystalNet).from_model(model)
        return (fast.predict_proba, model.resolution, "cpu-bf16" if choice.precision == "bf16" else "cpu-fast",
                fast.close, choice)
    if device.type == "cuda" and choice.precision == "bf16":
        model.eval().to(memory_format=torch.channels_last)
        model.channels_last = True
        staging = PinnedStaging()

        def predict_cuda(pixels: np.ndarray) -> np.ndarray:
            return batched_softmax(model, staging.hold(pixels), max(1, len(pixels)), num_classes=model.num_classes,
                                   device=device, autocast=torch.autocast("cuda", dtype=torch.bfloat16))

        return predict_cuda, model.resolution, "cuda-bf16", lambda: None, choice

    if device.type == "cpu":
        model.eval().to(memory_format=torch.channels_last)
        model.channels_last = True
    if choice.precision == "bf16":  # eager CPU in bf16 autocast, for comparisons

        def predict_autocast(pixels: np.ndarray) -> np.ndarray:
            return batched_softmax(model, torch.from_numpy(pixels), max(1, len(pixels)), num_classes=model.num_classes,
                                   autocast=torch.autocast("cpu", dtype=torch.bfloat16))

        return predict_autocast, model.resolution, f"{device.type}-eager-bf16", lambda: None, choice
    return ((lambda pixels: predict_proba(model, pixels, batch_size=max(1, len(pixels)))), model.resolution,
            f"{device.type}-eager", lambda: None, choice)
