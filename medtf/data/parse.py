"""Reading a records directory: manifest, shard list, and parsing by the one record schema.

The manifest reader and the shard lister are :mod:`medtf.records.reader`'s (``read_manifest``,
``shard_paths``, re-exported here as ``read_manifest`` / ``shard_files``). This module wraps
``medtf.records.schema.parse_example`` and gives the parsed tensors static ranks/channels from
the manifest so downstream ops (and Keras) see known shapes.
"""

from __future__ import annotations

import tensorflow as tf

from medtf.records import schema
from medtf.records.reader import read_manifest, shard_paths as shard_files

AUTOTUNE = tf.data.AUTOTUNE


def spatial_rank(manifest: dict) -> int:
    """2 for slice records, 3 for volumes (``spatial_dims`` as an int or a shape, else ``mode``)."""
    sd = manifest.get("spatial_dims")
    if isinstance(sd, int):
        return sd
    if isinstance(sd, (list, tuple)) and sd:
        return len(sd)
    return 3 if manifest.get("mode") == "volume" else 2


def static_image_shape(manifest: dict) -> list:
    """Static (H, W, C) / (D, H, W, C) with None for unknown extents."""
    sd = manifest.get("spatial_dims")
    spatial = [int(s) for s in sd] if isinstance(sd, (list, tuple)) and sd else [None] * spatial_rank(manifest)
    channels = manifest.get("channels")
    return spatial + [int(channels) if channels else None]


def make_parse_fn(manifest: dict, with_mask: bool, with_target: bool = False):
    """A graph function ``serialized → dict`` with ``image`` float32 (static rank and, when the manifest
    says, channels), ``label`` int64 vector, ``spacing``, ``patient``, ``source``, when ``with_mask``,
    ``mask`` uint8 reshaped to (spatial..., 1), and when ``with_target``, ``target`` float32 (the paired
    restoration target: same rank and channels as the image, its own spatial size)."""
    image_dtype = manifest["image_dtype"]
    shape = static_image_shape(manifest)

    def parse(serialized):
        p = schema.parse_example(serialized, image_dtype)
        image = tf.ensure_shape(p["image"], shape)
        out = {
            "image": image,
            "label": p["label"],
            "spacing": p["spacing"],
            "patient": p["patient"],
            "source": p["source"],
        }
        if with_mask:
            mask = p["mask"]
            tf.debugging.assert_equal(
                tf.size(mask, tf.int64), tf.reduce_prod(p["image_shape"][:-1]),
                message="record mask must cover the image's spatial extent (one value per pixel/voxel)",
            )
            out["mask"] = tf.reshape(mask, tf.concat([tf.shape(image)[:-1], [1]], 0))
        if with_target:
            tf.debugging.assert_equal(tf.size(p["target_shape"]), tf.size(p["image_shape"]),
                                      message="record has no paired target (tfrecord-convert --targets)")
            out["target"] = tf.ensure_shape(p["target"], [None] * (len(shape) - 1) + shape[-1:])
        return out

    return parse


def probe(records_dir, split: str, manifest: dict | None = None) -> dict:
    """Parse the first record of ``split`` eagerly: ``{"has_mask", "has_target", "label_size", "image_shape"}``."""
    manifest = manifest if manifest is not None else read_manifest(records_dir)
    files = shard_files(records_dir, split, manifest)
    for f in files:
        for serialized in tf.data.TFRecordDataset(f).take(1):
            p = schema.parse_example(serialized, manifest["image_dtype"])
            return {
                "has_mask": int(tf.size(p["mask"])) > 0,
                "has_target": int(tf.size(p["target_shape"])) > 0,
                "label_size": int(tf.size(p["label"])),
                "image_shape": [int(v) for v in p["image_shape"].numpy()],
            }
    raise ValueError(f"{records_dir}: split {split!r} has no records")


def has_masks(manifest: dict) -> bool | None:
    """Whether records carry masks, when the manifest says so (``has_mask``/``masks`` key); else None."""
    for key in ("has_mask", "masks"):
        if key in manifest:
            return bool(manifest[key])
    return None


def raw_dataset(records_dir, split: str, *, manifest: dict | None = None, shuffle_files: bool = False,
                seed: int = 0, deterministic: bool = True, with_mask: bool | None = None) -> tf.data.Dataset:
    """Interleaved shards of ``split`` parsed into dicts (see ``make_parse_fn``).

    Args:
        records_dir: directory with ``manifest.json`` and shards.
        split: split name in the manifest.
        manifest: already-read manifest (read when None).
        shuffle_files: shuffle the shard order (seeded) before interleaving.
        seed: seed for the shard shuffle.
        deterministic: deterministic interleave/map order.
        with_mask: parse masks; None decides from the manifest or the first record.

    Returns:
        ``tf.data.Dataset`` of example dicts.
    """
    manifest = manifest if manifest is not None else read_manifest(records_dir)
    files = shard_files(records_dir, split, manifest)
    if with_mask is None:
        with_mask = has_masks(manifest)
        if with_mask is None:
            with_mask = probe(records_dir, split, manifest)["has_mask"]
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files and len(files) > 1:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if len(files) > 1:
        ds = ds.interleave(
            lambda f: tf.data.TFRecordDataset(f),
            cycle_length=min(len(files), 8),
            block_length=1,
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )
    else:
        ds = tf.data.TFRecordDataset(files)
    return ds.map(make_parse_fn(manifest, with_mask), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
