"""Both warehouse backends for the tests of this folder: a DuckDB file, and a DuckLake whose
catalog lives in a PostgreSQL server started here (the one ``make serve`` runs; its
binaries come from scripts/install_system_deps.sh)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from crystal_pipeline.warehouse import LakeTarget, Warehouse

BACKENDS = ("file", "ducklake")


@pytest.fixture(scope="session")
def lake_server(tmp_path_factory):
    """One PostgreSQL server per test worker; each lake gets a database of its own."""
    import shutil

    from crystal_pipeline.service.postgres import EmbeddedPostgres, cluster_root

    # cluster_root: as root, a folder the ``postgres`` user can reach (pytest's tmp is not).
    server = EmbeddedPostgres(cluster_root(tmp_path_factory.mktemp("lake_pg")))
    server.ensure_cluster()
    try:
        with open(server.root / "server.log", "w") as log:
            server.start(log=log)
            yield server
            server.stop()
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


def new_lake(server, folder: Path) -> LakeTarget:
    """A lake nobody has written yet: a new catalog database and an empty data folder."""
    name = f"lake_{uuid.uuid4().hex[:12]}"
    con = server.connect("postgres")
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()
    catalog = (f"dbname={name} host={server.host} port={server.port} user=crystal "
               f"password={server.password()}")
    return LakeTarget(catalog=catalog, data_path=folder / "lake")


@pytest.fixture(params=BACKENDS)
def any_warehouse(request, tmp_path) -> Warehouse:
    """A fresh, empty warehouse of each backend in turn (the lake starts its server once)."""
    if request.param == "file":
        return Warehouse(tmp_path / "w.duckdb", lock_timeout_s=5)
    return Warehouse.in_lake(new_lake(request.getfixturevalue("lake_server"), tmp_path), lock_timeout_s=5)
