"""The warehouse: the schema and every statement that reads or writes it.

``connection`` opens short-lived connections to a DuckDB file (with patience for
locks) or a DuckLake (``lake``: concurrent writers, catalog in Postgres), behind one
``Warehouse``, and holds the one "replace these rows in one transaction" (``replace_rows``);
:func:`open_warehouse` picks the backend the layout's settings name;
``schema`` holds the tables; ``images``, ``annotations``, ``labels``, ``models`` and
``predictions`` hold the typed reads and writes the rest of the code calls. No SQL
exists outside this package, and none is passed into it.
"""

from crystal_pipeline.warehouse.connection import Warehouse, WarehouseLocked, replace_rows
from crystal_pipeline.warehouse.images import ImageScope
from crystal_pipeline.warehouse.lake import LakeTarget, LakeUnavailable
from crystal_pipeline.warehouse.schema import SCHEMA, TABLES


def open_warehouse(layout, *, lock_timeout_s: float = 300.0) -> Warehouse:
    """The warehouse a :class:`~crystal_pipeline.layout.DataLayout` names: its DuckDB file, or with
    ``warehouse_backend == "ducklake"`` its lake (``lake.target_for``)."""
    if layout.warehouse_backend == "ducklake":
        from crystal_pipeline.warehouse.lake import target_for

        return Warehouse.in_lake(target_for(layout), lock_timeout_s=lock_timeout_s)
    return Warehouse(layout.warehouse, lock_timeout_s=lock_timeout_s)


__all__ = ["Warehouse", "WarehouseLocked", "LakeTarget", "LakeUnavailable", "open_warehouse", "replace_rows",
           "ImageScope", "SCHEMA", "TABLES"]
