"""The one record schema, versioned. Both the encoder and the parser read it from here.

An example holds one image (2D: H×W×C, 3D: D×H×W×C, slice axis first) stored losslessly as raw
little-endian bytes of the dataset's ``image_dtype`` (written in the manifest), plus geometry, labels,
an optional mask and the pseudonymous ``patient`` and ``source`` keys.

Feature keys (schema version 1):

==================  =========  ===============================================================
key                 type       meaning
==================  =========  ===============================================================
image               bytes      raw pixels, C order, little-endian, dtype = manifest image_dtype
image_shape         int64[]    (H, W, C) or (D, H, W, C)
spacing             float[]    mm, same order as the spatial axes
origin              float[]    LPS mm of the first voxel (x, y, z); empty when unknown
direction           float[]    3×3 row-major direction cosines; empty when unknown
geometry            bytes      JSON with float64 spacing/origin/direction (exact copy)
label               int64[]    class label(s); empty when unlabelled
mask                bytes      raw uint8 mask, C order; empty when none
mask_shape          int64[]    mask shape; empty when none
patient             bytes      keyed pseudonym of the patient
source              bytes      record key = manifest key of the source unit (+ "#index")
modality            bytes      "CT", "DX", "MR", "PNG", ...
==================  =========  ===============================================================
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

SCHEMA_VERSION = 1
SCHEMA_NAME = "medtf.records/v1"

#: dtypes a dataset may store its pixels in (one per dataset, recorded in the manifest).
IMAGE_DTYPES = ("uint8", "uint16", "int16", "int32", "float32")
MASK_DTYPE = "uint8"


def feature_spec() -> dict:
    """The parsing spec for ``tf.io.parse_single_example`` / ``parse_example``."""
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "image_shape": tf.io.VarLenFeature(tf.int64),
        "spacing": tf.io.VarLenFeature(tf.float32),
        "origin": tf.io.VarLenFeature(tf.float32),
        "direction": tf.io.VarLenFeature(tf.float32),
        "geometry": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "label": tf.io.VarLenFeature(tf.int64),
        "mask": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "mask_shape": tf.io.VarLenFeature(tf.int64),
        "patient": tf.io.FixedLenFeature([], tf.string),
        "source": tf.io.FixedLenFeature([], tf.string),
        "modality": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }


def _bytes(v: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _ints(v) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v]))


def _floats(v) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in v]))


def encode_example(
    image: np.ndarray,
    *,
    spacing,
    patient: str,
    source: str,
    image_dtype: str,
    origin=None,
    direction=None,
    label=None,
    mask: np.ndarray | None = None,
    modality: str = "",
) -> bytes:
    """Serialise one example. Pure: arrays in, ``tf.train.Example`` bytes out.

    ``image`` must be channels-last (H, W, C) or (D, H, W, C); it is stored as ``image_dtype``, which
    must represent its values exactly (checked).
    """
    if image_dtype not in IMAGE_DTYPES:
        raise ValueError(f"image_dtype must be one of {IMAGE_DTYPES}. Received: {image_dtype!r}")
    if image.ndim not in (3, 4):
        raise ValueError(f"image must be (H, W, C) or (D, H, W, C). Received shape: {image.shape}")
    if len(spacing) != image.ndim - 1:
        raise ValueError(f"spacing needs {image.ndim - 1} values for shape {image.shape}. Received: {spacing}")
    stored = np.ascontiguousarray(image, dtype=np.dtype(image_dtype).newbyteorder("<"))
    if not np.array_equal(stored.astype(image.dtype, copy=False), image, equal_nan=image.dtype.kind == "f"):
        raise ValueError(f"image values are not exactly representable as {image_dtype}")
    feats = {
        "image": _bytes(stored.tobytes()),
        "image_shape": _ints(image.shape),
        "spacing": _floats(spacing),
        "origin": _floats(origin if origin is not None else []),
        "direction": _floats(direction if direction is not None else []),
        "geometry": _bytes(
            json.dumps(
                {
                    "spacing": [float(s) for s in spacing],
                    "origin": None if origin is None else [float(s) for s in origin],
                    "direction": None if direction is None else [float(s) for s in direction],
                }
            ).encode()
        ),
        "label": _ints(label if label is not None else []),
        "patient": _bytes(patient.encode()),
        "source": _bytes(source.encode()),
        "modality": _bytes(modality.encode()),
    }
    if mask is not None:
        m = np.ascontiguousarray(mask)
        if m.dtype != np.uint8:
            if m.min(initial=0) < 0 or m.max(initial=0) > 255:
                raise ValueError("mask values must fit in uint8")
            m = m.astype(np.uint8)
        feats["mask"] = _bytes(m.tobytes())
        feats["mask_shape"] = _ints(m.shape)
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def parse_example(serialized: tf.Tensor, image_dtype: str) -> dict:
    """Graph-safe parse of one serialized example into a dict of tensors.

    Returns ``image`` (float32, stored shape), ``spacing`` (float32), ``origin``, ``direction``,
    ``label`` (int64 vector, possibly empty), ``mask`` (uint8 in its stored shape, or shape (0,) when absent),
    ``patient``, ``source``, ``modality`` (strings) and ``geometry`` (JSON string).
    """
    p = tf.io.parse_single_example(serialized, feature_spec())
    shape = tf.sparse.to_dense(p["image_shape"])
    image = tf.io.decode_raw(p["image"], tf.dtypes.as_dtype(image_dtype), little_endian=True)
    image = tf.cast(tf.reshape(image, shape), tf.float32)
    mask_shape = tf.sparse.to_dense(p["mask_shape"])
    mask = tf.io.decode_raw(p["mask"], tf.uint8)
    # A record without a mask yields a zero-size mask of shape (0,); otherwise the stored shape.
    mask = tf.reshape(
        mask, tf.cond(tf.size(mask_shape) > 0, lambda: mask_shape, lambda: tf.constant([0], tf.int64))
    )
    return {
        "image": image,
        "image_shape": shape,
        "spacing": tf.sparse.to_dense(p["spacing"]),
        "origin": tf.sparse.to_dense(p["origin"]),
        "direction": tf.sparse.to_dense(p["direction"]),
        "geometry": p["geometry"],
        "label": tf.sparse.to_dense(p["label"]),
        "mask": mask,
        "mask_shape": mask_shape,
        "patient": p["patient"],
        "source": p["source"],
        "modality": p["modality"],
    }
