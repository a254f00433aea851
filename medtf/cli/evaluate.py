"""``medtf evaluate RUN [--split test] [--tta [flip|dihedral]] [--out DIR]``."""

from __future__ import annotations

import argparse
import math
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="clinical metrics with CIs on a split of a run's records; report.json, PNGs, report.html",
        description=(
            "Evaluate a trained run (folder with model.keras + model.json) on one split of its records: "
            "AUC with a 95%% bootstrap CI, sensitivity/specificity/PPV/NPV/F1 at the run's threshold, "
            "confusion matrix, quadratic kappa, calibration (classification); Dice/IoU/HD95/ASSD in mm "
            "(segmentation); PSNR/SSIM (restoration). Writes report.json, PNG plots, report.html and "
            "predictions.csv (pseudonymous keys only). Exit codes: 0 ok, 2 usage/missing input, 3 failed."
        ),
    )
    p.add_argument("run", help="run folder written by `medtf train`")
    p.add_argument("--split", default="test", help="records split to evaluate (default: test)")
    p.add_argument("--tta", nargs="?", const="flip", default=None, choices=("flip", "dihedral"),
                   help="test-time augmentation: flip (alone: mean with the left-right flip) or dihedral "
                        "(the 8 flips/90-degree rotations of the last two spatial axes)")
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (default: RUN/eval-SPLIT)")
    p.add_argument("--records", default=None, metavar="DIR", help="records directory (default: from model.json)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for the AUC CI (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="images per prediction batch (default 32)")
    p.set_defaults(func=run)


def _headline(report: dict) -> str:
    m = report.get("metrics", {})
    task = report.get("task")

    def f(v):
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"

    if task == "binary":
        a = m["auc"]
        return (f"AUC {f(a['value'])} (95% CI {f(a['ci_low'])}-{f(a['ci_high'])}), sensitivity {f(m['sensitivity'])}, "
                f"specificity {f(m['specificity'])} at threshold {f(report['threshold']['value'])}")
    if task in ("multiclass", "ordinal"):
        a = m["auc"]
        return (f"macro AUC {f(a['value'])} (95% CI {f(a['ci_low'])}-{f(a['ci_high'])}), accuracy {f(m['accuracy'])}, "
                f"quadratic kappa {f(m['kappa_quadratic'])}")
    if task == "multilabel":
        return f"macro AUC {f(m['macro_auc'])}, macro F1 {f(m['macro_f1'])}"
    if task == "segmentation":
        regions = "".join(f", {k} Dice {f(v['dice']['mean'])}" for k, v in (m.get("per_region") or {}).items())
        return f"mean Dice {f(m['mean_dice'])} over {m['n_cases']} cases{regions}"
    if task == "restoration":
        others = "".join(f"; {r['method']} PSNR {f(r['psnr_mean'])} dB, SSIM {f(r['ssim_mean'])}"
                         for r in m.get("comparison") or [] if r.get("method") != "model")
        return f"PSNR {f(m['psnr_mean'])} dB, SSIM {f(m['ssim_mean'])}{others}"
    return ""


def run(args: argparse.Namespace) -> int:
    if args.n_boot < 1 or args.batch_size < 1:
        print("medtf evaluate: --n-boot and --batch-size must be >= 1", file=sys.stderr)
        return 2
    from medtf.evaluation.evaluate import evaluate_run

    try:
        report = evaluate_run(args.run, args.split, tta=args.tta, out_dir=args.out, records=args.records,
                              n_boot=args.n_boot, seed=args.seed, batch_size=args.batch_size)
    except (FileNotFoundError, ValueError) as exc:
        print(f"medtf evaluate: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - report, exit code 3
        print(f"medtf evaluate: evaluation failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    print(f"{report['task']} on split {args.split!r} ({report['n']} examples): {_headline(report)}")
    print(f"report: {report['files']['html']}")
    return 0
