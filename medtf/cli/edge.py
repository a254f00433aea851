"""``medtf edge predict|bench``: run exported ``.tflite`` models without TensorFlow.

Exit codes: 0 ok; 1 some inputs could not be read (the others are predicted); 2 usage (e.g. the model is
not a .tflite file); 3 no input could be predicted, or the runtime failed.
"""

from __future__ import annotations

import json
import pathlib
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "edge",
        help="run / benchmark an exported .tflite with ai-edge-litert (no TensorFlow)",
        description="Edge runtime: predict raw inputs (DICOM files or series folders, NIfTI, PNG/JPEG/TIFF, .npy) "
                    "with an exported .tflite and the preprocessing chain stored in its metadata, or benchmark "
                    "latency, without importing TensorFlow or Keras.",
    )
    sub = p.add_subparsers(dest="edge_command", metavar="{predict,bench}")
    pr = sub.add_parser("predict", help="predict input files")
    pr.add_argument("model", help=".tflite file (metadata from MODEL.json or the flatbuffer)")
    pr.add_argument("inputs", nargs="+", help="DICOM files or series folders, NIfTI, PNG/JPEG/TIFF, .npy")
    pr.add_argument("--threads", type=int, default=2)
    pr.add_argument("--runtime", choices=("ai_edge_litert", "tflite_runtime"), default=None)
    pr.add_argument("--output", default=None, help="write results as JSON here (default: print)")
    pr.add_argument("--masks", default=None, help="folder for segmentation masks (.npy, on the input's grid)")
    pr.add_argument("--show-paths", action="store_true",
                    help="add each input's path to the results (default: inputs are named by their keyed "
                         "pseudonym only, since file and folder names can identify patients)")
    pr.set_defaults(func=run_predict)
    be = sub.add_parser("bench", help="latency percentiles and throughput (batch 1)")
    be.add_argument("model", help=".tflite file")
    be.add_argument("--runs", type=int, default=100)
    be.add_argument("--warmup", type=int, default=10)
    be.add_argument("--threads", type=int, default=2)
    be.add_argument("--runtime", choices=("ai_edge_litert", "tflite_runtime"), default=None)
    be.add_argument("--output", default=None, help="write the statistics as JSON here")
    be.set_defaults(func=run_bench)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_predict(args) -> int:
    from medtf.export.edge import predict_files

    try:
        results = predict_files(args.model, args.inputs, threads=args.threads, runtime=args.runtime,
                                show_paths=True)  # paths on this terminal only; dropped from files below
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    out = []
    for res in results:
        res = dict(res)
        if "mask" in res:
            import numpy as np

            if args.masks:
                folder = pathlib.Path(args.masks)
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / (res["input"].replace("#", "_").split(".")[0] + "_mask.npy")
                np.save(target, res["mask"])
                res["mask_file"] = str(target)
            res["mask_shape"] = list(res.pop("mask").shape)
            res.pop("probabilities", None)
        if "image" in res:
            res["image_shape"] = list(res.pop("image").shape)
        shown = res.get("path", res["input"])
        if not args.show_paths:
            res.pop("path", None)
        out.append((shown, res))
    errors = [(shown, r) for shown, r in out if "error" in r]
    out = [r for _, r in out]
    text = json.dumps(out, indent=2)
    if args.output:
        pathlib.Path(args.output).write_text(text + "\n")
        print(f"wrote {len(out)} results to {args.output}")
    else:
        print(text)
    for shown, r in errors:  # the user's own terminal: the path as typed
        print(f"rejected {shown}: {r['error']}", file=sys.stderr)
    if errors and len(errors) == len(out):
        print("medtf edge predict: no input could be predicted", file=sys.stderr)
        return 3
    return 1 if errors else 0


def run_bench(args) -> int:
    from medtf.export.edge import benchmark

    try:
        stats = benchmark(args.model, runs=args.runs, warmup=args.warmup, threads=args.threads,
                          runtime=args.runtime, progress=True)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(f"{pathlib.Path(args.model).name}: {stats['runtime']} {stats['runtime_version']}, {stats['threads']} threads, "
          f"{stats['runs']} runs, input {stats['input_shape']} {stats['input_dtype']}")
    print(f"  latency ms  p50 {stats['p50_ms']:.2f}  p90 {stats['p90_ms']:.2f}  p99 {stats['p99_ms']:.2f}  "
          f"mean {stats['mean_ms']:.2f}")
    print(f"  throughput  {stats['throughput_per_s']:.1f} inferences/s (batch 1)")
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(stats, indent=2) + "\n")
    return 0
