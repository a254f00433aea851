"""Benchmark: forward+backward training throughput and peak memory of every model builder on this CPU.

    python benchmarks/models.py [--quick] [--only LABEL ...]

Each builder runs in its own subprocess at its recipe input size: build, one traced warm-up training step
(``tf.function``, no XLA), then timed steps; it reports examples/s (median step time) and the peak RSS
increase over the process after imports (``resource.getrusage(...).ru_maxrss``). ``cbam_cost_ratio`` is the
step-time ratio of 3D DenseNet-121 with CBAM vs without at 64³, measured in one process with the two models'
steps interleaved (A, B, A, B…) so that load from other processes affects both alike. The baseline of the
run is ``simple_cnn``; every model's time per example is also printed relative to it.
Writes ``benchmarks/results/models.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "models.json"

# label → (registry name, kwargs, batch size, loss kind)
CASES = {
    "simple_cnn_2d_64": ("simple_cnn", dict(input_shape=(64, 64, 1), num_classes=2, task="binary"), 16, "bce"),
    "efficientnet_b0_224x224x1": ("efficientnet", dict(variant="b0", input_shape=(224, 224, 1), num_classes=2,
                                                        task="binary"), 8, "bce"),
    "densenet3d_cbam_121_64^3": ("densenet3d_cbam", dict(input_shape=(64, 64, 64, 1), num_classes=2,
                                                         task="binary"), 2, "bce"),
    "xception_multiscale_224x224x3": ("xception_multiscale", dict(input_shape=(224, 224, 3), num_classes=5,
                                                                  task="ordinal"), 4, "bce"),
    "unet_2d_256x256": ("unet", dict(spatial_dims=2, input_shape=(256, 256, 1), num_classes=2), 4, "cce"),
    "unet_3d_64^3": ("unet", dict(spatial_dims=3, input_shape=(64, 64, 64, 1), num_classes=2), 1, "cce"),
    "resnet3d_18_64^3": ("resnet3d", dict(input_shape=(64, 64, 64, 1), num_classes=2, task="binary", depth=18), 2,
                         "bce"),
    "attention_mil_1000x1024": ("attention_mil", dict(input_shape=(1000, 1024), num_classes=2), 1, "bce"),
    "restoration_unet_2d_256x256": ("restoration_unet", dict(spatial_dims=2, input_shape=(256, 256, 1)), 4, "mae"),
}
BASELINE = "simple_cnn_2d_64"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _make_step(model, kind):
    import keras
    import numpy as np
    import tensorflow as tf

    loss_fn = {"bce": keras.losses.BinaryCrossentropy(), "cce": keras.losses.CategoricalCrossentropy(),
               "mae": keras.losses.MeanAbsoluteError()}[kind]
    opt = keras.optimizers.Adam(1e-4)

    @tf.function(jit_compile=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = loss_fn(y, out)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
        return loss

    return step, np


def _data(model, batch, kind, np):
    rng = np.random.default_rng(0)
    x = rng.random((batch, *model.input_shape[1:])).astype("float32")
    out = model.output_shape
    if kind == "cce":
        y = np.eye(out[-1], dtype="float32")[rng.integers(0, out[-1], (batch, *out[1:-1]))]
    elif kind == "mae":
        y = rng.random((batch, *out[1:])).astype("float32")
    else:
        y = (rng.random((batch, *out[1:])) > 0.5).astype("float32")
    return x, y


def worker(label: str, steps: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # noqa: F401

    from medtf.models import build

    base = _rss_mb()
    name, kwargs, batch, kind = CASES[label]
    model = build(name, **kwargs)
    step, np = _make_step(model, kind)
    x, y = _data(model, batch, kind, np)
    t0 = time.perf_counter()
    float(step(x, y))  # trace + first step
    warmup = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        float(step(x, y))
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return dict(label=label, builder=name, kwargs={k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
                batch=batch, steps=steps, params=model.count_params(), step_s_median=med,
                step_s_all=times, warmup_s=warmup, examples_per_s=batch / med,
                peak_rss_delta_mb=_rss_mb() - base)


def worker_cbam(rounds: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from medtf.models import build

    kw = dict(input_shape=(64, 64, 64, 1), num_classes=2, task="binary")
    models = {"cbam": build("densenet3d_cbam", **kw), "no_cbam": build("densenet3d_cbam", cbam=None, **kw)}
    steps, data = {}, {}
    for key, model in models.items():
        steps[key], np = _make_step(model, "bce")
        data[key] = _data(model, 1, "bce", np)
        float(steps[key](*data[key]))  # trace
    times = {k: [] for k in models}
    for _ in range(rounds):  # interleaved
        for key in models:
            t0 = time.perf_counter()
            float(steps[key](*data[key]))
            times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(batch=1, rounds=rounds, step_s_median=med, step_s_all=times,
                params={k: m.count_params() for k, m in models.items()},
                cbam_cost_ratio=med["cbam"] / med["no_cbam"])


def _run_child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr or proc.stdout)[-1500:]}
    return json.loads(lines[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Model builder training throughput / memory benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps (2) and CBAM rounds (2)")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES) + ["cbam"], help="run a subset")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per model (default 5, quick 2)")
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.quick else 5)
    if args.worker:
        result = worker_cbam(steps) if args.worker == "cbam" else worker(args.worker, steps)
        print(json.dumps(result))
        return 0

    from tqdm import tqdm

    todo = args.only or [*CASES, "cbam"]
    if BASELINE not in todo:
        todo = [BASELINE, *todo]
    results, cbam = {}, None
    for label in tqdm(todo, desc="models", unit="model"):
        res = _run_child(["--worker", label, "--steps", str(steps)])
        if label == "cbam":
            cbam = res
        else:
            results[label] = res
    base = results.get(BASELINE, {})
    print(f"{'model':34s} {'params':>12s} {'batch':>5s} {'ex/s':>9s} {'s/step':>8s} {'peak ΔRSS MB':>12s} "
          f"{'s/example vs simple_cnn':>24s}")
    for label, r in results.items():
        if "error" in r:
            print(f"{label:34s} ERROR {r['error'][-300:]}")
            continue
        rel = (1 / r["examples_per_s"]) / (1 / base["examples_per_s"]) if "examples_per_s" in base else float("nan")
        r["time_per_example_vs_baseline"] = rel
        print(f"{label:34s} {r['params']:12,d} {r['batch']:5d} {r['examples_per_s']:9.3f} {r['step_s_median']:8.3f} "
              f"{r['peak_rss_delta_mb']:12.0f} {rel:24.1f}")
    if cbam is not None:
        if "error" in cbam:
            print("cbam ERROR", cbam["error"][-300:])
        else:
            print(f"cbam_cost_ratio (DenseNet-121 3D @64³, with/without CBAM, interleaved): "
                  f"{cbam['cbam_cost_ratio']:.3f}  ({cbam['step_s_median']['cbam']:.2f} s vs "
                  f"{cbam['step_s_median']['no_cbam']:.2f} s per step, batch 1)")
    import tensorflow as tf

    out = dict(benchmark="models", quick=args.quick, steps=steps, baseline=BASELINE,
               machine=dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                            load_avg_start=os.getloadavg()), tensorflow=tf.__version__,
               models=results, cbam=cbam, cbam_cost_ratio=(cbam or {}).get("cbam_cost_ratio"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
