"""Decoding drop photographs into the paper's input: 8-bit grey, central square, anti-aliased.

Imagers write 8- or 16-bit grey, palette, RGB(A) or CMYK files of any size; the network
wants one ``resolution x resolution`` uint8 square (CrystalNet: central square crop, resize
to 128). Everything that turns a file into those pixels lives here, so ingest
(:func:`probe`), tensor preparation and plate labelling (:func:`load_grey`,
:func:`decode_many`) agree on what a pixel is and on which files are unreadable.

Decisions (measured in ``docs/preprocessing.md``):

- 16- and 32-bit grey (``I;16*``, ``I``, ``F``) is stretched linearly from the image's own
  minimum to its maximum onto 0..255. Scientific cameras often store 10-14 significant
  bits in a 16-bit container; a fixed ``/257`` would leave such an image nearly black with
  a few dozen grey levels. The network's contrast normalisation removes absolute
  brightness anyway. A constant image falls back to the fixed ``value/257`` mapping.
- Transparency (RGBA, LA, PA, palette or grey with a transparent colour) is composited
  on white, the way a viewer shows it, so hidden colour under alpha 0 cannot leak in.
- Colour becomes grey by ITU-R 601 luma (Pillow's ``convert("L")``; for JPEG the
  decoder's own Y channel, which is the same weighting without decoding chroma).
- Resize is LANCZOS (``reducing_gap=3``) on the central square. JPEGs are first decoded
  at a reduced DCT scale (``Image.draft``) no smaller than the crop needs and never below
  1/4: libjpeg's 1/8 scale keeps only each block's DC term, an 8x8 box filter that
  measurably aliases.
- The crop is the paper's central square (``crop="centre"``, the default) or, with
  ``crop="drop"`` (``preprocessing.crop``), a square around the drop that
  :mod:`crystal_pipeline.ingest.drop_locator` finds, :data:`DROP_MARGIN` wider than the
  drop and never larger than the central square, moved inside the frame where the drop
  is near an edge; a picture whose drop is not found gets the central square.
- EXIF orientation is ignored: plate imagers do not rotate their cameras, and a
  mis-tagged file must not silently change which pixels the crop keeps.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
import multiprocessing
import threading

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

#: Smallest JPEG DCT scale used when decoding for the network (see module docstring).
MIN_JPEG_SCALE = 1 / 4
#: Pillow's box pre-reduction before LANCZOS kicks in only when the ratio exceeds this;
#: 3 keeps the result within ~2 grey levels of a pure LANCZOS at half its cost.
REDUCING_GAP = 3.0

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_JPEG_FORMATS = ("JPEG", "MPO")  # MPO: multi-picture JPEG from some cameras; same decoder


#: What ``preprocessing.crop`` may say: the paper's central square, or a square around the drop.
CROPS = ("centre", "drop")
DEFAULT_CROP = "centre"
#: ``crop="drop"``: the square's side over the drop's diameter (room for the meniscus).
DROP_MARGIN = 1.08


def check_crop(crop: str) -> str:
    """``crop`` if it is one of :data:`CROPS`, else ValueError naming them."""
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
    return crop


class UnreadableImage(Exception):
    """A file that cannot become pixels; ``reason`` is short and meant for a quarantine row."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What ingest records about a readable file: its size and original Pillow mode."""

    width: int
    height: int
    mode: str


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether a file is an image by its extension (case ignored), as the raw archive defines."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def _reason(exc: BaseException) -> str:
    """One short, stable reason per failure kind, so quarantine reports group well."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image: cannot identify image file"
    msg = str(exc).strip() or type(exc).__name__
    if isinstance(exc, EOFError) or "truncated" in msg.lower():
        return "truncated image"
    if isinstance(exc, Image.DecompressionBombError):
        return f"too large: {msg}"
    return f"decode error: {msg}"


def _open(path: str | os.PathLike) -> Image.Image:
    """Open lazily, turning 'no such file', 'empty' and 'not an image' into reasons."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise UnreadableImage(f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise UnreadableImage("empty file")
    try:
        return Image.open(path)
    except UnreadableImage:
        raise
    except Exception as exc:  # Pillow plugins raise many types on malformed headers
        raise UnreadableImage(_reason(exc)) from exc


