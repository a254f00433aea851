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
    "distill",
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


def quiet_tensorflow() -> None:
    """TensorFlow's C++ log level, set before TensorFlow loads (an existing ``TF_CPP_MIN_LOG_LEVEL`` wins):
    3 on machines without an NVIDIA device (no CUDA probe errors on CPU-only machines), else 2."""
    import glob
    import os

    level = "2" if glob.glob("/dev/nvidia[0-9]*") else "3"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", level)


def needs_tensorflow(args) -> bool:
    """Whether the command imports TensorFlow (the edge runtime, the converter and phantoms do not)."""
    command = getattr(args, "command", None)
    if command in ("edge", "convert"):
        return False
    if command == "predict" and getattr(args, "edge", None) is not None:
        return False
    if command == "data" and getattr(args, "data_command", None) == "phantoms":
        return False
    return command is not None


#: exceptions that mean the user asked for something that cannot be done (exit 2), not a failure (exit 3)
USAGE_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
                ValueError, KeyError)


def main(argv: list[str] | None = None) -> int:
    """Parse and run one command; any exception becomes one line on stderr and an exit code (2 for usage
    mistakes, 3 for failures) — ``MEDTF_DEBUG=1`` shows the traceback."""
    import os

    quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        if needs_tensorflow(args):
            from medtf.cli._quiet import import_tensorflow_quietly

            import_tensorflow_quietly()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if os.environ.get("MEDTF_DEBUG"):
            raise
        usage = isinstance(exc, USAGE_ERRORS)
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"medtf {args.command}: {'error' if usage else 'failed'}: {text} "
              f"({type(exc).__name__}; MEDTF_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_USAGE if usage else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
