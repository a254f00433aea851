"""``medtf predict RUN INPUT... [--out predictions.csv|.json] [--masks-dir DIR] [--edge [MODEL.tflite]]
[--format table|seg|sr] [--dicomweb URL --study UID [--store]]``."""

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
            "(large volumes by sliding window). --format seg|sr writes a DICOM-SEG / SR per image or series "
            "instead; --dicomweb URL --study UID reads the study from a PACS (WADO-RS) and --store writes the "
            "SEG/SR back (STOW-RS). Exit codes: 0 ok, 1 some inputs rejected, 2 usage, 3 failed."
        ),
    )
    p.add_argument("run", help="run folder (model.keras + model.json)")
    p.add_argument("inputs", nargs="*", help="files or folders (none with --dicomweb)")
    p.add_argument("--out", default="predictions.csv", help="output table: .csv or .json (default predictions.csv)")
    p.add_argument("--masks-dir", default=None, help="folder for masks / restored images (default: <out>_masks)")
    p.add_argument("--mask-format", choices=("auto", "nifti", "png"), default="auto")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (segmentation)")
    p.add_argument("--show-paths", action="store_true",
                   help="add each input's path to the output table (default: inputs are named by their keyed "
                        "pseudonym, the records' source key, since file and folder names can identify patients)")
    p.add_argument("--edge", nargs="?", const="auto", default=None, metavar="MODEL.tflite",
                   help="predict with the exported LiteRT model instead (default: the run's .tflite)")
    p.add_argument("--format", choices=("table", "seg", "sr"), default=None,
                   help="table: CSV/JSON + NIfTI/PNG masks (default); seg / sr: a DICOM-SEG (segmentation) or SR "
                        "(classifier) per image or series, in --masks-dir (default <out>_dicom)")
    p.add_argument("--dicomweb", default=None, metavar="URL", help="DICOMweb root of a PACS to read --study from")
    p.add_argument("--study", default=None, metavar="UID", help="StudyInstanceUID to predict (with --dicomweb)")
    p.add_argument("--store", action="store_true", help="store the SEG/SR back into the study (STOW-RS)")
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
    fmt = args.format or ("table" if args.dicomweb is None else None)
    if args.dicomweb is None and (args.study or args.store):
        print("medtf predict: --study and --store need --dicomweb URL", file=sys.stderr)
        return 2
    if args.dicomweb is not None and (not args.study or args.inputs):
        print("medtf predict: --dicomweb needs --study UID and no input files", file=sys.stderr)
        return 2
    if args.dicomweb is None and not args.inputs:
        print("medtf predict: give input files or folders (or --dicomweb URL --study UID)", file=sys.stderr)
        return 2
    if args.dicomweb is not None and fmt == "table":
        print("medtf predict: --dicomweb writes DICOM; use --format seg or sr (default: by the model's task)",
              file=sys.stderr)
        return 2
    if not (run_dir / "model.json").exists():
        print(f"medtf predict: {run_dir}: not a run folder (no model.json)", file=sys.stderr)
        return 2
    missing = [i for i in args.inputs if not pathlib.Path(i).exists()]
    if missing:
        print(f"medtf predict: input(s) not found: {missing}", file=sys.stderr)
        return 2
    if fmt != "table":
        return _run_dicom(args, run_dir, out, fmt)

    def produce():
        if args.edge is not None:
            from medtf.export import edge

            tfl = _find_tflite(run_dir, args.edge)
            if tfl is None:
                raise _Stop(2)
            rows = edge.predict_files(tfl, args.inputs, show_paths=args.show_paths)  # folders: series → one volume
            rejected = [(r["input"], r["error"]) for r in rows if "error" in r]
            rows = [r for r in rows if "error" not in r]
            for r in rows:
                if "mask" in r:
                    r.pop("mask")
                    r.pop("probabilities", None)
            return rows, rejected
        from medtf.training.predict import predict_inputs

        masks = args.masks_dir or out.with_name(out.stem + "_masks")
        return predict_inputs(run_dir, args.inputs, masks_dir=masks, mask_format=args.mask_format,
                              overlap=args.overlap, show_paths=args.show_paths)

    return _write_and_report(produce, out, args.inputs)


