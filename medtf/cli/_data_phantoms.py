"""``medtf data phantoms``: write synthetic DICOM / NIfTI phantoms (the embedded default data).

``medtf/cli/data.py`` discovers this module and calls :func:`register` with its sub-parsers;
``data_tools/phantoms.py`` reuses :func:`add_arguments` and :func:`run` as a standalone script.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the phantom options to ``p``."""
    p.add_argument("kind", choices=("cxr", "ct", "mri"), help="cxr: DX chest X-rays ± opacity; ct: CT series ± nodules; mri: NIfTI volumes + tumour masks")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--patients", type=int, default=None, help="number of fake patients (default: cxr 20, ct 6, mri 6)")
    p.add_argument("--studies", type=int, default=2, help="studies per patient (default 2)")
    p.add_argument("--size", type=int, default=None, help="rows = columns (default: cxr 256, ct 128, mri 64)")
    p.add_argument("--slices", type=int, default=None, help="slices per CT series / MRI volume (default: ct 48, mri 48)")
    p.add_argument("--positive-fraction", type=float, default=None, help="fraction of positives (opacity / nodule / tumour)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``phantoms`` to the ``medtf data`` sub-parsers."""
    p = subparsers.add_parser(
        "phantoms",
        help="write synthetic DICOM/NIfTI phantoms with a learnable signal",
        description="Write synthetic phantoms: DX chest X-rays with/without opacities (several transfer "
        "syntaxes, some MONOCHROME1), CT series with/without nodules, MRI volumes with tumour masks. "
        "All patients are fake. Writes labels.csv (path,label) and phantoms.json beside the images.",
    )
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the phantoms described by ``args``; exit code 0, or 2 for bad arguments."""
    from medtf.synthetic import phantoms as ph

    kw: dict = {"studies_per_patient": args.studies, "seed": args.seed, "progress": not args.quiet}
    if args.patients is not None:
        kw["n_patients"] = args.patients
    if args.positive_fraction is not None:
        kw["tumor_fraction" if args.kind == "mri" else "positive_fraction"] = args.positive_fraction
    if args.kind == "mri":
        if args.size is not None or args.slices is not None:
            size = args.size or 64
            kw["shape"] = (args.slices or 48, size, size)
    else:
        if args.size is not None:
            kw["size"] = args.size
        if args.slices is not None:
            if args.kind != "ct":
                print("error: --slices applies to ct and mri only", file=sys.stderr)
                return 2
            kw["n_slices"] = args.slices
    try:
        result = ph.write_phantoms(args.kind, args.out, **kw)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    labels = [it["label"] for it in result.items]
    print(
        f"wrote {len(result)} {args.kind} units for {len(result.patients)} fake patients to {result.root} "
        f"(label 1: {sum(labels)}, label 0: {len(labels) - sum(labels)}); labels: {result.labels_csv}"
    )
    return 0
