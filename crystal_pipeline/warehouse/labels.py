"""The ``consensus_labels`` table: one agreed class per image and its split."""

from __future__ import annotations

import pandas as pd

from crystal_pipeline.warehouse.connection import Warehouse, replace_rows

LABEL_COLUMNS = ("image_id", "class_id", "class_name", "has_crystal", "n_annotators", "agreement", "split")


def replace_consensus_labels(warehouse: Warehouse, labels: pd.DataFrame) -> None:
    """Make the table hold exactly ``labels`` (one transaction)."""
    warehouse.write(lambda con: replace_rows(con, "consensus_labels", labels), scope="consensus_labels")


def consensus_labels(warehouse: Warehouse) -> pd.DataFrame:
    """The table as stored, by image id."""
    return warehouse.query_df("SELECT * FROM consensus_labels ORDER BY image_id")


def stored_labels_with_images(warehouse: Warehouse) -> pd.DataFrame:
    """Every stored label with the ``images`` row its id names, by image id: what the
    label, share and leak checks read.

    Columns: the label's columns; the image's ``plate_id, inspection, well, drop, path,
    sha256`` (None without a row); ``image_rows`` (1 with a row, else 0) and ``ok_rows``
    (1 when that row decodes and is on disk, ``status = 'ok'``).
    """
    return warehouse.query_df(
        'SELECT l.*, i.plate_id, i.inspection, i.well, i."drop", i.path, i.sha256, '
        "CAST(i.image_id IS NOT NULL AS INTEGER) AS image_rows, "
        "CAST(coalesce(i.status = 'ok', FALSE) AS INTEGER) AS ok_rows "
        "FROM consensus_labels l LEFT JOIN images i USING (image_id) ORDER BY l.image_id")


def labelled_count(warehouse: Warehouse) -> int:
    return int(warehouse.scalar("SELECT count(*) FROM consensus_labels"))


def labelled_images(warehouse: Warehouse) -> list[tuple[str, int, str, str]]:
    """``(image_id, class_id, split, path)`` of every labelled, decodable image, by id
    (what the tensors are written from)."""
    frame = warehouse.query_df(
        "SELECT l.image_id, l.class_id, l.split, i.path FROM consensus_labels l "
        "JOIN images i USING (image_id) WHERE i.status = 'ok' ORDER BY l.image_id")
    return list(frame.itertuples(index=False, name=None))


def any_labelled_with_uv(warehouse: Warehouse) -> bool:
    """Whether a labelled, decodable image has an accepted UV picture beside it (its id with
    ``.uv``, as ``images.uv_partners`` pairs them): then the tensors carry UV pictures. One query."""
    from crystal_pipeline.wells import UV_ID_SUFFIX

    return bool(warehouse.scalar(
        "SELECT EXISTS (SELECT 1 FROM consensus_labels l JOIN images i USING (image_id) "
        "JOIN images u ON u.image_id = l.image_id || ? "
        "WHERE i.status = 'ok' AND u.imaging = 'uv' AND u.status = 'ok')", [UV_ID_SUFFIX]))


def labelled_images_per_split(warehouse: Warehouse) -> dict[str, int]:
    """``split -> count`` of labelled, decodable images (the tensor rows to expect)."""
    frame = warehouse.query_df(
        "SELECT split, count(*) AS n FROM consensus_labels l JOIN images i USING (image_id) "
        "WHERE i.status = 'ok' GROUP BY split")
    return {str(s): int(n) for s, n in zip(frame["split"], frame["n"])}
