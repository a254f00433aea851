"""The one record schema, versioned. Both the encoder (:mod:`medtf.records.encode`, no TensorFlow) and
the parser (:func:`parse_example`) read it from here.

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
target              bytes      paired restoration target (``--targets``), raw pixels in image_dtype; empty
                               when none
target_shape        int64[]    target shape (input grid or an integer multiple k per spatial axis, same
                               channels); empty when none — k = target_shape / image_shape
==================  =========  ===============================================================

Importing this module does not import TensorFlow (the TF-free encoder and manifest reader use its
constants); :func:`feature_spec` and :func:`parse_example` import it when called.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
SCHEMA_NAME = "medtf.records/v1"

#: dtypes a dataset may store its pixels in (one per dataset, recorded in the manifest).
IMAGE_DTYPES = ("uint8", "uint16", "int16", "int32", "float32")
MASK_DTYPE = "uint8"


def feature_spec() -> dict:
    """The parsing spec for ``tf.io.parse_single_example`` / ``parse_example``."""
    import tensorflow as tf

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
        "target": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "target_shape": tf.io.VarLenFeature(tf.int64),
    }


def parse_example(serialized, image_dtype: str) -> dict:
    """Graph-safe parse of one serialized example into a dict of tensors.

    Returns ``image`` (float32, stored shape), ``spacing`` (float32), ``origin``, ``direction``,
    ``label`` (int64 vector, possibly empty), ``mask`` (uint8 in its stored shape, or shape (0,) when absent),
    ``patient``, ``source``, ``modality`` (strings), ``geometry`` (JSON string) and ``target`` (float32 in its
    stored shape, or shape (0,) when the record has none) with ``target_shape``.
    """
    import tensorflow as tf

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
    target_shape = tf.sparse.to_dense(p["target_shape"])
    target = tf.io.decode_raw(p["target"], tf.dtypes.as_dtype(image_dtype), little_endian=True)
    target = tf.cast(tf.reshape(
        target, tf.cond(tf.size(target_shape) > 0, lambda: target_shape, lambda: tf.constant([0], tf.int64))),
        tf.float32)
    return {
        "image": image,
        "image_shape": shape,
        "target": target,
        "target_shape": target_shape,
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
