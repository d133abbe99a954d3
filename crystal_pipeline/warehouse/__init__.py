"""The DuckDB warehouse: the schema and every statement that reads or writes it.

``connection`` opens short-lived connections with patience for locks (``Warehouse``)
and holds the one "replace these rows in one transaction" (``replace_rows``);
``schema`` holds the tables; ``images``, ``annotations``, ``labels``, ``models`` and
``predictions`` hold the typed reads and writes the rest of the code calls. No SQL
exists outside this package, and none is passed into it.
"""

from crystal_pipeline.warehouse.connection import Warehouse, WarehouseLocked, replace_rows
from crystal_pipeline.warehouse.images import ImageScope
from crystal_pipeline.warehouse.schema import SCHEMA, TABLES

__all__ = ["Warehouse", "WarehouseLocked", "replace_rows", "ImageScope", "SCHEMA", "TABLES"]
