"""``medtf explain RUN INPUT... --out DIR``: Grad-CAM overlays (mid-slices for 3D)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="Grad-CAM overlays (PNG) for DICOM/NIfTI/PNG inputs with a trained classifier run",
        description=(
            "Grad-CAM heatmaps for a trained 2D or 3D classifier: inputs (files or folders; DICOM series "
            "become volumes) are read through medtf.io, preprocessed with the run's stored preprocessing, "
            "and written as case_XXXX_gradcam.png overlays (three orthogonal mid-slices for 3D) plus "
            "explain.json. No file names or patient identifiers are written. "
            "Exit codes: 0 ok, 1 some inputs rejected, 2 usage/unreadable input, 3 failed."
        ),
    )
    p.add_argument("run", help="run folder written by `medtf train`")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM/NIfTI/PNG files or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the overlays")
    p.add_argument("--class", dest="class_index", type=int, default=None,
                   help="output unit to explain (default: predicted class; the positive unit for binary)")
    p.add_argument("--layer", default=None, help="feature-map layer (default: last 2D/3D feature map)")
    p.add_argument("--mode", default="auto", choices=("auto", "volume", "slice"),
                   help="how DICOM slices are grouped (default auto: series → volume)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medtf.evaluation.explain import explain_run
    from medtf.io.types import NoReadableInput

    try:
        result = explain_run(args.run, args.inputs, args.out, class_index=args.class_index,
                             layer_name=args.layer, mode=args.mode)
    except NoReadableInput as exc:
        print(f"medtf explain: {exc}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError) as exc:
        print(f"medtf explain: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - report, exit code 3
        print(f"medtf explain: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    print(f"{len(result['cases'])} overlay(s) in {args.out} (layer {result['layer']})")
    if result["rejected"]:
        print(f"medtf explain: {result['rejected']} input(s) rejected (not readable images)", file=sys.stderr)
        return 1
    return 0
