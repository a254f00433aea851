"""``medtf distill TEACHER_RUN CONFIG [--set key=value ...] [--resume] [--overwrite]``."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "distill",
        usage="medtf distill [-h] [TEACHER_RUN] CONFIG [--set KEY=VALUE ...] [--resume] [--run-dir RUN_DIR] "
              "[--overwrite]",
        help="train a student model on a trained teacher run's soft outputs + the labels (knowledge distillation)",
        description=(
            "Knowledge distillation (Hinton et al. 2015; see docs/training.md): train the model of CONFIG on "
            "alpha x label loss + (1 - alpha) x T^2 x KL(teacher_T || student_T), the teacher run scoring the same "
            "augmented batches. The config's distill: block sets temperature (default 4), alpha (default 0.5) and "
            "optionally teacher; records, task and data default to the teacher's. Writes a normal run folder "
            "(model.keras, model.json with the teacher and settings under 'distill') for medtf evaluate / export. "
            "Exit codes: 0 ok, 2 bad config/usage (unknown teacher, mismatched task or preprocessing), "
            "3 training failed."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="the teacher's run folder (optional when the config sets distill.teacher) and the student's "
                   "training config YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, YAML-typed (e.g. --set distill.temperature=2); repeatable")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted distillation run from its last backup (same run folder)")
    p.add_argument("--run-dir", default=None, help="run folder (default: output_dir/run_name from the config)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run of the same name (its whole folder: model, evaluations, exports)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medtf.training.distill import distill, load_distill_config

    try:
        if len(args.paths) > 2:
            raise ValueError(f"expected [TEACHER_RUN] CONFIG, got {len(args.paths)} paths: {args.paths}")
        teacher, config_path = (None, args.paths[0]) if len(args.paths) == 1 else args.paths
        config = load_distill_config(config_path, teacher, args.overrides)
    except (FileNotFoundError, ValueError) as exc:
        print(f"medtf distill: {exc}", file=sys.stderr)
        return 2
    try:
        out = distill(config, resume=args.resume, run_dir=args.run_dir, overwrite=args.overwrite)
        print(f"run folder: {out}")
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"medtf distill: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - report, exit code 3
        print(f"medtf distill: training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    return 0
