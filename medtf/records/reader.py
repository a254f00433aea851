"""Reading a records directory: ``read_manifest`` (no TensorFlow) and ``load`` (a ``tf.data.Dataset``)."""

from __future__ import annotations

import json
import pathlib

from medtf.records.encode import SCHEMA_NAME, SCHEMA_VERSION

#: keys every element of :func:`load` has.
ELEMENT_KEYS = ("image", "label", "mask", "patient", "source", "spacing", "origin", "direction", "modality")


def read_manifest(directory) -> dict:
    """Read and check ``DIR/manifest.json``.

    Raises:
        FileNotFoundError: no manifest (the folder is not a finished records directory).
        ValueError: a manifest of another schema version, or without the required keys.
    """
    path = pathlib.Path(directory) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no manifest.json — not a records directory, or its conversion did not finish "
            "(rerun tfrecord-convert with --resume)"
        )
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: records schema version {version!r} is not supported; expected {SCHEMA_VERSION} ({SCHEMA_NAME})"
        )
    missing = [k for k in ("image_dtype", "splits", "mode", "spatial_dims") if k not in manifest]
    if missing:
        raise ValueError(f"{path}: manifest lacks keys {missing}")
    return manifest


def shard_paths(directory, split: str, manifest: dict | None = None) -> list[str]:
    """Absolute shard paths of ``split``; raises ValueError naming the splits that exist."""
    manifest = manifest or read_manifest(directory)
    splits = manifest["splits"]
    if split not in splits:
        raise ValueError(f"{directory}: no split {split!r}; the manifest has {sorted(splits)}")
    return [str(pathlib.Path(directory) / name) for name in splits[split]["shards"]]


def load(directory, split: str, *, shuffle_files: bool = False, seed: int | None = None,
         num_parallel_reads: int | None = None, deterministic: bool = True):
    """Records of one split as a ``tf.data.Dataset`` of dicts.

    Each element has ``image`` (float32, H×W×C or D×H×W×C), ``label`` (int64 vector, empty when
    unlabelled), ``mask`` (uint8 in its stored shape, or shape (0,)), ``patient`` and ``source``
    (strings), ``spacing`` (float32 mm, spatial axis order), ``origin``, ``direction`` and ``modality``.

    Args:
        directory: records directory (with ``manifest.json``).
        split: split name, e.g. "train".
        shuffle_files: shuffle the shard order (with ``seed``).
        seed: seed for ``shuffle_files``.
        num_parallel_reads: shards read in parallel (None: sequential, keeps record order).
        deterministic: keep a deterministic order when reading in parallel.

    Returns:
        ``tf.data.Dataset``.

    Raises:
        FileNotFoundError / ValueError: see :func:`read_manifest`; unknown split.
    """
    import tensorflow as tf

    from medtf.records.schema import parse_example

    manifest = read_manifest(directory)
    files = shard_paths(directory, split, manifest)
    dtype = manifest["image_dtype"]
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(files, dtype=tf.string))
    if shuffle_files and len(files) > 1:
        ds = ds.shuffle(len(files), seed=seed)
    if num_parallel_reads and len(files) > 1:
        ds = ds.interleave(
            tf.data.TFRecordDataset, cycle_length=num_parallel_reads, num_parallel_calls=num_parallel_reads,
            deterministic=deterministic,
        )
    else:
        ds = ds.flat_map(tf.data.TFRecordDataset)

    def parse(serialized):
        p = parse_example(serialized, dtype)
        return {k: p[k] for k in ELEMENT_KEYS}

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
