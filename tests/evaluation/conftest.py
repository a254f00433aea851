"""Helpers for evaluation tests: tiny records directories and run folders built by hand, following the
cross-team contracts (records schema + manifest, RUN/model.keras + model.json via RunInfo)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest


def write_records(directory, splits: dict, *, image_dtype: str, label_names=None, mode: str = "slice",
                  intensity=None) -> pathlib.Path:
    """``splits = {name: [dict(image=..., label=..., mask=..., spacing=..., patient=...)]}`` → records dir."""
    import tensorflow as tf

    from medtf.records.encode import encode_example
    from medtf.records.schema import SCHEMA_VERSION

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_splits = {}
    first = next(iter(splits.values()))[0]["image"]
    for split, examples in splits.items():
        shard = f"{split}-00000-of-00001.tfrecord"
        labels: dict[str, int] = {}
        with tf.io.TFRecordWriter(str(directory / shard)) as w:
            for i, e in enumerate(examples):
                w.write(encode_example(
                    e["image"], spacing=e.get("spacing", (1.0,) * (e["image"].ndim - 1)), patient=e["patient"],
                    source=f"{split}/{i}", image_dtype=image_dtype, label=e.get("label"), mask=e.get("mask"),
                ))
                if e.get("label") is not None:
                    key = str(e["label"][0])
                    labels[key] = labels.get(key, 0) + 1
        manifest_splits[split] = {
            "examples": len(examples), "patients": len({e["patient"] for e in examples}), "labels": labels,
            "shards": [shard],
        }
    manifest = {
        "schema_version": SCHEMA_VERSION, "image_dtype": image_dtype, "mode": mode,
        "spatial_dims": first.ndim - 1, "channels": int(first.shape[-1]), "splits": manifest_splits,
        "label_names": label_names, **({"intensity": intensity} if intensity else {"preprocessing": {}}), "files": [],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def write_run(run_dir, model, *, task, class_names, preprocessing, records, threshold=None, threshold_method=None,
              name="simple_cnn") -> pathlib.Path:
    from medtf.training.run import RunInfo

    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "model.keras")
    RunInfo(name=name, task=task, class_names=tuple(class_names), input_shape=tuple(model.inputs[0].shape[1:]),
            spatial_dims=len(model.inputs[0].shape) - 2, preprocessing=preprocessing, threshold=threshold,
            threshold_method=threshold_method, records=str(records)).save(run_dir)
    return run_dir


@pytest.fixture
def records_writer():
    return write_records


@pytest.fixture
def run_writer():
    return write_run

