"""Where the embedded cluster goes and how its secrets are born (no server started here)."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from crystal_pipeline.service import postgres as pg

ACCOUNT = pwd.struct_passwd(("postgres", "x", 54321, 54321, "", "/nonexistent", "/bin/false"))


@pytest.fixture
def as_root_with_postgres_user(monkeypatch):
    """A folder every user can pass through (pytest's own tmp root is owner-only), the
    postgres account faked so the check runs as it does under root."""
    base = Path(tempfile.mkdtemp(dir="/var/tmp"))
    base.chmod(0o755)
    monkeypatch.setattr(pg.EmbeddedPostgres, "_run_as", staticmethod(lambda: ACCOUNT))
    monkeypatch.setattr(pg, "FALLBACK_BASE", base / "var_lib")
    yield base
    shutil.rmtree(base)


def test_a_data_dir_the_postgres_user_cannot_reach_puts_the_cluster_elsewhere(as_root_with_postgres_user):
    home = as_root_with_postgres_user / "root_home"
    data = home / "crystal" / "data"
    data.mkdir(parents=True)
    home.chmod(0o700)  # like /root: its owner only
    root = pg.cluster_root(data)
    assert root.parent == pg.FALLBACK_BASE and root.name.startswith("postgres-")
    assert pg.cluster_root(data) == root  # the same place on every start, for the supervisor and doctor
    assert pg.cluster_root(as_root_with_postgres_user / "other") != root

    home.chmod(0o711)  # searchable by others: the cluster stays beside the data
    assert pg.cluster_root(data) == data.resolve() / "postgres"
    home.chmod(0o700)
    (data / "postgres" / "data").mkdir(parents=True)
    (data / "postgres" / "data" / "PG_VERSION").write_text("15\n")  # an existing cluster is never moved
    assert pg.cluster_root(data) == data.resolve() / "postgres"


def test_secrets_are_created_owner_only_and_never_over_an_existing_file(tmp_path):
    old = os.umask(0)  # even with a permissive umask
    try:
        path = tmp_path / "password"
        pg.write_secret(path, "s3cret\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "s3cret\n"
        with pytest.raises(FileExistsError):
            pg.write_secret(path, "other\n")
        link = tmp_path / "link"
        link.symlink_to(tmp_path / "elsewhere")
        with pytest.raises(FileExistsError):
            pg.write_secret(link, "x")  # O_EXCL: never written through a planted link
        assert not (tmp_path / "elsewhere").exists()
    finally:
        os.umask(old)
