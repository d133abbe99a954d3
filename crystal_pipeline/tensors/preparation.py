"""From the warehouse's labelled images to tensors and statistics at one resolution.

The ``prepare`` assets write the canonical resolution (128, the paper's). Training
presets and the resolution study may need another one (the CPU demo trains at 64);
they call :func:`prepare_resolution`, which runs the very same decode and write
path, so every resolution is "written the same way on demand" (DESIGN.md).
"""

from __future__ import annotations

from typing import Callable

from crystal_pipeline import locks, tensors
from crystal_pipeline.ingest.imaging import DEFAULT_CROP
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.tensors.schema import SPLITS
from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse.labels import labelled_images


def labelled_rows(warehouse: Warehouse) -> list[tuple[str, int, str, str]]:
    """``(image_id, class_id, split, path)`` of every labelled, decodable image, by id."""
    return labelled_images(warehouse)


def labelled_rows_with_uv(warehouse: Warehouse) -> list[tuple[str, int, str, str, str | None]] | None:
    """:func:`labelled_rows` with each image's UV picture path (None where its drop has none),
    or None when no labelled image has a UV picture: a visible-only archive's tensors are
    written exactly as before UV (same columns, same fingerprint)."""
    from crystal_pipeline.warehouse.images import uv_partners

    rows = labelled_rows(warehouse)
    partners = uv_partners(warehouse)
    if not any(row[0] in partners for row in rows):
        return None
    return [(*row, partners.get(row[0])) for row in rows]


def channels_trained(warehouse: Warehouse, inputs: str = "auto") -> int:
    """The kind of model a training run on this warehouse's labels gives (``models.in_channels``):
    2, fused, when labelled drops have UV pictures and ``inputs`` (``TrainConfig.inputs``) is
    'auto'; else 1, visible. What ``init_from: production`` must resolve to: a parent of
    another kind does not fit the network the run builds."""
    from crystal_pipeline.warehouse.labels import any_labelled_with_uv

    return 2 if inputs == "auto" and any_labelled_with_uv(warehouse) else 1


def expected_tensor_rows(warehouse: Warehouse) -> tuple[dict[str, int], int]:
    """``(split -> rows the tensors should hold, labelled images a UV write leaves out)``.

    A visible-only archive: every labelled, decodable image. An archive with UV pictures:
    only the drops that have both pictures (:func:`write_split_tensors` lists the others
    among its failures), so a UV picture missing here and there does not block training.
    """
    from crystal_pipeline.warehouse.labels import labelled_images_per_split

    uv_rows = labelled_rows_with_uv(warehouse)
    if uv_rows is None:
        return labelled_images_per_split(warehouse), 0
    expected: dict[str, int] = {}
    for row in uv_rows:
        if row[4] is not None:
            expected[row[2]] = expected.get(row[2], 0) + 1
    return expected, sum(1 for row in uv_rows if row[4] is None)


def write_split_tensors(warehouse: Warehouse, layout: DataLayout, resolution: int, *, workers: int | None = None,
                        progress: Callable | None = None, crop: str = DEFAULT_CROP) -> tensors.TensorWriteSummary:
    """Every split (train, val, test) at ``resolution`` cut as ``crop`` says (an empty split
    still gets its folder); with the UV column when the archive has UV pictures of labelled drops."""
    uv_rows = labelled_rows_with_uv(warehouse)
    rows = labelled_rows(warehouse) if uv_rows is None else uv_rows
    return tensors.write_tensors(rows, layout.tensors_dir(resolution), resolution,
                                 workers=workers, progress=progress, splits=SPLITS, crop=crop, uv=uv_rows is not None)


def write_stats(layout: DataLayout, resolution: int):
    """Per-pixel mean and std of the training split, saved beside the tensors.

    Under the resolution's writer lock: no tensor write commits between reading the split
    and saving, so the stats on disk are always those of the last committed train split."""
    with locks.exclusive(layout.tensors_lock(resolution)):
        train_dir = layout.tensors_split_dir(resolution, "train")
        mean, std = tensors.compute_stats(train_dir)
        uv = tensors.compute_stats(train_dir, uv=True) if tensors.split_has_uv(train_dir) else None
        tensors.save_stats(layout.stats_path(resolution), mean, std, uv)
    return mean, std


def prepare_resolution(warehouse: Warehouse, layout: DataLayout, resolution: int, *, workers: int | None = None,
                       progress: Callable | None = None, crop: str = DEFAULT_CROP) -> tensors.TensorWriteSummary:
    """Tensors and stats at ``resolution``, through the same path as the prepare assets."""
    summary = write_split_tensors(warehouse, layout, resolution, workers=workers, progress=progress, crop=crop)
    write_stats(layout, resolution)
    return summary


def current_split(warehouse: Warehouse, layout: DataLayout, resolution: int, split: str, *,
                  workers: int | None = None, crop: str = DEFAULT_CROP) -> tensors.Split:
    """Today's ``split`` (``train``, ``val`` or ``test``) at ``resolution`` (a
    :class:`~crystal_pipeline.tensors.Split`: ``image_ids``, ``class_ids`` 1..10, ``pixels``).

    Tensors at a resolution other than the prepare group's are written on demand and may
    date from an earlier consensus; they are rewritten when the split's ids (or whether it
    has UV) differ from the warehouse's or were cut with another ``crop``, so every model
    compared or evaluated is scored on the same images cut the same way.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    uv_rows = labelled_rows_with_uv(warehouse)
    rows = labelled_rows(warehouse) if uv_rows is None else [r for r in uv_rows if r[4] is not None]
    expected = [row[0] for row in rows if row[2] == split]
    split_dir = layout.tensors_split_dir(resolution, split)
    if layout.stats_path(resolution).exists() and tensors.part_files(split_dir):
        current = tensors.read_split(split_dir, resolution)
        if (list(current.image_ids) == expected and current.crop == crop
                and (current.uv is not None) == (uv_rows is not None)):
            return current
    prepare_resolution(warehouse, layout, resolution, workers=workers, crop=crop)
    return tensors.read_split(split_dir, resolution)


def current_val_split(warehouse: Warehouse, layout: DataLayout, resolution: int, *,
                      workers: int | None = None, crop: str = DEFAULT_CROP) -> tensors.Split:
    """Today's validation split (what tunes and promotes): :func:`current_split` of ``val``."""
    return current_split(warehouse, layout, resolution, "val", workers=workers, crop=crop)
