"""Label encoding of the tf.data pipeline."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from medtf.data import transforms as T


def test_encode_label_modes():
    lab = tf.constant([2], tf.int64)
    assert int(T.encode_label(lab, "sparse", 4)) == 2
    np.testing.assert_array_equal(T.encode_label(lab, "onehot", 4).numpy(), [0, 0, 1, 0])
    np.testing.assert_array_equal(T.encode_label(lab, "ordinal", 5).numpy(), [1, 1, 0, 0])
    np.testing.assert_array_equal(T.encode_label(tf.constant([0], tf.int64), "ordinal", 5).numpy(), [0, 0, 0, 0])
    np.testing.assert_array_equal(T.encode_label(tf.constant([1], tf.int64), "binary", None).numpy(), [1.0])
    np.testing.assert_array_equal(T.encode_label(tf.constant([0, 1, 1], tf.int64), "multilabel", 3).numpy(), [0, 1, 1])
    m = tf.constant([[[0], [2]], [[1], [0]]], tf.uint8)
    oh = T.encode_mask(m, 3, True).numpy()
    np.testing.assert_array_equal(oh.argmax(-1), m.numpy()[..., 0])
    assert T.encode_mask(m, 3, False).dtype == tf.int32
    np.testing.assert_array_equal(T.encode_mask(m, 1, True).numpy()[..., 0], m.numpy()[..., 0] > 0)
