"""Benchmark: ``medtf.training.train`` throughput ÷ a bare ``model.fit`` on the same model and data.

Both sides train the same ``simple_cnn`` on the same generated records through the same
``medtf.data.build_dataset`` pipeline, with the same loss, metrics and optimizer, validating every epoch.
The medtf side additionally runs everything ``medtf train`` does per epoch (best-model checkpoint,
CSV log, TensorBoard, resume backup, per-epoch data seeds). Runs are interleaved (bare, medtf, bare, ...).

Throughput = training examples / wall time of the timed epochs (epoch begin → end of the last epoch-end
callback, so validation and checkpoint writing are included); the first epoch (tracing) is not timed.

    python benchmarks/train.py [--quick]   → benchmarks/results/train.json (ratio_vs_fit)
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
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def make_records(root: pathlib.Path, n_train: int, n_val: int, size: int, seed: int = 0) -> pathlib.Path:
    """Binary records: label 1 = bright blob in the top-left quadrant (uint8, 2D, 1 channel)."""
    import numpy as np
    import tensorflow as tf

    from medtf.records.encode import encode_example
    from medtf.records.schema import SCHEMA_VERSION

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        name = f"{split}-00000-of-00001.tfrecord"
        counts = {"0": 0, "1": 0}
        with tf.io.TFRecordWriter(str(root / name)) as w:
            for i in range(n):
                y = i % 2
                img = rng.integers(0, 40, (size, size)).astype(np.uint8)
                h = size // 2
                r, c = rng.integers(0, h - 3, 2) + (0 if y else h * rng.integers(0, 2, 2) + (0, h))
                img[r % (size - 3):r % (size - 3) + 3, c % (size - 3):c % (size - 3) + 3] = 230
                counts[str(y)] += 1
                w.write(encode_example(img[..., None], spacing=(1.0, 1.0), patient=f"{split}{i}",
                                       source=f"{split}/{i}", image_dtype="uint8", label=[y]))
        splits[split] = {"examples": n, "patients": n, "labels": counts, "shards": [name]}
    (root / "manifest.json").write_text(json.dumps({
        "schema_version": SCHEMA_VERSION, "image_dtype": "uint8", "mode": "slice", "spatial_dims": 2, "channels": 1,
        "splits": splits, "label_names": ["other", "top_left"], "preprocessing": {}, "files": []}))
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()

    import warnings

    import keras
    import tensorflow as tf

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", message="TensorBoard logging skipped")

    from medtf.data import build_dataset
    from medtf.training.config import TrainConfig
    from medtf.training.losses import get_loss
    from medtf.training.metrics import task_metrics
    from medtf.training.schedules import make_optimizer, make_schedule
    from medtf.training.trainer import build_model, epoch_seed, resolve_config, train

    n_train, n_val, size, epochs, rounds = (1024, 256, 32, 3, 2) if args.quick else (4096, 512, 32, 4, 3)
    rounds = args.rounds or rounds
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="medtf-bench-train-"))
    records = make_records(tmp / "records", n_train, n_val, size)
    base = TrainConfig.from_dict({
        "records": str(records), "task": "binary",
        "model": {"name": "simple_cnn", "kwargs": {"filters": [16, 32, 64]}},
        "data": {"batch_size": 64, "preprocessing": {"intensity": "scale", "scale": 255.0}, "shuffle_buffer": 1024},
        "optimizer": {"learning_rate": 1e-3}, "schedule": {"warmup_epochs": 1}, "epochs": epochs, "seed": 0,
        "monitor": "val_auc", "output_dir": str(tmp / "runs"), "verbose": 0, "precision": "float32",
    })
    config = resolve_config(base)

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    def throughput(timer):
        if len(timer.times) != epochs:
            raise RuntimeError(f"expected {epochs} epochs, timed {len(timer.times)}")
        timed = timer.times[1:]
        return n_train * len(timed) / sum(timed)

    def run_bare(r):
        keras.utils.set_random_seed(r)
        train_ds = build_dataset(config.records, "train", config.data, training=True, seed=epoch_seed(0, 0))
        val_ds = build_dataset(config.records, "val", config.data, training=False, seed=0)
        steps = -(-n_train // 64)  # batches per epoch (the pipeline's cardinality is unknown after filtering)
        model = build_model(config, (size, size, 1))
        model.compile(optimizer=make_optimizer(config.optimizer, make_schedule(config.schedule, 1e-3,
                                                                               steps_per_epoch=steps, epochs=epochs)),
                      loss=get_loss("auto", task="binary"), metrics=task_metrics("binary", num_classes=2,
                                                                                 label_mode="binary"))
        t = Timer()
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, callbacks=[t])
        return throughput(t)

    def run_medtf(r):
        t = Timer()
        train(base.replace(run_name=f"r{r}", seed=r), callbacks=[t])
        return throughput(t)

    bare, med = [], []
    for r in range(rounds):
        bare.append(run_bare(r))
        med.append(run_medtf(r))
        print(f"round {r + 1}/{rounds}: bare fit {bare[-1]:.0f} ex/s, medtf train {med[-1]:.0f} ex/s", flush=True)
    ratio = statistics.median(med) / statistics.median(bare)
    result = {
        "benchmark": "train",
        "ratio_vs_fit": round(ratio, 4),
        "target": ">= 0.95",
        "medtf_examples_per_s": [round(v, 1) for v in med],
        "bare_fit_examples_per_s": [round(v, 1) for v in bare],
        "setup": {"model": "simple_cnn(16,32,64)", "input": [size, size, 1], "train_examples": n_train,
                  "val_examples": n_val, "batch_size": 64, "epochs": epochs, "timed_epochs": epochs - 1,
                  "rounds": rounds, "quick": bool(args.quick), "precision": "float32",
                  "medtf_callbacks": "ModelCheckpoint(best), CSVLogger, TensorBoard, ResumeCheckpoint(epoch)"},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "tensorflow": tf.__version__,
                    "keras": keras.__version__, "gpu": bool(tf.config.list_physical_devices("GPU"))},
    }
    out = HERE / "results" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ratio_vs_fit = {ratio:.3f} (medtf train ÷ bare model.fit, median of {rounds} interleaved rounds) → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
