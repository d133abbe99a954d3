"""The ``crystal-pipeline`` command: its registry, both ways to start it, and cheap listing."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from crystal_pipeline.cli import COMMANDS, build_parser, main


def test_every_registered_command_is_a_module_with_add_arguments_and_run():
    assert set(COMMANDS) == {"demo-archive", "train", "label", "export", "doctor", "warehouse"}
    for name, (module_name, help_text) in COMMANDS.items():
        assert module_name.startswith("crystal_pipeline.cli."), name
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run), module_name
        assert help_text
    usage = build_parser().format_usage()
    assert "{" + ",".join(COMMANDS) + "}" in usage  # the parser offers exactly the registry


@pytest.mark.parametrize("launcher", ["console script", "python -m"])
def test_both_launchers_list_every_command_without_heavy_imports(launcher):
    script = Path(sys.executable).with_name("crystal-pipeline")
    if launcher == "console script":
        if not script.is_file():
            pytest.skip(f"{script} is not installed (pip install -e . creates it)")
        argv = [str(script), "--help"]
    else:
        argv = [sys.executable, "-m", "crystal_pipeline", "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: crystal-pipeline")
    for name, (_, help_text) in COMMANDS.items():
        assert name in done.stdout and help_text.split()[0] in done.stdout
    # Listing the commands imports none of the heavy libraries a command may need.
    code = ("import sys; from crystal_pipeline.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'dagster', 'duckdb', 'pandas', 'matplotlib') if m in sys.modules))")
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert heavy.stdout.strip() == "[]", heavy.stderr


def test_subcommand_help_and_a_usage_error(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: crystal-pipeline {name}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
