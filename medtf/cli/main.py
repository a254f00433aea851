"""``medtf`` command: one parser, each subcommand module registers itself.

A command module ``medtf/cli/<name>.py`` defines ``register(subparsers)``, which adds its parser and
sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code.
Command modules import TensorFlow (and the library) only inside ``func``, so ``medtf --help``
answers instantly.

Exit codes (all commands): 0 success; 1 the job ran but a check failed or some inputs were
rejected (see each command); 2 usage error; 3 the job failed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from medtf import __version__

#: Command modules in the order ``--help`` lists them. A missing module is skipped.
COMMANDS = (
    "demo",
    "convert",
    "data",
    "train",
    "evaluate",
    "predict",
    "explain",
    "export",
    "edge",
    "serve",
)

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtf",
        description="medtf: medical imaging with Keras 3 / TensorFlow — DICOM in, validated model out.",
    )
    parser.add_argument("--version", action="version", version=f"medtf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"medtf.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"medtf.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
