"""``medtf data``: dataset utilities. Each sub-subcommand lives in ``medtf/cli/_data_<name>.py`` and
defines ``register(subparsers)``; a module that does not exist yet is skipped."""

from __future__ import annotations

import argparse
import importlib

#: Sub-subcommand modules ``medtf.cli._data_<name>``, in ``--help`` order.
SUBCOMMANDS = ("preview", "phantoms")


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "data", help="dataset utilities (preview records, generate phantoms)",
        description="Dataset utilities: `medtf data SUBCOMMAND --help` for each.",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"medtf.cli._data_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"medtf.cli._data_{name}":
                continue
            raise
        module.register(sub)

    def _usage(args) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_usage)
    return parser
