"""Write small record sets (shards + manifest.json) following the records-directory contract, without
depending on the converter."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import tensorflow as tf

from medtf.records.encode import encode_example
from medtf.records.schema import SCHEMA_VERSION


def write_records(directory, splits: dict, *, image_dtype: str = "uint8", shards: int = 1,
                  label_names=None, intensity=None, mode: str | None = None, channels: int | None = None):
    """Write ``splits = {name: [(image, label, mask_or_None), ...]}`` to ``directory``.

    Images are channels-last (H, W, C) or (D, H, W, C); labels an int, a list (multi-hot) or None.
    Returns the directory as a Path.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_splits = {}
    first = next(iter(splits.values()))[0][0]
    spatial = first.ndim - 1
    for name, items in splits.items():
        files = [f"{name}-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]
        writers = [tf.io.TFRecordWriter(str(directory / f)) for f in files]
        counts: dict[str, int] = {}
        patients = set()
        for i, (image, label, mask) in enumerate(items):
            patient = f"p{i // 2:04d}"
            patients.add(patient)
            lab = None if label is None else (list(label) if np.ndim(label) else [int(label)])
            if lab is not None and np.ndim(label) == 0:
                counts[str(int(label))] = counts.get(str(int(label)), 0) + 1
            ser = encode_example(
                image, spacing=[1.0] * spatial, patient=patient, source=f"{name}/{i}",
                image_dtype=image_dtype, label=lab, mask=mask, modality="OT",
            )
            writers[i % shards].write(ser)
        for w in writers:
            w.close()
        manifest_splits[name] = {"examples": len(items), "patients": len(patients), "labels": counts, "shards": files}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "image_dtype": image_dtype,
        "mode": mode or ("volume" if spatial == 3 else "slice"),
        "spatial_dims": spatial,
        "channels": channels if channels is not None else int(first.shape[-1]),
        "splits": manifest_splits,
        "label_names": label_names,
        **({"intensity": intensity} if intensity else {"preprocessing": {}}),
        "files": [],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return directory


def random_images(n, shape, *, seed=0, num_classes=2, with_mask=False, dtype=np.uint8):
    """``n`` (image, label, mask) triples: uint8 noise images, labels ``i % num_classes``."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        img = rng.integers(0, 256, size=shape).astype(dtype)
        mask = (rng.random(shape[:-1]) > 0.7).astype(np.uint8) if with_mask else None
        items.append((img, i % num_classes, mask))
    return items


def square_masks(n, *, size: int = 32, seed: int = 0, squares: int = 1):
    """``n`` segmentation items ``(image, None, mask)``: ``squares`` bright squares (170-229) on dark noise
    (0-59), each 4-7 px, the mask 1 on them (uint8, (size, size, 1) images and (size, size) masks)."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        img = rng.integers(0, 60, (size, size, 1)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        for _ in range(squares):
            r, c, s = rng.integers(2, size - 10), rng.integers(2, size - 10), rng.integers(4, 8)
            img[r:r + s, c:c + s] = rng.integers(170, 230)
            mask[r:r + s, c:c + s] = 1
        items.append((img, None, mask))
    return items


def record_order(items, shards: int):
    """Items in the order an evaluation pass reads them: shard by shard (items go round-robin)."""
    return [it for s in range(shards) for it in items[s::shards]]
