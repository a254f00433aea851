"""medtf.layers: NumPy references with the same weights, .keras round trips, shapes, TFLite."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from medtf.layers import CBAM, AttentionGate, ChannelAttention, GatedAttentionPooling, SpatialAttention  # noqa: E402

ATOL = 1e-5  # float32 reference vs Keras float32


# ---------------------------------------------------------------- NumPy references (written from the papers)
def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_conv_same(x, kernel, bias):
    """'same' (zero padded, odd kernel) stride-1 cross-correlation, channels last, any spatial rank."""
    n = x.ndim - 2
    k = kernel.shape[:n]
    pad = [(0, 0)] + [(s // 2, s // 2) for s in k] + [(0, 0)]
    xp = np.pad(x, pad)
    win = np.lib.stride_tricks.sliding_window_view(xp, k, axis=tuple(range(1, n + 1)))  # (B,*S,C,*k)
    win = np.moveaxis(win, n + 1, -1)  # (B,*S,*k,C)
    out = np.tensordot(win, kernel, axes=(tuple(range(n + 1, 2 * n + 2)), tuple(range(n + 1))))
    return out + bias


def np_conv_strided(x, kernel, stride):
    """'valid' convolution with kernel == stride (non-overlapping patches), no bias."""
    n = x.ndim - 2
    b, *s, c = x.shape
    shape = [b]
    for d in range(n):
        shape += [s[d] // stride[d], stride[d]]
    xr = x.reshape(shape + [c])
    perm = [0] + [1 + 2 * d for d in range(n)] + [2 + 2 * d for d in range(n)] + [2 * n + 1]
    patches = xr.transpose(perm)  # (B,*S/s,*s,C)
    return np.tensordot(patches, kernel, axes=(tuple(range(n + 1, 2 * n + 2)), tuple(range(n + 1))))


def np_channel_attention(x, w0, b0, w1, b1):
    axes = tuple(range(1, x.ndim - 1))
    mlp = lambda v: np.maximum(v @ w0 + b0, 0) @ w1 + b1  # noqa: E731
    scale = sigmoid(mlp(x.mean(axis=axes)) + mlp(x.max(axis=axes)))
    return x * scale.reshape((x.shape[0],) + (1,) * len(axes) + (x.shape[-1],))


def np_spatial_attention(x, kernel, bias):
    desc = np.concatenate([x.mean(-1, keepdims=True), x.max(-1, keepdims=True)], -1)
    return x * sigmoid(np_conv_same(desc, kernel, bias))


def np_attention_gate(x, g, wt, wp, bp, wpsi, bpsi, stride):
    q = np.maximum(np_conv_strided(x, wt, stride) + (g @ wp.reshape(wp.shape[-2:]) + bp), 0)
    alpha = sigmoid(q @ wpsi.reshape(wpsi.shape[-2:]) + bpsi)
    for axis, s in enumerate(stride, start=1):
        alpha = np.repeat(alpha, s, axis=axis)
    return x * alpha, alpha


def np_gated_attention(h, V, bV, U, bU, w, bw, mask=None):
    logits = (np.tanh(h @ V + bV) * sigmoid(h @ U + bU)) @ w + bw  # (B,N,K)
    if mask is not None:
        logits = np.where(mask[..., None] > 0, logits, -np.inf)
    a = np.exp(logits - logits.max(1, keepdims=True))
    a = a / a.sum(1, keepdims=True)
    z = np.einsum("bnk,bnm->bkm", a, h).reshape(h.shape[0], -1)
    return z, a


def randomize(layer, rng):
    layer.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in layer.get_weights()])


# ---------------------------------------------------------------- numeric equality
@pytest.mark.parametrize("shape", [(2, 6, 7, 16), (2, 4, 5, 6, 8)])
def test_cbam_matches_numpy(shape):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype("float32")
    layer = CBAM(reduction=4, kernel_size=7 if len(shape) == 4 else 3)
    layer(x)
    randomize(layer, rng)
    w0, b0 = layer.channel.mlp_hidden.get_weights()
    w1, b1 = layer.channel.mlp_out.get_weights()
    k, kb = layer.spatial.conv.get_weights()
    expected = np_spatial_attention(np_channel_attention(x, w0, b0, w1, b1), k, kb)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=ATOL, rtol=1e-5)


def test_channel_and_spatial_attention_alone():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5, 5, 8)).astype("float32")
    ca, sa = ChannelAttention(reduction=2), SpatialAttention(kernel_size=5)
    ca(x), sa(x)
    randomize(ca, rng), randomize(sa, rng)
    np.testing.assert_allclose(np.asarray(ca(x)), np_channel_attention(x, *ca.mlp_hidden.get_weights(),
                                                                       *ca.mlp_out.get_weights()), atol=ATOL)
    np.testing.assert_allclose(np.asarray(sa(x)), np_spatial_attention(x, *sa.conv.get_weights()), atol=ATOL)
    assert ca.mlp_hidden.units == 4  # 8 // 2


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_spatial_attention_conv_stays_float32_under_mixed_policies(policy):
    """The 2 -> 1 channel attention conv computes in float32; the layer keeps the policy's dtype. The 7^3 kernel
    on a 4^3 map is the case whose bfloat16 Conv3D weight gradient aborts TF 2.21 on AVX512-BF16 CPUs."""
    import tensorflow as tf

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = SpatialAttention(kernel_size=7)
        x = tf.cast(tf.random.stateless_normal((2, 4, 4, 4, 8), seed=(0, 1)), layer.compute_dtype)
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(tf.cast(y, "float32"))
        grads = tape.gradient(loss, layer.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert layer.conv.compute_dtype == "float32"
    assert y.dtype == layer.compute_dtype != "float32"
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    kernel, bias = layer.conv.get_weights()
    x32 = np.asarray(tf.cast(x, "float32"))
    np.testing.assert_allclose(np.asarray(tf.cast(y, "float32")), np_spatial_attention(x32, kernel, bias),
                               rtol=2e-2, atol=2e-2)  # 16-bit output (bfloat16: 8 mantissa bits)


@pytest.mark.parametrize("x_shape,g_shape,stride", [((2, 8, 6, 4), (2, 4, 3, 6), (2, 2)),
                                                    ((2, 4, 6, 8, 3), (2, 2, 3, 4, 5), (2, 2, 2)),
                                                    ((2, 5, 5, 4), (2, 5, 5, 2), (1, 1))])
def test_attention_gate_matches_numpy(x_shape, g_shape, stride):
    rng = np.random.default_rng(3)
    x = rng.normal(size=x_shape).astype("float32")
    g = rng.normal(size=g_shape).astype("float32")
    layer = AttentionGate(inter_channels=3, return_attention=True)
    layer([x, g])
    randomize(layer, rng)
    assert layer._strides == stride
    (wt,), (wp, bp), (wpsi, bpsi) = (layer.theta.get_weights(), layer.phi.get_weights(), layer.psi.get_weights())
    out, alpha = layer([x, g])
    ref_out, ref_alpha = np_attention_gate(x, g, wt, wp, bp, wpsi, bpsi, stride)
    np.testing.assert_allclose(np.asarray(alpha), ref_alpha, atol=ATOL)
    np.testing.assert_allclose(np.asarray(out), ref_out, atol=ATOL)


@pytest.mark.parametrize("heads", [1, 3])
def test_gated_attention_pooling_matches_numpy(heads):
    rng = np.random.default_rng(4)
    h = rng.normal(size=(2, 7, 5)).astype("float32")
    mask = np.ones((2, 7), "float32")
    mask[1, 4:] = 0
    layer = GatedAttentionPooling(attention_dim=6, num_heads=heads, return_attention=True)
    layer(h)
    randomize(layer, rng)
    weights = layer.V.get_weights() + layer.U.get_weights() + layer.w.get_weights()
    for m in (None, mask):
        z, a = layer(h, mask=m)
        ref_z, ref_a = np_gated_attention(h, *weights, mask=m)
        np.testing.assert_allclose(np.asarray(a), ref_a, atol=ATOL)
        np.testing.assert_allclose(np.asarray(z), ref_z, atol=ATOL)
    # padded instances get exactly zero weight, and changing them does not change the output
    z_masked = np.asarray(layer(h, mask=mask)[0])
    h2 = h.copy()
    h2[1, 4:] = 100.0
    np.testing.assert_allclose(np.asarray(layer(h2, mask=mask)[0]), z_masked, atol=ATOL)


# ---------------------------------------------------------------- serialisation
def _model_with_all_layers():
    img = keras.Input((8, 8, 8))
    x = CBAM(reduction=2, kernel_size=3, name="cbam")(img)
    g = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
    x = AttentionGate(4, strides=2, name="gate")([x, g])
    bag = keras.layers.Reshape((64, 8))(x)
    z = GatedAttentionPooling(attention_dim=5, num_heads=2, name="pool")(bag)
    return keras.Model(img, keras.layers.Dense(2)(z))


def test_keras_round_trip_identical(tmp_path):
    model = _model_with_all_layers()
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") for w in model.get_weights()])
    x = rng.normal(size=(2, 8, 8, 8)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: registered under package "medtf"
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    for name, cls in [("cbam", CBAM), ("gate", AttentionGate), ("pool", GatedAttentionPooling)]:
        layer = loaded.get_layer(name)
        assert type(layer) is cls
        assert layer.get_config() == model.get_layer(name).get_config()


@pytest.mark.parametrize("layer", [CBAM(reduction=3, kernel_size=5, use_spatial=False, min_hidden=2),
                                   ChannelAttention(reduction=8, use_bias=False), SpatialAttention(kernel_size=3),
                                   AttentionGate(7, strides=(2, 1), return_attention=True),
                                   GatedAttentionPooling(33, num_heads=2, gated=False, return_attention=True)])
def test_get_config_complete(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    registered = keras.saving.get_registered_name(type(layer))
    assert registered == f"medtf>{type(layer).__name__}"


# ---------------------------------------------------------------- shapes table
@pytest.mark.parametrize("shape", [(2, 9, 1), (2, 8, 8, 1), (2, 8, 8, 3), (2, 6, 8, 8, 1), (2, 4, 4, 4, 32)])
def test_cbam_shape_table(shape):
    x = np.zeros(shape, "float32")
    assert tuple(CBAM(reduction=16)(x).shape) == shape


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="spatial sizes unknown|pass strides"):
        AttentionGate(4)([keras.Input((None, None, 4)), keras.Input((None, None, 4))])
    with pytest.raises(ValueError, match="integer multiple"):
        AttentionGate(4)([np.zeros((1, 5, 5, 2)), np.zeros((1, 2, 2, 2))])
    with pytest.raises(ValueError, match="expected input"):
        CBAM()(np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="at least one"):
        CBAM(use_channel=False, use_spatial=False)