class _Stop(Exception):
    """End the command with ``code`` (its message, if any, is already printed)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def _write_and_report(produce, out: pathlib.Path, inputs, where: str = "") -> int:
    """Run ``produce() -> (rows, rejected)``, write the table, report: 2 for a usage mistake, 3 when it failed
    (or, given ``inputs``, none of them could be predicted), 1 when some inputs were rejected, else 0."""
    try:
        rows, rejected = produce()
        _write(rows, out)
    except _Stop as stop:
        return stop.code
    except (FileNotFoundError, ValueError) as exc:
        print(f"medtf predict: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001
        print(f"medtf predict: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    for path, reason in rejected:
        print(f"rejected {path}: {reason}", file=sys.stderr)
    if not rows and inputs:
        print(f"medtf predict: no readable input among {', '.join(map(str, inputs))}", file=sys.stderr)
        return 3
    print(f"{len(rows)} prediction(s) → {out}{where}" + (f"; {len(rejected)} input(s) rejected" if rejected else ""))
    return 1 if rejected else 0


def _find_tflite(run_dir: pathlib.Path, edge: str):
    """The ``--edge`` model: the file given, or the run's first ``.tflite``; None (reported) when there is none."""
    tfl = pathlib.Path(edge) if edge != "auto" else next(iter(sorted(run_dir.rglob("*.tflite"))), None)
    if tfl is None or not tfl.exists():
        print(f"medtf predict --edge: no .tflite model found ({edge}); run `medtf export` first", file=sys.stderr)
        return None
    return tfl


def _run_dicom(args: argparse.Namespace, run_dir: pathlib.Path, out: pathlib.Path, fmt: str | None) -> int:
    """--format seg|sr and --dicomweb: the same SEG / SR objects ``medtf serve`` returns, written offline."""
    dicom_dir = pathlib.Path(args.masks_dir) if args.masks_dir else out.with_name(out.stem + "_dicom")
    try:
        from medtf.serving.models import KerasRunModel, ModelError, TFLiteModel

        if args.edge is not None:
            tfl = _find_tflite(run_dir, args.edge)
            if tfl is None:
                return 2
            model = TFLiteModel(tfl)
        else:
            model = KerasRunModel(run_dir)
    except (FileNotFoundError, ValueError, ModelError) as exc:
        print(f"medtf predict: {exc}", file=sys.stderr)
        return 2
    if fmt is None:
        fmt = "seg" if model.task == "segmentation" else "sr"
    if (fmt == "seg") != (model.task == "segmentation") or model.task == "restoration":
        print(f"medtf predict: --format {fmt} does not fit a {model.task} model "
              f"({'seg' if model.task == 'segmentation' else 'sr'} does)", file=sys.stderr)
        return 2
    def produce():
        if args.dicomweb is not None:
            from medtf.serving.dicomweb import PacsError, predict_study

            try:
                res = predict_study(model, args.dicomweb, args.study, store_results=args.store, kind=fmt,
                                    out_dir=dicom_dir)
            except PacsError as exc:
                print(f"medtf predict: {exc}", file=sys.stderr)
                raise _Stop(3) from None
            rows = [{**r, "output": str(f)} for r, f in zip(res["rows"], res["files"])] \
                if len(res["rows"]) == len(res["files"]) else res["rows"]
            if args.store:
                print(f"stored {res['stored']} DICOM-{fmt.upper()} object(s) into the study")
            return rows, res["rejected"]
        from medtf.serving.dicom_out import write_files

        return write_files(model, args.inputs, dicom_dir, fmt, overlap=args.overlap)

    # local files: none predicted is exit 3, as for the table (a study on a PACS is judged by its own rejections)
    local = () if args.dicomweb is not None else tuple(args.inputs)
    return _write_and_report(produce, out, local, where=f"; DICOM-{fmt.upper()} in {dicom_dir}")
