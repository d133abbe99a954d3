"""Writing a whole synthetic raw archive, or one new plate for the incoming folder.

Every image comes from a generator seeded by (seed, plate id, well), so the bytes do
not depend on how the work was split across processes, and ``write_plate`` with the
archive's seed reproduces that archive's plate exactly. Files are written to a
hidden temporary name and renamed, and ``plate.json`` comes last, so a folder
watcher never sees half an image or a plate that looks complete before it is.
"""

from __future__ import annotations

import ctypes
import io
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

from crystal_pipeline.ingest.archive import SYNTHETIC_MARKER
from crystal_pipeline.classes import CLASS_NAMES, CLASSES, class_for_attributes, class_name
from crystal_pipeline.wells import PLATE_FORMATS, all_wells
from crystal_pipeline.synthetic import annotation_files, metadata
from crystal_pipeline.synthetic.annotators import Annotator, annotate, annotator_pool
from crystal_pipeline.synthetic.class_mix import assign_classes, normalize_mix
from crystal_pipeline.synthetic.render import DEFAULT_DIFFICULTY, render_well

log = logging.getLogger(__name__)

PNG_COMPRESS_LEVEL = 1  # 3x faster than the default for ~15% larger files
CHUNK_WELLS = 128
MALFORMED_SHARE = 0.005
GENERATED = ("plates", "annotations", "screens", "plates.csv", "synthetic_truth.csv", SYNTHETIC_MARKER)


@dataclass(frozen=True)
class PlateSummary:
    """What ``write_plate`` wrote: the latent class of every well, for scoring later."""

    plate_id: str
    plate_dir: Path
    plate_format: int
    images: int
    class_counts: dict[str, int]
    truth: tuple[tuple[str, int, float], ...]  # (well, class id, difficulty)
    seconds: float


@dataclass(frozen=True)
class ArchiveSummary:
    """What ``write_archive`` wrote; tests and the demo assert against these counts."""

    out_dir: Path
    plate_ids: tuple[str, ...]
    plate_format: int
    size: int
    seed: int
    difficulty: float
    images: int
    class_counts: dict[str, int]  # latent (rendered) class per image
    annotation_rows: int  # valid rows
    annotated_images: int
    unanimous_images: int  # all annotators gave the same attribute set, and it has a class
    unanimous_class_counts: dict[str, int]
    unanimous_correct: int  # unanimous label equals the latent class
    malformed_rows: dict[str, int]  # kind -> rows written
    numeric_well_plate: str  # annotations of this plate give wells as 1-based indices
    seconds: float = field(default=0.0, compare=False)

    @property
    def unanimous_share(self) -> float:
        return self.unanimous_images / self.annotated_images if self.annotated_images else 0.0

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed_rows.values())

    def to_json(self, with_timing: bool = True) -> dict:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["unanimous_share"] = round(self.unanimous_share, 4)
        data["malformed_total"] = self.malformed_total
        if not with_timing:
            data.pop("seconds")
            data.pop("out_dir")
        return data


def plate_ids(count: int, prefix: str = "SYN") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(1, count + 1)]


def _plate_key(plate_id: str) -> int:
    return zlib.crc32(plate_id.encode("utf-8"))


def plate_classes(plate_id: str, seed: int, plate_format: int, mix: Mapping[int, float]) -> np.ndarray:
    """Latent class per well (row-major), fixed by seed and plate id."""
    rng = np.random.default_rng([seed, _plate_key(plate_id), 0xC1A55])
    return assign_classes(rng, plate_format, mix)


# --- the work of one process ---------------------------------------------------------


@dataclass(frozen=True)
class _Chunk:
    plate_dir: str
    plate_id: str
    seed: int
    plate_format: int
    size: int
    difficulty: float
    well_indices: tuple[int, ...]  # 0-based row-major
    class_ids: tuple[int, ...]
    pool: tuple[Annotator, ...] | None  # None: images only


