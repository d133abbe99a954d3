"""Shared fixtures: a tiny generated archive, and a data dir wired through the env vars."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> Path:
    """Two 96-well plates of 64 px images with annotations (generated once per session)."""
    from crystal_pipeline.synthetic import write_archive

    out = tmp_path_factory.mktemp("archive") / "raw"
    write_archive(out, plates=2, seed=7, wells=96, size=64)
    return out


@pytest.fixture
def data_dir(tmp_path, tiny_archive, monkeypatch) -> Path:
    """A fresh data dir holding a copy of the tiny archive, exported as CRYSTAL_DATA_DIR."""
    data = tmp_path / "data"
    shutil.copytree(tiny_archive, data / "raw")
    monkeypatch.setenv("CRYSTAL_DATA_DIR", str(data))
    monkeypatch.delenv("CRYSTAL_RAW_DIR", raising=False)
    monkeypatch.delenv("CRYSTAL_INCOMING_DIR", raising=False)
    return data


def cli_env(data: Path) -> dict[str, str]:
    """Environment for a subprocess that runs the dagster CLI against ``data``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYSTAL_", "DAGSTER_"))}
    env["CRYSTAL_DATA_DIR"] = str(data)
    env["DAGSTER_HOME"] = str(data / "dagster_home")
    (data / "dagster_home").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", data / "dagster_home" / "dagster.yaml")
    return env