def probe(path: str | os.PathLike) -> ImageInfo:
    """Decode a file completely (so truncation is caught) as cheaply as possible.

    JPEGs decode at 1/8 DCT scale: truncation is still detected, because Pillow raises
    when the data ends before the decoder finishes whatever the scale, and
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left as it is (False). The file is only read.
    """
    with _open(path) as im:
        info = ImageInfo(width=im.width, height=im.height, mode=im.mode)
        try:
            if im.format in _JPEG_FORMATS:
                im.draft("L", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
        except Exception as exc:
            raise UnreadableImage(_reason(exc)) from exc
    return info


def _draft_jpeg(im: Image.Image, resolution: int) -> None:
    """Ask libjpeg for the smallest DCT scale that still leaves a crop >= resolution."""
    w, h = im.size
    scale = max(resolution / min(w, h), MIN_JPEG_SCALE)
    if scale < 1:
        im.draft("L", (math.ceil(w * scale), math.ceil(h * scale)))


def _composite_on_white(im: Image.Image) -> Image.Image:
    la = np.asarray(im.convert("RGBA").convert("LA") if im.mode not in ("LA",) else im)
    grey = la[..., 0].astype(np.uint32)
    alpha = la[..., 1].astype(np.uint32)
    out = (grey * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(out.astype(np.uint8), mode="L")


def _stretch_high_bit(im: Image.Image) -> Image.Image:
    """16/32-bit grey -> float image on 0..255 (min..max); resized in float, rounded after."""
    a = np.asarray(im, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    if hi > lo:
        a = (a - lo) * np.float32(255.0 / (hi - lo))
    else:
        fixed = lo / 257.0 if im.mode.startswith("I;16") else lo
        a = np.full(a.shape, min(max(fixed, 0.0), 255.0), dtype=np.float32)
    return Image.fromarray(a, mode="F")


def _to_grey(im: Image.Image) -> Image.Image:
    """Any mode -> 'L' (8-bit) or 'F' (float 0..255 from high-bit sources)."""
    mode = im.mode
    if mode == "L" and "transparency" not in im.info:
        return im
    if mode in _HIGH_BIT_MODES:
        return _stretch_high_bit(im)
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return _composite_on_white(im)
    if mode in ("1", "P", "RGB", "RGBX", "L"):
        return im.convert("L")
    return im.convert("RGB").convert("L")  # CMYK, YCbCr, LAB, HSV


def central_square(width: int, height: int) -> tuple[int, int, int]:
    """``(left, top, side)`` of the paper's central square of a ``width`` x ``height`` picture."""
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def drop_square(width: int, height: int, drop) -> tuple[int, int, int]:
    """``(left, top, side)`` of the square around a located drop (:data:`DROP_MARGIN` of its
    diameter, at most the central square's side), kept inside the frame; the central square
    when the drop was not found."""
    if not drop.found:
        return central_square(width, height)
    side = max(1, min(min(width, height), math.ceil(2 * drop.radius * DROP_MARGIN)))
    left = min(max(round(drop.cx - side / 2), 0), width - side)
    top = min(max(round(drop.cy - side / 2), 0), height - side)
    return left, top, side


def _square_box(im: Image.Image, crop: str) -> tuple[int, int, int]:
    w, h = im.size
    if crop == "drop":
        from crystal_pipeline.ingest.drop_locator import locate_drop

        grey = im if im.mode == "L" else im.convert("L")  # 'F' from high-bit files: clipped, only to locate
        return drop_square(w, h, locate_drop(np.asarray(grey)))
    return central_square(w, h)


def _crop_resize(im: Image.Image, resolution: int, crop: str = DEFAULT_CROP) -> Image.Image:
    """The square ``crop`` names, then anti-aliased resize.

    A hard crop first, not ``resize(box=...)``: with a box Pillow's filter reaches pixels
    outside it, so a dark well rim just beyond the crop would bleed into the edge pixels.
    Integer offsets avoid a half-pixel shift (and blur) when the sizes' difference is odd.
    """
    w, h = im.size
    left, top, side = _square_box(im, crop)
    if side != w or side != h:
        im = im.crop((left, top, left + side, top + side))
    if side == resolution:
        return im
    return im.resize((resolution, resolution), Image.Resampling.LANCZOS,
                     reducing_gap=REDUCING_GAP)


def _grey_square(path: str | os.PathLike, resolution: int, crop: str = DEFAULT_CROP) -> Image.Image:
    with _open(path) as im:
        try:
            if im.format in _JPEG_FORMATS:
                # A drop's square may be a fraction of the frame: decode at twice the resolution's need.
                _draft_jpeg(im, resolution if crop == "centre" else 2 * resolution)
            im.load()
            out = _crop_resize(_to_grey(im), resolution, crop)
            if out is im:  # already the right square: keep it alive past close()
                out = im.copy()
        except Exception as exc:
            raise UnreadableImage(_reason(exc)) from exc
    if out.mode == "F":
        a = np.clip(np.rint(np.asarray(out)), 0, 255).astype(np.uint8)
        out = Image.fromarray(a, mode="L")
    return out


def load_grey(path: str | os.PathLike, resolution: int = 128, crop: str = DEFAULT_CROP) -> np.ndarray:
    """The network's view of one file: ``(resolution, resolution)`` uint8, row-major, of the
    square ``crop`` names (:data:`CROPS`).

    Raises :class:`UnreadableImage` for anything that cannot be decoded.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    return np.array(_grey_square(path, resolution, check_crop(crop)), dtype=np.uint8)


def load_grey_bytes(path: str | os.PathLike, resolution: int = 128, crop: str = DEFAULT_CROP) -> bytes:
    """:func:`load_grey` as ``resolution**2`` raw bytes: what Parquet stores and IPC carries."""
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    return _grey_square(path, resolution, check_crop(crop)).tobytes()


def _decode_chunk(paths: list[str], resolution: int, crop: str = DEFAULT_CROP) -> list[bytes | UnreadableImage]:
    """Worker body. Bytes, not arrays, cross the process boundary: cheapest to pickle."""
    out: list[bytes | UnreadableImage] = []
    for path in paths:
        try:
            out.append(load_grey_bytes(path, resolution, crop))
        except UnreadableImage as exc:
            out.append(exc)
        except Exception as exc:  # a decoder bug must cost one image, not the run
            out.append(UnreadableImage(_reason(exc)))
    return out


def default_workers() -> int:
    """CPUs this process may use (respects affinity/cgroup pinning where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _pool_context():
    """``forkserver`` where available: forking a process that already runs threads
    (Dagster, pyarrow, torch) can deadlock; ``spawn`` elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def decode_many(
    paths: Iterable[str | os.PathLike],
    resolution: int = 128,
    workers: int | None = None,
    chunksize: int = 16,
    *,
    as_bytes: bool = False,
    crop: str = DEFAULT_CROP,
) -> Iterator[tuple[int, np.ndarray | bytes | UnreadableImage]]:
    """Decode many files in parallel, yielding ``(index, pixels | UnreadableImage)`` in order.

    ``paths`` is consumed lazily and at most ``4 * workers`` chunks are in flight, so memory
    stays bounded however long the input and however slow the consumer. An unreadable
    file yields its :class:`UnreadableImage` instead of raising. ``workers`` <= 1 (or an
    input no longer than one chunk) decodes in this process: no pool start-up cost.
    With ``as_bytes`` the pixels are ``resolution**2`` raw bytes instead of arrays; ``crop``
    is the square each picture is cut to (:data:`CROPS`).
    """
    check_crop(crop)
    workers = default_workers() if workers is None else workers
    chunksize = max(1, int(chunksize))

    def convert(result):
        return result if as_bytes else _pixels(result, resolution)

    small = hasattr(paths, "__len__") and len(paths) <= chunksize  # type: ignore[arg-type]
    if workers <= 1 or small:
        for i, path in enumerate(paths):
            yield i, convert(_decode_chunk([os.fspath(path)], resolution, crop)[0])
        return

    chunks = _chunks((os.fspath(p) for p in paths), chunksize)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())
    try:
        for index, result in _in_order(executor, chunks, resolution, 4 * workers, crop):
            yield index, convert(result)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def decode_threaded(
    paths: Iterable[str | os.PathLike],
    resolution: int = 128,
    threads: int | None = None,
    chunksize: int = 4,
    crop: str = DEFAULT_CROP,
) -> Iterator[tuple[int, np.ndarray | UnreadableImage]]:
    """:func:`decode_many` on threads of a pool that outlives the call (:func:`decode_pool`).

    Plate labelling decodes here: Pillow releases the GIL while it inflates a PNG or JPEG and
    while it resizes, so threads decode in parallel, and no process pool is started per plate
    (a forkserver pool cost about a second a plate). At most ``4 * threads`` chunks are in
    flight; results come in input order. ``threads`` <= 1 decodes in the calling thread.
    """
    threads = default_workers() if threads is None else threads
    if threads <= 1:
        yield from decode_many(paths, resolution, workers=0, crop=crop)
        return
    check_crop(crop)
    chunks = _chunks((os.fspath(p) for p in paths), max(1, int(chunksize)))
    for index, result in _in_order(decode_pool(threads), chunks, resolution, 4 * threads, crop):
        yield index, _pixels(result, resolution)


def _pixels(result: bytes | UnreadableImage, resolution: int) -> np.ndarray | UnreadableImage:
    """A worker's raw bytes as a (resolution, resolution) uint8 array; an UnreadableImage as it is."""
    if isinstance(result, UnreadableImage):
        return result
    return np.frombuffer(result, dtype=np.uint8).reshape(resolution, resolution)


_DECODE_POOLS: dict[int, ThreadPoolExecutor] = {}
_DECODE_POOLS_LOCK = threading.Lock()


def decode_pool(threads: int) -> ThreadPoolExecutor:
    """The process's decode thread pool of ``threads`` threads, created on first use and kept
    (idle threads cost nothing). A child forked after it was made gets pools of its own: a
    forked child has none of its parent's threads, so the parent's pool would never run a task."""
    with _DECODE_POOLS_LOCK:
        pool = _DECODE_POOLS.get(threads)
        if pool is None:
            pool = _DECODE_POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        return pool


def _forget_decode_pools() -> None:
    global _DECODE_POOLS_LOCK
    _DECODE_POOLS.clear()
    _DECODE_POOLS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_decode_pools)


def _in_order(executor: Executor, chunks: Iterator[list[str]], resolution: int,
              in_flight: int, crop: str = DEFAULT_CROP) -> Iterator[tuple[int, bytes | UnreadableImage]]:
    """``(index, result)`` of :func:`_decode_chunk` over ``chunks`` in input order, at most
    ``in_flight`` chunks submitted ahead; a generator closed early cancels what has not started."""
    pending = deque(executor.submit(_decode_chunk, c, resolution, crop) for c in islice(chunks, in_flight))
    index = 0
    try:
        while pending:
            results = pending.popleft().result()
            nxt = next(chunks, None)
            if nxt is not None:
                pending.append(executor.submit(_decode_chunk, nxt, resolution, crop))
            for result in results:
                yield index, result
                index += 1
    finally:
        for future in pending:
            future.cancel()


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(islice(items, size)):
        yield chunk