def _write_png(path: Path, pixels: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def _render_chunk(chunk: _Chunk) -> tuple[str, list[tuple[int, int, float, list]]]:
    wells = all_wells(chunk.plate_format)
    key = _plate_key(chunk.plate_id)
    plate_dir = Path(chunk.plate_dir)
    out = []
    for index, class_id in zip(chunk.well_indices, chunk.class_ids):
        rng = np.random.default_rng([chunk.seed, key, index, 0])
        pixels, truth = render_well(rng, class_id, chunk.size, chunk.difficulty)
        _write_png(plate_dir / f"{wells[index].name}.png", pixels)
        labels = []
        if chunk.pool is not None:
            labels = annotate(np.random.default_rng([chunk.seed, key, index, 1]), truth, list(chunk.pool))
        out.append((index, class_id, truth.difficulty, labels))
    return chunk.plate_id, out


def _tune_allocator() -> None:
    """Keep freed image buffers in the heap instead of returning them to the kernel.

    glibc hands every freed 256 KiB float image back with munmap and page-faults it
    in again on the next allocation, which doubled the render time per image here.
    Only the generator's own worker processes are changed.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _run_chunks(chunks: list[_Chunk], workers: int | None, on_done) -> None:
    """Render chunks inline (one worker) or in spawned processes.

    ``spawn`` rather than ``fork``: the caller may be a threaded Dagster or torch
    process, and forking those is unsafe.
    """
    workers = min(workers or os.cpu_count() or 1, len(chunks)) if chunks else 1
    if workers <= 1:
        for chunk in chunks:
            on_done(*_render_chunk(chunk))
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_tune_allocator) as pool:
        futures = [pool.submit(_render_chunk, chunk) for chunk in chunks]
        for future in as_completed(futures):
            on_done(*future.result())


def _chunks_for_plate(plate_dir: Path, plate_id: str, seed: int, plate_format: int, size: int,
                      difficulty: float, classes: np.ndarray, pool) -> list[_Chunk]:
    return [
        _Chunk(str(plate_dir), plate_id, seed, plate_format, size, difficulty,
               tuple(range(start, min(start + CHUNK_WELLS, plate_format))),
               tuple(int(c) for c in classes[start:start + CHUNK_WELLS]),
               None if pool is None else tuple(pool))
        for start in range(0, plate_format, CHUNK_WELLS)
    ]


def _write_plate_json(plate_dir: Path, plate_id: str, plate_format: int, seed: int, size: int, difficulty: float) -> None:
    info = {"format": plate_format, "plate_id": plate_id, "source": "synthetic",
            "generator": "crystal_pipeline.synthetic", "seed": seed, "image_size": size, "difficulty": difficulty}
    tmp = plate_dir / ".plate.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(plate_dir / "plate.json")


def _check_args(plate_format: int, size: int, seed: int, difficulty: float) -> None:
    if plate_format not in PLATE_FORMATS:
        raise ValueError(f"wells must be one of {sorted(PLATE_FORMATS)}, not {plate_format}")
    if size < 32:
        raise ValueError(f"size must be at least 32 px, not {size}")
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must lie in [0, 1], not {difficulty}")


# --- public API ------------------------------------------------------------------------


def write_plate(
    plate_dir: str | os.PathLike,
    plate_id: str,
    seed: int,
    wells: int = 1536,
    size: int = 256,
    class_mix: Mapping[int | str, float] | None = None,
    difficulty: float = DEFAULT_DIFFICULTY,
    workers: int | None = None,
) -> PlateSummary:
    """Write one plate's images and ``plate.json`` into ``plate_dir`` (nothing else).

    Meant for the incoming folder the plate sensor watches: no annotations, and
    ``plate.json`` appears only after every image is in place.
    """
    _check_args(wells, size, seed, difficulty)
    started = time.perf_counter()
    plate_dir = Path(plate_dir)
    plate_dir.mkdir(parents=True, exist_ok=True)
    classes = plate_classes(plate_id, seed, wells, normalize_mix(class_mix))
    chunks = _chunks_for_plate(plate_dir, plate_id, seed, wells, size, difficulty, classes, None)
    results: dict[int, tuple[int, float]] = {}

    def done(_plate_id, rows):
        for index, class_id, hardness, _ in rows:
            results[index] = (class_id, hardness)

    _run_chunks(chunks, workers, done)
    _write_plate_json(plate_dir, plate_id, wells, seed, size, difficulty)
    names = [w.name for w in all_wells(wells)]
    truth = tuple((names[i], results[i][0], round(results[i][1], 4)) for i in range(wells))
    counts = Counter(class_name(c) for _, c, _ in truth)
    seconds = time.perf_counter() - started
    log.info("plate %s: %d images in %.1f s -> %s", plate_id, wells, seconds, plate_dir)
    return PlateSummary(plate_id, plate_dir, wells, wells, {n: counts.get(n, 0) for n in CLASS_NAMES}, truth, seconds)


def write_archive(
    out_dir: str | os.PathLike,
    plates: int = 4,
    seed: int = 0,
    wells: int = 1536,
    size: int = 256,
    class_mix: Mapping[int | str, float] | None = None,
    difficulty: float = DEFAULT_DIFFICULTY,
    workers: int | None = None,
    malformed_share: float = MALFORMED_SHARE,
    plate_prefix: str = "SYN",
    overwrite: bool = False,
) -> ArchiveSummary:
    """Write a raw archive in DESIGN.md's input format under ``out_dir``.

    Layout: ``plates/<plate_id>/<well>.png`` + ``plate.json``, ``annotations/<plate_id>.csv``,
    ``plates.csv``, ``screens/<screen>.csv``; beside them, outside the input format,
    ``synthetic_truth.csv`` (latent class and difficulty per image) and
    ``synthetic_summary.json``. Refuses to write over an earlier archive unless
    ``overwrite`` (which removes only the paths this function writes).
    """
    _check_args(wells, size, seed, difficulty)
    if plates < 1:
        raise ValueError("plates must be at least 1")
    started = time.perf_counter()
    out = Path(out_dir)
    existing = [out / name for name in GENERATED if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds an archive ({existing[0].name}); pass overwrite=True")
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for sub in ("plates", "annotations", "screens"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    mix = normalize_mix(class_mix)
    ids = plate_ids(plates, plate_prefix)
    numeric_plate = ids[1] if len(ids) > 1 else ids[0]
    pool = annotator_pool(seed)
    chunks, pending = [], {}
    for plate_id in ids:
        plate_dir = out / "plates" / plate_id
        plate_dir.mkdir()
        classes = plate_classes(plate_id, seed, wells, mix)
        chunks += _chunks_for_plate(plate_dir, plate_id, seed, wells, size, difficulty, classes, pool)
        pending[plate_id] = wells
    results: dict[str, dict[int, tuple]] = {plate_id: {} for plate_id in ids}

    def done(plate_id, rows):
        for row in rows:
            results[plate_id][row[0]] = row[1:]
        pending[plate_id] -= len(rows)
        if pending[plate_id] == 0:
            _write_plate_json(out / "plates" / plate_id, plate_id, wells, seed, size, difficulty)
            finished = sum(1 for n in pending.values() if n == 0)
            log.info("plate %s written (%d/%d plates, %.1f s)", plate_id, finished, len(ids), time.perf_counter() - started)

    _run_chunks(chunks, workers, done)

    names = [w.name for w in all_wells(wells)]
    files: dict[str, list[dict[str, str]]] = {}
    truth_rows, class_counts, unanimous = [], Counter(), Counter()
    valid_rows = unanimous_correct = 0
    for plate_id in ids:
        rows = []
        for index in range(wells):
            class_id, hardness, labels = results[plate_id][index]
            well_text = str(index + 1) if plate_id == numeric_plate else names[index]
            for annotator, attributes in labels:
                rows.append({"plate_id": plate_id, "well": well_text, "annotator": annotator,
                             "attributes": annotation_files.attribute_field(attributes)})
            valid_rows += len(labels)
            class_counts[class_id] += 1
            agreed = {attributes for _, attributes in labels}
            agreed_class = class_for_attributes(next(iter(agreed))) if len(agreed) == 1 else None
            if agreed_class is not None:
                unanimous[agreed_class] += 1
                unanimous_correct += agreed_class == class_id
            truth_rows.append({"plate_id": plate_id, "well": names[index], "class_id": class_id,
                               "class_name": class_name(class_id), "difficulty": f"{hardness:.4f}"})
        files[f"{plate_id}.csv"] = rows

    rng = np.random.default_rng([seed, 0xBAD])
    malformed = annotation_files.malformed_counts(rng, valid_rows, malformed_share)
    files = annotation_files.insert_malformed(rng, files, malformed, unknown_plate=f"{plate_prefix}0000")
    for name, rows in files.items():
        columns = annotation_files.SHUFFLED_COLUMNS if name == f"{numeric_plate}.csv" else annotation_files.COLUMNS
        annotation_files.write_csv(out / "annotations" / name, columns, rows)
    annotation_files.write_csv(out / "plates.csv", metadata.PLATE_COLUMNS, metadata.plate_rows(ids, wells, seed))
    annotation_files.write_csv(out / "screens" / f"{metadata.screen_name(wells)}.csv", metadata.SCREEN_COLUMNS,
                               metadata.screen_rows(wells))
    annotation_files.write_csv(out / "synthetic_truth.csv", ("plate_id", "well", "class_id", "class_name", "difficulty"),
                               truth_rows)

    summary = ArchiveSummary(
        out_dir=out,
        plate_ids=tuple(ids),
        plate_format=wells,
        size=size,
        seed=seed,
        difficulty=difficulty,
        images=len(ids) * wells,
        class_counts={class_name(c): class_counts.get(c, 0) for c in CLASSES},
        annotation_rows=valid_rows,
        annotated_images=len(ids) * wells,
        unanimous_images=sum(unanimous.values()),
        unanimous_class_counts={class_name(c): unanimous.get(c, 0) for c in CLASSES},
        unanimous_correct=unanimous_correct,
        malformed_rows=malformed,
        numeric_well_plate=numeric_plate,
        seconds=time.perf_counter() - started,
    )
    (out / SYNTHETIC_MARKER).write_text(json.dumps(summary.to_json(with_timing=False), indent=2) + "\n")
    log.info("archive %s: %d images, %d annotation rows (+%d malformed), %.0f%% unanimous, %.1f s",
             out, summary.images, valid_rows, summary.malformed_total, 100 * summary.unanimous_share, summary.seconds)
    return summary
