#!/usr/bin/env python3
"""Device benchmark for exported .tflite and .onnx files — no TensorFlow, no medtf needed.

Copy this file and the model files to the device (Jetson, Raspberry Pi, phone-class Linux) with numpy and
``pip install ai-edge-litert`` (or an existing ``tflite-runtime``) for .tflite files, ``onnxruntime`` (or
the device's ``onnxruntime-gpu`` build) for .onnx files, then:

    python bench_device.py model_int8.tflite [model_fp32.tflite model.onnx ...] [--threads 2] [--runs 200]

.onnx files run with ONNX Runtime on ``--onnx-providers`` (default ``CPUExecutionProvider``; on a Jetson
with onnxruntime-gpu e.g. ``TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider``), batch 1.

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


class TFLiteRunner:
    """One .tflite file on the TFLite interpreter, input set once."""

    def __init__(self, path, cls, threads, rng):
        self.it = cls(model_path=path, num_threads=threads)
        self.it.allocate_tensors()
        det = self.it.get_input_details()[0]
        self.it.set_tensor(det["index"], random_input(det, rng))

    def invoke(self):
        self.it.invoke()


class OnnxRunner:
    """One .onnx file on ONNX Runtime (batch 1; dynamic batch axes set to 1)."""

    def __init__(self, path, threads, rng, providers):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(path, sess_options=opts, providers=providers)
        self.providers = self.sess.get_providers()
        inp = self.sess.get_inputs()[0]
        dims = [d if isinstance(d, int) else None for d in inp.shape]
        if any(d is None for d in dims[1:]):
            raise ValueError(f"input {inp.name} has dynamic sizes {inp.shape}; only the batch axis may be dynamic")
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(inp.type)
        if dtype is None:
            raise ValueError(f"input {inp.name} has type {inp.type}; expected float32 or float16")
        self.feed = {inp.name: rng.random([1] + dims[1:]).astype(dtype)}

    def invoke(self):
        self.sess.run(None, self.feed)


def random_input(det, rng):
    shape = tuple(int(v) for v in det["shape"])
    if np.issubdtype(det["dtype"], np.integer):
        info = np.iinfo(det["dtype"])
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(det["dtype"])
    return rng.random(shape).astype(det["dtype"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help=".tflite and/or .onnx files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runtime", choices=("ai_edge_litert", "tflite_runtime"), default=None)
    ap.add_argument("--onnx-providers", default="CPUExecutionProvider",
                    help="comma-separated ONNX Runtime execution providers for .onnx files, in order of preference")
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    interps = {}
    runtimes = {}
    cls = runtime = None
    for path in args.models:
        if not os.path.isfile(path):
            sys.exit(f"{path}: no such file")
        if path.lower().endswith(".onnx"):
            try:
                import onnxruntime
            except ImportError:
                sys.exit(f"{path}: .onnx files need ONNX Runtime: pip install onnxruntime (or onnxruntime-gpu)")
            try:
                it = OnnxRunner(path, args.threads, rng, [p for p in args.onnx_providers.split(",") if p])
            except Exception as exc:  # noqa: BLE001 - report which file and why
                sys.exit(f"{path}: cannot load with onnxruntime: {exc}")
            runtimes[path] = f"onnxruntime {onnxruntime.__version__} [{it.providers[0]}]"
        else:
            if cls is None:
                cls, runtime = interpreter_class(args.runtime)
            try:
                it = TFLiteRunner(path, cls, args.threads, rng)
            except Exception as exc:  # noqa: BLE001 - report which file and why
                sys.exit(f"{path}: cannot load with {runtime}: {exc}")
            runtimes[path] = runtime
        for _ in range(args.warmup):
            it.invoke()
        interps[path] = it
    times = {p: np.empty(args.runs) for p in interps}
    for i in range(args.runs):
        for p, it in interps.items():
            t0 = time.perf_counter()
            it.invoke()
            times[p][i] = (time.perf_counter() - t0) * 1e3
    names = ", ".join(sorted(set(runtimes.values())))
    print(f"{names} on {platform.machine()} ({os.cpu_count()} CPUs), {args.threads} threads, {args.runs} runs")
    print(f"{'model':<40}{'MB':>7}{'p50':>9}{'p90':>9}{'p99':>9}{'inf/s':>9}{'× first':>9}")
    first = None
    out = {"runtime": runtime or runtimes[next(iter(runtimes))], "machine": platform.machine(),
           "threads": args.threads, "runs": args.runs, "models": {}}
    for p, t in times.items():
        p50 = float(np.percentile(t, 50))
        first = first or p50
        row = {"size_bytes": os.path.getsize(p), "p50_ms": p50, "p90_ms": float(np.percentile(t, 90)),
               "p99_ms": float(np.percentile(t, 99)), "throughput_per_s": 1e3 / p50, "ratio_to_first": p50 / first,
               "runtime": runtimes[p]}
        out["models"][p] = row
        print(f"{os.path.basename(p)[:39]:<40}{row['size_bytes'] / 1e6:>7.2f}{p50:>9.2f}{row['p90_ms']:>9.2f}"
              f"{row['p99_ms']:>9.2f}{row['throughput_per_s']:>9.1f}{row['ratio_to_first']:>9.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
