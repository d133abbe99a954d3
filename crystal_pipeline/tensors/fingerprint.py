"""The one content fingerprint of tensors: what "the tensors a model was trained on" means.

sha256 over the resolution (and the crop, when it is not the default central square, so
tensors of another ``preprocessing.crop`` never pass for these), then every row's image id, class id and pixels in row order,
per split; the split digests are combined sorted by split name. It hashes content, not
Parquet bytes, so it survives a pyarrow upgrade, another compression or part size. The
writer computes it while writing (:attr:`TensorWriteSummary.fingerprint`), :func:`fingerprint`
recomputes it from the files and :func:`fingerprint_splits` from splits already in memory
(training records that value in its checkpoint and artifact); all three agree.

The bytes hashed (tag ``crystal_pipeline.tensors/v1``) are part of the format: feature
caches are keyed by this value, so changing them would orphan every cache.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from crystal_pipeline.ingest.imaging import DEFAULT_CROP, check_crop
from crystal_pipeline.tensors.reader import Split, iter_batches, split_crop, split_resolution

_FINGERPRINT_TAG = b"crystal_pipeline.tensors/v1\0"
_CHUNK_ROWS = 1024


class SplitHasher:
    """Per-split digest over (image_id, class_id, pixels) in row order, at one resolution."""

    def __init__(self, resolution: int, crop: str = DEFAULT_CROP):
        # The central square hashes as before the setting existed: caches keyed by it stay valid.
        tail = "" if check_crop(crop) == DEFAULT_CROP else f"crop={crop}\0"
        self._h = hashlib.sha256(_FINGERPRINT_TAG + f"r{resolution}\0{tail}".encode())

    def update(self, image_ids: Sequence[str], class_ids: Sequence[int], pixels: Sequence[bytes],
               uv: Sequence[bytes] | None = None) -> None:
        """``uv`` (tensors with a UV column): each row's UV bytes are hashed after its
        pixels; without it the bytes hashed are those of visible-only tensors, unchanged."""
        h = self._h
        for i, (image_id, class_id, px) in enumerate(zip(image_ids, class_ids, pixels)):
            raw = image_id.encode("utf-8")
            h.update(len(raw).to_bytes(4, "little") + raw + int(class_id).to_bytes(4, "little", signed=True))
            h.update(px)
            if uv is not None:
                h.update(uv[i])

    def update_arrays(self, image_ids: Sequence[str], class_ids: np.ndarray, pixels: np.ndarray,
                      uv: np.ndarray | None = None) -> None:
        """The same as :meth:`update` for a ``(n, res, res)`` uint8 block of images."""
        flat = np.ascontiguousarray(pixels).reshape(len(image_ids), -1)
        uv_rows = None if uv is None else [r.tobytes() for r in np.ascontiguousarray(uv).reshape(len(image_ids), -1)]
        self.update(image_ids, np.asarray(class_ids).tolist(), [row.tobytes() for row in flat], uv_rows)

    def digest(self) -> bytes:
        return self._h.digest()


def combine(named_digests: Iterable[tuple[str, bytes]]) -> str:
    """Order-independent over splits (sorted by name), so callers may list dirs in any order."""
    h = hashlib.sha256(_FINGERPRINT_TAG + b"set\0")
    for name, digest in sorted(named_digests):
        h.update(name.encode("utf-8") + b"\0" + digest)
    return h.hexdigest()


def fingerprint(split_dirs: Iterable[str | os.PathLike] | str | os.PathLike) -> str:
    """Recompute the content fingerprint of written splits (one dir or several).

    Equals :attr:`TensorWriteSummary.fingerprint` of the write that produced exactly these
    splits; splits are keyed by directory name, so the order given does not matter.
    """
    if isinstance(split_dirs, (str, os.PathLike)):
        split_dirs = [split_dirs]
    digests = []
    for split_dir in split_dirs:
        hasher = SplitHasher(split_resolution(split_dir), split_crop(split_dir))
        for ids, classes, px, uv in iter_batches(split_dir, with_uv=True):
            hasher.update_arrays(ids, classes, px, uv)
        digests.append((Path(split_dir).name, hasher.digest()))
    return combine(digests)


def fingerprint_splits(splits: Mapping[str, Split]) -> str:
    """The fingerprint of splits held in memory, keyed by split name: equal to
    :func:`fingerprint` of the folders they were read from, without reading them again."""
    digests = []
    for name, split in splits.items():
        hasher = SplitHasher(split.resolution, split.crop)
        for start in range(0, len(split), _CHUNK_ROWS):  # bounded extra memory for a big split
            stop = start + _CHUNK_ROWS
            uv = None if split.uv is None else split.uv[start:stop]
            hasher.update_arrays(split.image_ids[start:stop], split.class_ids[start:stop], split.pixels[start:stop],
                                 uv)
        digests.append((name, hasher.digest()))
    return combine(digests)
