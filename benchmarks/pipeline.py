"""Input-pipeline throughput: medtf.data vs a bare TFRecordDataset + parse, and vs model training.

Generates records like the pneumonia recipe's (N 256×256 uint8 grey images, 4 shards), then measures
examples/s, alternating the subjects round by round so a shared, loaded machine affects all alike:

  raw           TFRecordDataset(files).map(parse_example).batch(32)           — the bare baseline
  raw_parallel  the same with map(num_parallel_calls=AUTOTUNE) + prefetch     — reported only
  pipeline      build_dataset, no augmentation: scale /255, resize to 224×224, batch 32; grey (1 channel,
                as the pneumonia recipe and the grayscale-ready EfficientNet take it; --channels 3 repeats it)
  standard      the same with the "standard" augmentation policy (training=True)
  model         EfficientNet-B0 (weights=None) 224×224×3 train_on_batch, batch 16

and writes benchmarks/results/pipeline.json with the median-over-rounds throughputs and
ratio_vs_raw = pipeline / raw (target ≥ 0.9), ratio_vs_raw_standard = standard / raw (reported),
ratio_vs_model = standard / model (target ≥ 2), plus the same ratios against raw_parallel.

Usage: python benchmarks/pipeline.py [--quick] [--examples N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from medtf.data import DataConfig, build_dataset  # noqa: E402
from medtf.preprocess import Preprocessing  # noqa: E402
from medtf.records.encode import encode_example  # noqa: E402
from medtf.records.schema import SCHEMA_VERSION, parse_example  # noqa: E402

BATCH = 32


def write_records(directory: pathlib.Path, n: int, shards: int = 4, size: int = 256) -> list[str]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    files = [f"train-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]
    writers = [tf.io.TFRecordWriter(str(directory / f)) for f in files]
    counts = {"0": 0, "1": 0}
    for i in range(n):
        label = i % 2
        # a smooth "chest" with noise, a bright blob for positives
        img = 80 + 60 * np.exp(-(((yy - size / 2) / (size / 3)) ** 2 + ((xx - size / 2) / (size / 4)) ** 2))
        if label:
            cy, cx = rng.integers(60, size - 60, 2)
            img += 70 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 200.0)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)[..., None]
        writers[i % shards].write(encode_example(img, spacing=[1.0, 1.0], patient=f"p{i}", source=f"bench/{i}",
                                                 image_dtype="uint8", label=[label], modality="PNG"))
        counts[str(label)] += 1
    for w in writers:
        w.close()
    manifest = {
        "schema_version": SCHEMA_VERSION, "image_dtype": "uint8", "mode": "slice", "spatial_dims": 2,
        "channels": 1, "label_names": ["normal", "pneumonia"], "preprocessing": {}, "files": [],
        "splits": {"train": {"examples": n, "patients": n, "labels": counts, "shards": files}},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return [str(directory / f) for f in files]


def consume(ds) -> int:
    n = 0
    for batch in ds:
        n += int(tf.shape(batch[0] if isinstance(batch, tuple) else batch["image"])[0])
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="400 examples, 2 rounds, 3 model batches")
    ap.add_argument("--examples", type=int, help="number of records (default 2000; quick 400)")
    ap.add_argument("--rounds", type=int, help="alternating measurement rounds (default 5; quick 2)")
    ap.add_argument("--model-batches", type=int, help="timed EfficientNet-B0 batches per round (default 6; quick 3)")
    ap.add_argument("--channels", type=int, default=1, help="model input channels (default 1: grey, as recorded)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pipeline.json"))
    args = ap.parse_args(argv)
    n = args.examples or (400 if args.quick else 2000)
    rounds = args.rounds or (2 if args.quick else 5)
    model_batches = args.model_batches or (3 if args.quick else 6)
    channels = args.channels

    tmp = tempfile.TemporaryDirectory(prefix="medtf-bench-")
    root = pathlib.Path(tmp.name)
    print(f"writing {n} records of 256×256 uint8 ...", flush=True)
    files = write_records(root, n)

    def raw():
        return tf.data.TFRecordDataset(files).map(lambda s: parse_example(s, "uint8")).batch(BATCH)

    def raw_parallel():
        return (tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
                .map(lambda s: parse_example(s, "uint8"), num_parallel_calls=tf.data.AUTOTUNE)
                .batch(BATCH).prefetch(tf.data.AUTOTUNE))

    spec = Preprocessing(intensity="scale", scale=255.0, size=(224, 224), channels=channels)
    cfg = DataConfig(batch_size=BATCH, preprocessing=spec, label_mode="binary", shuffle_buffer=256)
    subjects = {
        "raw": raw(),
        "raw_parallel": raw_parallel(),
        "pipeline": build_dataset(root, "train", cfg, training=False),
        "standard": build_dataset(root, "train", cfg.replace(augment="standard"), training=True, seed=0),
    }
    for name, ds in subjects.items():  # warm-up: tracing, file cache
        consume(ds.take(2))

    import keras

    model = keras.applications.EfficientNetB0(weights=None, input_shape=(224, 224, channels), classes=2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    xb = np.random.default_rng(0).random((16, 224, 224, channels)).astype(np.float32) * 255
    yb = np.arange(16) % 2
    for _ in range(2):
        model.train_on_batch(xb, yb)

    rates: dict[str, list[float]] = {k: [] for k in list(subjects) + ["model"]}
    cpu_ms: dict[str, list[float]] = {k: [] for k in list(subjects) + ["model"]}
    for r in range(rounds):
        for name, ds in subjects.items():
            t, c = time.perf_counter(), time.process_time()
            count = consume(ds)
            rates[name].append(count / (time.perf_counter() - t))
            cpu_ms[name].append(1e3 * (time.process_time() - c) / count)
        t, c = time.perf_counter(), time.process_time()
        for _ in range(model_batches):
            model.train_on_batch(xb, yb)
        rates["model"].append(16 * model_batches / (time.perf_counter() - t))
        cpu_ms["model"].append(1e3 * (time.process_time() - c) / (16 * model_batches))
        print(f"round {r + 1}/{rounds} (load {os.getloadavg()[0]:.1f}): "
              + ", ".join(f"{k} {v[-1]:.1f}/s" for k, v in rates.items()), flush=True)

    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu = {k: statistics.median(v) for k, v in cpu_ms.items()}
    paired = [p / b for p, b in zip(rates["pipeline"], rates["raw"])]
    result = {
        "model_input_channels": channels,
        "benchmark": "pipeline",
        "examples": n,
        "rounds": rounds,
        "batch_size": BATCH,
        "image": "256x256 uint8 -> 224x224x3 float32 (scale /255, bilinear resize, channel repeat)",
        "baseline": "tf.data.TFRecordDataset(files).map(parse_example).batch(32)",
        "throughput_examples_per_s": {k: round(v, 2) for k, v in med.items()},
        "per_round": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        "ratio_vs_raw": round(med["pipeline"] / med["raw"], 3),
        "ratio_vs_raw_standard": round(med["standard"] / med["raw"], 3),
        "ratio_vs_raw_parallel": round(med["pipeline"] / med["raw_parallel"], 3),
        "ratio_vs_raw_parallel_standard": round(med["standard"] / med["raw_parallel"], 3),
        "ratio_vs_model": round(med["standard"] / med["model"], 3),
        "ratio_vs_raw_paired_rounds": [round(v, 3) for v in paired],
        "cpu_ms_per_example": {k: round(v, 4) for k, v in cpu.items()},
        "cpu_ratio_vs_raw": round(cpu["raw"] / cpu["pipeline"], 3),
        "cpu_ratio_vs_raw_standard": round(cpu["raw"] / cpu["standard"], 3),
        "note": ("throughputs are wall-clock medians over alternating rounds on a shared machine; "
                 "cpu_ms_per_example is this process's CPU time (all threads) per example, "
                 "insensitive to other processes' load; cpu_ratio = raw CPU cost / subject CPU cost"),
        "targets": {"ratio_vs_raw": ">= 0.9", "ratio_vs_model": ">= 2"},
        "model": "keras.applications.EfficientNetB0(weights=None) 224x224x3, train_on_batch, batch 16",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg(),
                    "tensorflow": tf.__version__, "gpus": len(tf.config.list_physical_devices("GPU"))},
        "quick": bool(args.quick),
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in result if k.startswith(("ratio", "cpu")) or k == "throughput_examples_per_s"}, indent=2))
    print(f"wrote {out}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
