"""``crystal-pipeline warehouse migrate --to ducklake|file``: move a warehouse to the other backend.

The file is ``<data_dir>/warehouse.duckdb``; the lake is the one the settings name
(``CRYSTAL_WAREHOUSE_URL`` or the instance's Postgres, ``CRYSTAL_LAKE_DATA_PATH``).
Every table is copied in one transaction and compared by row count and content hash
(:mod:`crystal_pipeline.warehouse.migrate`); exit 1 if anything differs. Stop the
service first: rows written during the copy would not be in it. Afterwards set
``CRYSTAL_WAREHOUSE`` to the new backend.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    migrate = sub.add_parser("migrate", help="copy the warehouse to the other backend and compare every table")
    migrate.add_argument("--to", required=True, choices=("ducklake", "file"), help="the backend to copy into")
    migrate.add_argument("--data-dir", help="the data directory (default: $CRYSTAL_DATA_DIR or ./data)")


def run(args: argparse.Namespace) -> int:
    from crystal_pipeline.layout import DataLayout
    from crystal_pipeline.warehouse import LakeUnavailable, Warehouse
    from crystal_pipeline.warehouse.lake import target_for
    from crystal_pipeline.warehouse.migrate import MigrationError, migrate

    layout = DataLayout.under(args.data_dir) if args.data_dir else DataLayout.from_env()
    try:
        lake = Warehouse.in_lake(target_for(layout))
    except LakeUnavailable as error:
        print(f"error: {error}")
        return 1
    file = Warehouse(layout.warehouse)
    source, target = (file, lake) if args.to == "ducklake" else (lake, file)
    if args.to == "ducklake" and not file.exists():
        print(f"error: no warehouse file at {layout.warehouse} to migrate")
        return 1
    print(f"migrating {source.describe()} -> {target.describe()}")
    try:
        copies = migrate(source, target, progress=lambda line: print("  " + line, flush=True))
    except (MigrationError, LakeUnavailable) as error:
        print(f"error: {error}")
        return 1
    for copy in copies:
        print(f"  {copy.table:<18} {copy.rows:>10,} rows  sha256 {copy.source_hash[:16]}  equal")
    print(f"done: every table equal on both sides; set CRYSTAL_WAREHOUSE={args.to} to use it")
    return 0
