#!/usr/bin/env python3
"""Device benchmark for exported .tflite files — no TensorFlow, no medtf needed.

Copy this file and the .tflite files to the device (Jetson, Raspberry Pi, phone-class Linux) with
``pip install ai-edge-litert`` (or an existing ``tflite-runtime``) and numpy, then:

    python bench_device.py model_int8.tflite [model_fp32.tflite ...] [--threads 2] [--runs 200]

Prints latency percentiles (batch 1) and throughput per file. With several files, invocations are
interleaved round-robin so background load affects every file alike, and ratios to the first file
are printed. ``--json out.json`` saves the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def interpreter_class(prefer=None):
    names = [prefer] if prefer else ["ai_edge_litert", "tflite_runtime"]
    for name in names:
        try:
            mod = __import__(f"{name}.interpreter", fromlist=["Interpreter"])
            return mod.Interpreter, name
        except ImportError:
            continue
    sys.exit("no TFLite runtime: pip install ai-edge-litert (or tflite-runtime)")


def random_input(det, rng):
    shape = tuple(int(v) for v in det["shape"])
    if np.issubdtype(det["dtype"], np.integer):
        info = np.iinfo(det["dtype"])
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(det["dtype"])
    return rng.random(shape).astype(det["dtype"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help=".tflite files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runtime", choices=("ai_edge_litert", "tflite_runtime"), default=None)
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args(argv)
    cls, runtime = interpreter_class(args.runtime)
    rng = np.random.default_rng(0)
    interps = {}
    for path in args.models:
        if not os.path.isfile(path):
            sys.exit(f"{path}: no such file")
        try:
            it = cls(model_path=path, num_threads=args.threads)
            it.allocate_tensors()
        except Exception as exc:  # noqa: BLE001 - report which file and why
            sys.exit(f"{path}: cannot load with {runtime}: {exc}")
        det = it.get_input_details()[0]
        it.set_tensor(det["index"], random_input(det, rng))
        for _ in range(args.warmup):
            it.invoke()
        interps[path] = it
    times = {p: np.empty(args.runs) for p in interps}
    for i in range(args.runs):
        for p, it in interps.items():
            t0 = time.perf_counter()
            it.invoke()
            times[p][i] = (time.perf_counter() - t0) * 1e3
    print(f"{runtime} on {platform.machine()} ({os.cpu_count()} CPUs), {args.threads} threads, {args.runs} runs")
    print(f"{'model':<40}{'MB':>7}{'p50':>9}{'p90':>9}{'p99':>9}{'inf/s':>9}{'× first':>9}")
    first = None
    out = {"runtime": runtime, "machine": platform.machine(), "threads": args.threads, "runs": args.runs,
           "models": {}}
    for p, t in times.items():
        p50 = float(np.percentile(t, 50))
        first = first or p50
        row = {"size_bytes": os.path.getsize(p), "p50_ms": p50, "p90_ms": float(np.percentile(t, 90)),
               "p99_ms": float(np.percentile(t, 99)), "throughput_per_s": 1e3 / p50, "ratio_to_first": p50 / first}
        out["models"][p] = row
        print(f"{os.path.basename(p)[:39]:<40}{row['size_bytes'] / 1e6:>7.2f}{p50:>9.2f}{row['p90_ms']:>9.2f}"
              f"{row['p99_ms']:>9.2f}{row['throughput_per_s']:>9.1f}{row['ratio_to_first']:>9.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
