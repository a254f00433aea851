"""Label encoding for the tf.data pipeline (graph ops).

The image preprocessing (window, normalisation, channels, resample, resize, crop/pad) lives in
``medtf.preprocess`` (``tf_ops`` for graph ops), the one definition shared with the converter, the
SavedModel and the edge runtime.
"""

from __future__ import annotations

import tensorflow as tf

# ------------------------------------------------------------------------------------------------
# labels
# ------------------------------------------------------------------------------------------------


def encode_label(label, mode: str, num_classes: int | None):
    """Encode a record's int64 label vector (or a (B, L) batch of them) for ``mode`` (see
    ``DataConfig.label_mode``)."""
    label = tf.convert_to_tensor(label)
    if mode == "sparse":
        return tf.cast(label[..., 0], tf.int32)
    if mode == "onehot":
        return tf.one_hot(label[..., 0], num_classes, dtype=tf.float32)
    if mode == "binary":
        return tf.cast(label[..., :1] > 0, tf.float32)
    if mode == "multilabel":
        y = tf.cast(label > 0, tf.float32)
        return tf.ensure_shape(y, y.shape[:-1].concatenate([num_classes]))
    if mode == "ordinal":
        return tf.cast(label[..., :1] > tf.range(num_classes - 1, dtype=label.dtype), tf.float32)
    raise ValueError(f"encode_label: label_mode {mode!r} is not a label encoding")


def encode_mask(mask, num_classes: int, onehot: bool):
    """(spatial..., 1) integer mask → one-hot float32 (spatial..., K), sparse int32, or binary float32."""
    if num_classes == 1:
        return tf.cast(mask > 0, tf.float32)
    if onehot:
        return tf.one_hot(tf.cast(mask[..., 0], tf.int32), num_classes, dtype=tf.float32)
    return tf.cast(mask, tf.int32)
