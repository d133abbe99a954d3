"""The ``crystal-pipeline`` command: the library's entry points without Dagster.

Each subcommand lives in the module that owns its work and exposes
``add_arguments(parser)`` and ``run(args) -> int``; this file only lists them, so
importing the CLI stays cheap (torch is imported only by the commands that need it).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-archive": ("crystal_pipeline.cli.demo_archive", "write a synthetic raw archive of plates and annotations"),
    "train": ("crystal_pipeline.cli.train", "train CrystalNet on prepared Parquet tensors"),
    "label": ("crystal_pipeline.cli.label", "label a plate folder (or loose images) and write its report"),
    "export": ("crystal_pipeline.cli.export", "write a trained model as ONNX with its model card"),
    "doctor": ("crystal_pipeline.cli.doctor", "check what the service depends on; exit 1 if anything fails"),
    "warehouse": ("crystal_pipeline.cli.warehouse", "move the warehouse between its DuckDB file and a DuckLake"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crystal-pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
