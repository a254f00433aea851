"""Tiny generated records and configs for the training tests (written with ``medtf.records.encode.encode_example``).

A uniquely named module (not ``conftest``) so test imports never pick up another folder's conftest."""

from __future__ import annotations

import json
import pathlib

import numpy as np


def make_records(root, *, n_train=48, n_val=16, n_test=16, size=16, seed=0, per_patient=2, labels=True):
    """Binary 2D records: label 1 = a bright blob in the image's top-left quadrant, 0 = blob elsewhere.

    Returns the records folder (manifest.json + one shard per split).
    """
    import tensorflow as tf

    from medtf.records.encode import encode_example
    from medtf.records.schema import SCHEMA_VERSION

    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {}
    pid = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n == 0:
            continue
        name = f"{split}-00000-of-00001.tfrecord"
        counts = {"0": 0, "1": 0}
        patients = set()
        with tf.io.TFRecordWriter(str(root / name)) as w:
            for i in range(n):
                y = int(i % 2)
                img = rng.integers(0, 40, (size, size)).astype(np.float64)
                h = size // 2
                if y:
                    r, c = rng.integers(1, h - 3), rng.integers(1, h - 3)
                else:
                    q = rng.integers(1, 4)
                    r = rng.integers(1, h - 3) + (h if q in (2, 3) else 0)
                    c = rng.integers(1, h - 3) + (h if q in (1, 3) else 0)
                img[r:r + 3, c:c + 3] = 230
                patient = f"p{pid + i // per_patient:04d}"
                patients.add(patient)
                counts[str(y)] += 1
                w.write(encode_example(img.astype(np.uint8)[..., None], spacing=(1.0, 1.0), patient=patient,
                                       source=f"gen/{split}/{i}.png", image_dtype="uint8",
                                       label=[y] if labels else None, modality="PNG"))
        pid += (n + per_patient - 1) // per_patient
        splits[split] = {"examples": n, "patients": len(patients), "labels": counts, "shards": [name]}
    manifest = {
        "schema_version": SCHEMA_VERSION, "image_dtype": "uint8", "mode": "slice", "spatial_dims": 2,
        "channels": 1, "splits": splits, "label_names": ["other", "top_left"], "preprocessing": {},
        "files": [],
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


def tiny_config_dict(records, out, **over):
    d = {
        "records": str(records),
        "task": "binary",
        "model": {"name": "simple_cnn", "kwargs": {"filters": [4, 8]}},
        "data": {"batch_size": 8, "preprocessing": {"intensity": "scale", "scale": 255.0}, "shuffle_buffer": 64},
        "optimizer": {"learning_rate": 0.01, "weight_decay": 1e-4, "clipnorm": 1.0},
        "schedule": {"name": "cosine", "warmup_epochs": 1},
        "epochs": 3,
        "seed": 7,
        "monitor": "val_auc",
        "output_dir": str(out),
        "run_name": "run",
        "tensorboard": False,
        "verbose": 0,
    }
    for k, v in over.items():
        d[k] = v
    return d
