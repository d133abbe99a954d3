"""The ``consensus_labels`` table: one agreed class per image and its split.

Consensus stages its labels on disk (``STAGED_LABEL_SCHEMA``) as it agrees them image by
image; the split's one rule that needs all labels at once, identical files on one side,
starts from :func:`labelled_sharing_a_file` and ends in :func:`replace_staged_consensus_labels`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from crystal_pipeline.warehouse.connection import Warehouse, replace_rows
from crystal_pipeline.warehouse.staging import copy_to, parquet_scan, staged

LABEL_COLUMNS = ("image_id", "class_id", "class_name", "has_crystal", "n_annotators", "agreement", "split")
#: A label as consensus stages it: the table's columns, ``split`` the side of its own group,
#: and that ``group_key`` (``ingest.splits.group_key``), whose side a shared file may change.
STAGED_LABEL_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("class_id", pa.int32()), ("class_name", pa.string()), ("has_crystal", pa.bool_()),
    ("n_annotators", pa.int32()), ("agreement", pa.float64()), ("split", pa.string()), ("group_key", pa.string()),
])


def replace_consensus_labels(warehouse: Warehouse, labels: pd.DataFrame) -> None:
    """Make the table hold exactly ``labels`` (one transaction)."""
    warehouse.write(lambda con: replace_rows(con, "consensus_labels", labels), scope="consensus_labels")


def labelled_sharing_a_file(warehouse: Warehouse, labels: Path) -> list[tuple[str, str]]:
    """``(image_id, sha256)`` of the staged labels whose file hash another staged label's
    file has too, by image id: the only labels whose groups a shared file can merge."""
    hashed = f"(SELECT l.image_id, i.sha256 FROM {parquet_scan(labels)} l JOIN images i USING (image_id) " \
             "WHERE i.sha256 IS NOT NULL)"
    with warehouse.connect(read_only=True) as con:
        return con.execute(
            f"SELECT image_id, sha256 FROM {hashed} WHERE sha256 IN "
            f"(SELECT sha256 FROM {hashed} GROUP BY sha256 HAVING count(*) > 1) ORDER BY image_id").fetchall()


def replace_staged_consensus_labels(warehouse: Warehouse, labels: Path, sides: dict[str, str],
                                    folder: Path) -> pd.DataFrame:
    """Make the table hold exactly the staged ``labels``, each group in ``sides`` (group key
    -> side) moved to that side, by image id (one transaction; the final rows are written
    to ``folder`` first). Returns the stored labels per ``class_id, split`` (column ``labels``)."""
    final = folder / "consensus_labels.parquet"
    moved = pa.table({"group_key": pa.array(list(sides), pa.string()),
                      "side": pa.array(list(sides.values()), pa.string())})

    def store(con) -> pd.DataFrame:
        con.register("_moved_groups", moved)
        try:
            con.execute(
                "COPY (SELECT l.image_id, l.class_id, l.class_name, l.has_crystal, l.n_annotators, l.agreement, "
                f"coalesce(m.side, l.split) AS split FROM {parquet_scan(labels)} l "
                f"LEFT JOIN _moved_groups m USING (group_key) ORDER BY l.image_id) {copy_to(final)}")
        finally:
            con.unregister("_moved_groups")
        replace_rows(con, "consensus_labels", staged(final))
        return con.execute("SELECT class_id, split, count(*) AS labels FROM consensus_labels "
                           "GROUP BY ALL ORDER BY ALL").df()

    return warehouse.write(store, scope="consensus_labels")


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
