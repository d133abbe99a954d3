"""The pool that renders a synthetic archive: chunks of wells, each rendered and written by a worker.

A chunk is a run of up to :data:`CHUNK_WELLS` wells of one plate. Its images come from
generators seeded by (seed, plate, well) alone, so the bytes do not depend on how wells
were split into chunks or on which process rendered them; each PNG is written with
:func:`crystal_pipeline.files.atomic_write_bytes` (rename, no fsync), so a folder watcher
never reads half an image.
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing
import os
import sys
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from crystal_pipeline.files import atomic_write_bytes
from crystal_pipeline.synthetic.annotators import Annotator, annotate
from crystal_pipeline.synthetic.hwi import PlateLighting, plate_lighting
from crystal_pipeline.synthetic.imager import DEFAULT_IMAGER, Imager, imager_named
from crystal_pipeline.synthetic.render import WellTruth, render_well, render_well_uv
from crystal_pipeline.wells import all_wells

PNG_COMPRESS_LEVEL = 1  # 3x faster than the default for ~15% larger files
CHUNK_WELLS = 128


def plate_key(plate_id: str) -> int:
    """The plate's part of every seed: a stable hash of its id (not Python's salted ``hash``)."""
    return zlib.crc32(plate_id.encode("utf-8"))


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
    imager: str = DEFAULT_IMAGER
    uv: bool = False  # also write each well's UV picture (synthetic.uv)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    # Not fsynced: the archive is regenerated from its seed, and one fsync per image
    # tripled the time to write it. The rename still hides half-written files.
    atomic_write_bytes(path, buf.getvalue(), durable=False)


def draw_well(seed: int, key: int, index: int, class_id: int, size: int, difficulty: float, imager: Imager,
              lighting: PlateLighting | None, pool: Sequence[Annotator] | None) -> tuple[np.ndarray, WellTruth, list]:
    """Well ``index`` of the plate whose seed part is ``key``, as the archive draws it: the image
    from stream (seed, key, index, 0) and, with a ``pool``, its panel's labels from (..., 1).

    One place for the streams, so a probe that skips the files (bench/twin_calibration.py)
    draws exactly the archive's wells.
    """
    pixels, _, truth, labels = draw_well_pictures(seed, key, index, class_id, size, difficulty, imager, lighting,
                                                  pool, uv=False)
    return pixels, truth, labels


def draw_well_pictures(seed: int, key: int, index: int, class_id: int, size: int, difficulty: float,
                       imager: Imager, lighting: PlateLighting | None, pool: Sequence[Annotator] | None, *,
                       uv: bool) -> tuple[np.ndarray, np.ndarray | None, WellTruth, list]:
    """:func:`draw_well` and, with ``uv``, the well's UV picture (None without), whose own
    draws (salt crystals, UV noise) come from stream (seed, key, index, 2) alone."""
    rng = np.random.default_rng([seed, key, index, 0])
    if uv:
        pixels, uv_pixels, truth = render_well_uv(rng, np.random.default_rng([seed, key, index, 2]), class_id,
                                                  size, difficulty, imager, lighting)
    else:
        (pixels, truth), uv_pixels = render_well(rng, class_id, size, difficulty, imager, lighting), None
    labels = [] if pool is None else annotate(np.random.default_rng([seed, key, index, 1]), truth, list(pool))
    return pixels, uv_pixels, truth, labels


def _render_chunk(chunk: _Chunk) -> tuple[str, list[tuple[int, int, float, list, tuple]]]:
    wells = all_wells(chunk.plate_format)
    key = plate_key(chunk.plate_id)
    plate_dir = Path(chunk.plate_dir)
    imager = imager_named(chunk.imager)
    # An imager with fixed per-plate optics (HWI) lights every well of the plate the same way.
    lighting = plate_lighting(chunk.seed, key, imager)
    out = []
    for index, class_id in zip(chunk.well_indices, chunk.class_ids):
        pixels, uv_pixels, truth, labels = draw_well_pictures(chunk.seed, key, index, class_id, chunk.size,
                                                              chunk.difficulty, imager, lighting, chunk.pool,
                                                              uv=chunk.uv)
        _write_png(plate_dir / f"{wells[index].name}.png", pixels)
        if uv_pixels is not None:  # the UV picture beside it (ingest.archive: <well>.uv.<ext>)
            _write_png(plate_dir / f"{wells[index].name}.uv.png", uv_pixels)
        out.append((index, class_id, truth.difficulty, labels, truth.geometry))
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


def run_chunks(chunks: list[_Chunk], workers: int | None, on_done) -> None:
    """Render chunks inline (one worker) or in spawned processes; ``on_done(plate_id, rows)``
    gets each chunk's ``(well index, class id, difficulty, annotator labels, geometry)`` as it
    finishes (geometry: the well's ``WellTruth.geometry``).

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
        # No list of the futures is kept: a finished future holds its chunk's rows, and
        # as_completed lets go of each one it has yielded, so rows are freed once handed on.
        for future in as_completed([pool.submit(_render_chunk, chunk) for chunk in chunks]):
            on_done(*future.result())


def chunks_for_plate(plate_dir: Path, plate_id: str, seed: int, plate_format: int, size: int,
                     difficulty: float, classes: np.ndarray, pool, imager: str = DEFAULT_IMAGER,
                     uv: bool = False) -> list[_Chunk]:
    """A plate's wells in chunks of :data:`CHUNK_WELLS`; ``pool`` None renders images without annotations."""
    return [
        _Chunk(str(plate_dir), plate_id, seed, plate_format, size, difficulty,
               tuple(range(start, min(start + CHUNK_WELLS, plate_format))),
               tuple(int(c) for c in classes[start:start + CHUNK_WELLS]),
               None if pool is None else tuple(pool), imager, uv)
        for start in range(0, plate_format, CHUNK_WELLS)
    ]
