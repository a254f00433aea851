"""Sliding-window inference: identity exactness, pointwise models, Keras models, errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from medtf.data.sliding_window import importance_map, sliding_window_inference, window_starts


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize("shape,window,overlap", [
    ((37, 53, 2), (16, 16), 0.5), ((9, 20, 21, 1), (4, 8, 8), 0.25), ((10, 7, 1), (16, 16), 0.5),
    ((3, 30, 31, 1), (12, 12), 0.7),  # batched 2D
])
def test_identity_model_returns_input_exactly(shape, window, overlap, mode):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32) * 100
    out = sliding_window_inference(lambda b: b, x, window, overlap=overlap, mode=mode, batch_size=3)
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


def test_keras_identity_and_pointwise_models_with_tensor_input():
    x = tf.random.stateless_normal((40, 44, 1), [1, 2])
    inp = keras.Input((None, None, 1))
    model = keras.Model(inp, keras.layers.Identity()(inp))
    out = sliding_window_inference(model, x, (16, 16), overlap=0.5, batch_size=4)
    assert isinstance(out, tf.Tensor)
    np.testing.assert_array_equal(out.numpy(), x.numpy())
    # a pointwise model with more output channels: stitched output equals the model on the whole image
    conv = keras.layers.Conv2D(3, 1, name="pw")
    m2 = keras.Model(inp, conv(inp))
    ref = m2.predict_on_batch(x[None])[0]
    np.testing.assert_allclose(sliding_window_inference(m2, x, (16, 16)).numpy(), ref, atol=1e-5)


def test_gaussian_weighting_downweights_borders():
    w = importance_map((9, 9), "gaussian")
    assert w[4, 4] == 1.0 and w[0, 0] < w[2, 2] < w[4, 4] and w.min() > 0
    assert window_starts(100, 32, 0.5) == [0, 16, 32, 48, 64, 68]
    # a model that is worse at window borders: Gaussian weighting gives a lower error than constant
    x = np.zeros((64, 64, 1), np.float32)

    def border_noisy(b):
        out = b.copy()
        out[:, :3] += 1.0
        out[:, -3:] += 1.0
        out[:, :, :3] += 1.0
        out[:, :, -3:] += 1.0
        return out

    e_g = np.abs(sliding_window_inference(border_noisy, x, (16, 16), 0.5, "gaussian"))[8:-8, 8:-8].mean()
    e_c = np.abs(sliding_window_inference(border_noisy, x, (16, 16), 0.5, "constant"))[8:-8, 8:-8].mean()
    assert e_g < 0.5 * e_c


def test_errors_name_the_problem():
    x = np.zeros((20, 20, 1), np.float32)
    with pytest.raises(ValueError, match="overlap must be in"):
        sliding_window_inference(lambda b: b, x, (8, 8), overlap=1.0)
    with pytest.raises(ValueError, match="predictor output shape"):
        sliding_window_inference(lambda b: b[:, ::2, ::2], x, (8, 8))
    with pytest.raises(ValueError, match="2 spatial axes"):
        sliding_window_inference(lambda b: b, np.zeros((5,)), (8, 8))
