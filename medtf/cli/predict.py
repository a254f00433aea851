"""``medtf predict RUN INPUT... [--out predictions.csv|.json] [--masks-dir DIR] [--edge [MODEL.tflite]]``."""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict DICOM/NIfTI/PNG files or folders with a trained run (CSV/JSON; masks as NIfTI/PNG)",
        description=(
            "Run a trained model (a run folder from `medtf train`) on DICOM/NIfTI/PNG files or folders, "
            "with the run's stored preprocessing. Classification → one row per image (probabilities, "
            "prediction at the stored threshold); segmentation → label maps written as NIfTI/PNG "
            "(large volumes by sliding window). Exit codes: 0 ok, 1 some inputs rejected, 2 usage, 3 failed."
        ),
    )
    p.add_argument("run", help="run folder (model.keras + model.json)")
    p.add_argument("inputs", nargs="+", help="files or folders")
    p.add_argument("--out", default="predictions.csv", help="output table: .csv or .json (default predictions.csv)")
    p.add_argument("--masks-dir", default=None, help="folder for masks / restored images (default: <out>_masks)")
    p.add_argument("--mask-format", choices=("auto", "nifti", "png"), default="auto")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (segmentation)")
    p.add_argument("--edge", nargs="?", const="auto", default=None, metavar="MODEL.tflite",
                   help="predict with the exported LiteRT model instead (default: the run's .tflite)")
    p.set_defaults(func=run)


def _write(rows, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(rows, indent=2))
        return
    flat = []
    for r in rows:
        f = {}
        for k, v in r.items():
            if isinstance(v, dict):
                f.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            elif isinstance(v, list):
                f[k] = ";".join(str(x) for x in v)
            else:
                f[k] = v
        flat.append(f)
    cols = []
    for f in flat:
        cols.extend(k for k in f if k not in cols)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(flat)


def run(args: argparse.Namespace) -> int:
    run_dir = pathlib.Path(args.run)
    out = pathlib.Path(args.out)
    if out.suffix.lower() not in (".csv", ".json"):
        print(f"medtf predict: --out must end in .csv or .json. Received: {args.out!r}", file=sys.stderr)
        return 2
    if not (run_dir / "model.json").exists():
        print(f"medtf predict: {run_dir}: not a run folder (no model.json)", file=sys.stderr)
        return 2
    missing = [i for i in args.inputs if not pathlib.Path(i).exists()]
    if missing:
        print(f"medtf predict: input(s) not found: {missing}", file=sys.stderr)
        return 2
    try:
        if args.edge is not None:
            from medtf.export import edge

            tfl = pathlib.Path(args.edge) if args.edge != "auto" else next(iter(sorted(run_dir.rglob("*.tflite"))), None)
            if tfl is None or not tfl.exists():
                print(f"medtf predict --edge: no .tflite model found ({args.edge}); run `medtf export` first",
                      file=sys.stderr)
                return 2
            rows = edge.predict_files(tfl, args.inputs)  # folders: series → one volume (3D models)
            rejected = [(r["input"], r["error"]) for r in rows if "error" in r]
            rows = [r for r in rows if "error" not in r]
            for r in rows:
                if "mask" in r:
                    r.pop("mask")
                    r.pop("probabilities", None)
        else:
            from medtf.training.predict import predict_inputs

            masks = args.masks_dir or out.with_name(out.stem + "_masks")
            rows, rejected = predict_inputs(run_dir, args.inputs, masks_dir=masks, mask_format=args.mask_format,
                                            overlap=args.overlap)
        _write(rows, out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"medtf predict: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001
        print(f"medtf predict: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    for path, reason in rejected:
        print(f"rejected {path}: {reason}", file=sys.stderr)
    print(f"{len(rows)} prediction(s) → {out}" + (f"; {len(rejected)} input(s) rejected" if rejected else ""))
    return 1 if rejected else 0
