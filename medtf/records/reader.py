"""Reading a records directory: ``read_manifest`` (no TensorFlow) and ``load`` (a ``tf.data.Dataset``)."""

from __future__ import annotations

import json
import os
import pathlib

from medtf.records.schema import IMAGE_DTYPES, SCHEMA_NAME, SCHEMA_VERSION

#: keys every element of :func:`load` has.
ELEMENT_KEYS = ("image", "label", "mask", "patient", "source", "spacing", "origin", "direction", "modality", "target")


#: keys every manifest must have (besides ``schema_version``).
REQUIRED_MANIFEST_KEYS = ("image_dtype", "splits", "mode", "spatial_dims")


def read_manifest(directory) -> dict:
    """Read and check ``DIR/manifest.json``: the one manifest reader (records, data, training and
    evaluation all use it).

    Checks: the file exists and holds a JSON object; ``schema_version`` is the one this medtf reads;
    the keys :data:`REQUIRED_MANIFEST_KEYS` are present; ``image_dtype`` is one of ``IMAGE_DTYPES``;
    ``splits`` maps split names to objects.

    Raises:
        FileNotFoundError: no manifest (the folder is not a finished records directory).
        ValueError: unreadable JSON, a manifest of another schema version, without the required keys,
            with an unknown image dtype or malformed splits. Every message starts with the manifest's path.
    """
    path = pathlib.Path(directory) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no manifest.json — not a records directory, or its conversion did not finish "
            "(rerun tfrecord-convert with --resume)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: manifest must be a JSON object. Received: {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: records schema version {version!r} is not supported; expected {SCHEMA_VERSION} ({SCHEMA_NAME})"
        )
    missing = [k for k in REQUIRED_MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"{path}: manifest lacks keys {missing}")
    if manifest["image_dtype"] not in IMAGE_DTYPES:
        raise ValueError(f"{path}: image_dtype must be one of {IMAGE_DTYPES}. Received: {manifest['image_dtype']!r}")
    splits = manifest["splits"]
    if not isinstance(splits, dict) or not all(isinstance(v, dict) for v in splits.values()):
        raise ValueError(f"{path}: 'splits' must map split names to objects ({{\"train\": {{\"shards\": [...]}}, ...}})")
    return manifest


def shard_paths(directory, split: str, manifest: dict | None = None, *, allow_empty: bool = False) -> list[str]:
    """Absolute paths of the shards of ``split``: the one shard lister.

    The shards are the manifest's ``splits[split]["shards"]``; a split without a shard list falls back to
    the naming rule ``{split}-*-of-*.tfrecord``.

    Args:
        directory: records directory.
        split: split name.
        manifest: the already-read manifest (read with :func:`read_manifest` when None).
        allow_empty: return ``[]`` for a split without shards instead of raising.

    Raises:
        ValueError: unknown split (the message names the splits that exist), no shards, or shard files
            listed in the manifest that are missing.
    """
    directory = pathlib.Path(directory)
    manifest = manifest if manifest is not None else read_manifest(directory)
    splits = manifest.get("splits") or {}
    if split not in splits:
        raise ValueError(f"{directory}: split {split!r} not in manifest; available splits: {sorted(splits)}")
    names = splits[split].get("shards")
    if names:
        files = [str(directory / n) for n in names]
    else:
        files = sorted(str(p) for p in directory.glob(f"{split}-*-of-*.tfrecord"))
    if not files:
        if allow_empty:
            return []
        raise ValueError(f"{directory}: split {split!r} has no shard files")
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise ValueError(f"{directory}: shard files listed in the manifest are missing: {missing[:3]}")
    return files


def load(directory, split: str, *, shuffle_files: bool = False, seed: int | None = None,
         num_parallel_reads: int | None = None, deterministic: bool = True):
    """Records of one split as a ``tf.data.Dataset`` of dicts.

    Each element has ``image`` (float32, H×W×C or D×H×W×C), ``label`` (int64 vector, empty when
    unlabelled), ``mask`` (uint8 in its stored shape, or shape (0,)), ``patient`` and ``source``
    (strings), ``spacing`` (float32 mm, spatial axis order), ``origin``, ``direction``, ``modality`` and
    ``target`` (the paired restoration target, float32 in its stored shape, or shape (0,)).

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
    files = shard_paths(directory, split, manifest, allow_empty=True)
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
