"""``medtf train CONFIG.yaml [--set key=value ...] [--resume] [--folds K]``."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a YAML config (run folder: model.keras, model.json, history, logs)",
        description=(
            "Train a model described by a YAML config (see docs/training.md). Writes a run folder with "
            "the resolved config.yaml, the best model.keras, model.json (preprocessing, classes, threshold), "
            "history.csv, logs/ and checkpoints/. Exit codes: 0 ok, 2 bad config/usage, 3 training failed."
        ),
    )
    p.add_argument("config", help="training config YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, YAML-typed (e.g. --set optimizer.learning_rate=3e-4); repeatable")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last backup (same run_name / run folder)")
    p.add_argument("--folds", type=int, default=None, metavar="K",
                   help="patient-grouped K-fold cross-validation on train+val (K >= 2), with a fold ensemble on test")
    p.add_argument("--run-dir", default=None, help="run folder (default: output_dir/run_name from the config)")
    p.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                   help="default: one device; mirrored: all local GPUs (tf.distribute.MirroredStrategy); multiworker: "
                   "one process per worker (MultiWorkerMirroredStrategy; cluster from $TF_CONFIG or --cluster). "
                   "See docs/scale.md")
    p.add_argument("--cluster", default=None, metavar="FILE",
                   help="this worker's TF_CONFIG as a JSON file (cluster + task); implies --strategy multiworker")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run of the same name (its whole folder: model, evaluations, exports)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medtf.training.config import load_config

    try:
        config = load_config(args.config, args.overrides)
        if config.distill is not None:  # a distill: block: the teacher's records / task / data fill in the rest
            from medtf.training.distill import load_distill_config

            config = load_distill_config(args.config, None, args.overrides)
        if args.folds is not None:
            if args.folds < 2:
                raise ValueError(f"--folds must be >= 2. Received: {args.folds}")
            config = config.replace(folds=args.folds)
        strategy, cluster = args.strategy, None
        if args.cluster is not None:
            if strategy == "mirrored":
                raise ValueError("--cluster needs --strategy multiworker (mirrored uses this machine's GPUs only)")
            from medtf.training.trainer import load_cluster

            strategy, cluster = "multiworker", load_cluster(args.cluster)
        if strategy != "default" and config.folds and int(config.folds) >= 2:
            raise ValueError(f"--strategy {strategy} cannot be combined with --folds (train the folds one by one)")
    except (FileNotFoundError, ValueError) as exc:
        print(f"medtf train: {exc}", file=sys.stderr)
        return 2
    try:
        if config.folds and int(config.folds) >= 2:
            from medtf.training.folds import train_folds

            out = train_folds(config, resume=args.resume, run_dir=args.run_dir)
            print(f"cross-validation: {out}")
        elif config.distill is not None:
            from medtf.training.distill import distill

            out = distill(config, resume=args.resume, run_dir=args.run_dir, overwrite=args.overwrite,
                          strategy=strategy, cluster=cluster)
            print(f"run folder: {out}")
        else:
            from medtf.training.trainer import train

            out = train(config, resume=args.resume, run_dir=args.run_dir, overwrite=args.overwrite,
                        strategy=strategy, cluster=cluster)
            print(f"run folder: {out}")
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"medtf train: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - report, exit code 3
        if strategy == "multiworker" and type(exc).__name__ in ("UnavailableError", "CancelledError"):
            print(f"medtf train: training failed: a worker of the cluster stopped ({type(exc).__name__}); restart "
                  "every worker with --resume (docs/scale.md)", file=sys.stderr)
            return 3
        print(f"medtf train: training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    return 0
