"""Model builders: shape table, one training step (float32 / mixed_bfloat16), .keras round trip, TFLite.

Small configurations keep the default run fast; full-size models live in the benchmark and `-m slow` tests.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from medtf import models  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _models_testutil import tflite_convert, tflite_ops, tflite_run, train_step  # noqa: E402

# name → (builder, kwargs, kind) ; kind: "cls" (classifier), "seg", "restore", "mil"
SMALL = {
    "simple2d": ("simple_cnn", dict(input_shape=(32, 32, 1), num_classes=3, task="multiclass"), "cls"),
    "simple3d": ("simple_cnn", dict(input_shape=(16, 16, 16, 1), num_classes=2, task="binary"), "cls"),
    "efficientnet": ("efficientnet", dict(variant="b0", input_shape=(32, 32, 1), num_classes=3), "cls"),
    "densenet3d_cbam": ("densenet3d_cbam", dict(input_shape=(32, 32, 32, 1), num_classes=2, growth_rate=8,
                                                block_config=(2, 2, 2, 2), cbam=("block", "layer", "transition")),
                        "cls"),
    "xception_multiscale": ("xception_multiscale", dict(input_shape=(144, 144, 1), num_classes=5, task="ordinal",
                                                        shared_weights=True, fusion_filters=16), "cls"),
    "unet2d": ("unet", dict(spatial_dims=2, input_shape=(32, 32, 1), num_classes=3, depth=3, base_filters=4,
                            attention_gates=True, residual=True, deep_supervision=True), "seg"),
    "unet3d": ("unet", dict(spatial_dims=3, input_shape=(16, 16, 16, 2), num_classes=1, depth=2, base_filters=4,
                            attention_gates=True, upsampling="resize"), "seg"),
    "resnet3d": ("resnet3d", dict(input_shape=(32, 32, 32, 1), num_classes=4, task="multilabel", depth=18,
                                  base_filters=4), "cls"),
    "attention_mil": ("attention_mil", dict(input_shape=(12, 32), num_classes=2, task="binary",
                                            hidden_units=(16,), attention_dim=8), "mil"),
    "restoration2d": ("restoration_unet", dict(spatial_dims=2, input_shape=(16, 16, 1), depth=2, base_filters=4,
                                               scale=2), "restore"),
    "restoration3d": ("restoration_unet", dict(spatial_dims=3, input_shape=(8, 8, 8, 1), depth=2, base_filters=4),
                      "restore"),
}
TWO_D = ["simple2d", "efficientnet", "xception_multiscale", "unet2d", "attention_mil", "restoration2d"]


def build_small(key, **override):
    name, kwargs, _ = SMALL[key]
    return models.build(name, **{**kwargs, **override})


def batch(model, key, n=2, seed=0):
    """Random inputs in [0, 1] and matching targets for ``model``."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *model.input_shape[1:])).astype("float32")
    kind = SMALL[key][2]
    out_shape = model.output_shape[0] if isinstance(model.output_shape, list) else model.output_shape
    if kind == "restore":
        y = rng.random((n, *out_shape[1:])).astype("float32")
        return x, y, keras.losses.MeanAbsoluteError(reduction=None)
    y = (rng.random((n, *out_shape[1:])) > 0.5).astype("float32")
    if kind == "seg" and out_shape[-1] > 1:
        y = keras.ops.one_hot(rng.integers(0, out_shape[-1], (n, *out_shape[1:-1])), out_shape[-1])
        return x, y, keras.losses.CategoricalCrossentropy(reduction=None)
    if out_shape[-1] > 1 and SMALL[key][1].get("task", "multiclass") == "multiclass" and kind == "cls":
        return x, keras.ops.one_hot(rng.integers(0, out_shape[-1], n), out_shape[-1]), \
            keras.losses.CategoricalCrossentropy(reduction=None)
    return x, y, keras.losses.BinaryCrossentropy(reduction=None)


def _predict(model, x) -> list[np.ndarray]:
    """Inference-mode outputs as a list (direct call: no tf.function tracing, fast for deep models)."""
    if isinstance(x, list) and len(x) == 1:
        x = x[0]
    out = model(x, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


# ------------------------------------------------------------------------------------------- shape table
SHAPES = [
    # (builder, kwargs, expected output shape(s) without batch)
    ("simple_cnn", dict(input_shape=(32, 32, 1), num_classes=2, task="binary"), (1,)),
    ("simple_cnn", dict(input_shape=(32, 32, 3), num_classes=4, task="ordinal"), (3,)),
    ("simple_cnn", dict(input_shape=(8, 16, 16, 2), num_classes=5, task="multilabel"), (5,)),
    ("efficientnet", dict(variant="b0", input_shape=(64, 64, 1), num_classes=2, task="binary"), (1,)),
    ("efficientnet", dict(variant="v2b0", input_shape=(64, 64, 3), num_classes=14, task="multilabel"), (14,)),
    ("densenet3d_cbam", dict(input_shape=(32, 32, 32, 1), num_classes=3, growth_rate=4, block_config=(1, 1)), (3,)),
    ("densenet3d_cbam", dict(input_shape=(16, 32, 32, 2), num_classes=2, task="binary", growth_rate=4,
                             block_config=(1, 1), cbam=None), (1,)),
    ("resnet3d", dict(input_shape=(32, 32, 32, 1), num_classes=5, task="ordinal", base_filters=4), (4,)),
    ("resnet3d", dict(input_shape=(16, 32, 32, 3), num_classes=2, depth=50, base_filters=4,
                      stem_strides=(1, 2, 2)), (2,)),
    ("xception_multiscale", dict(input_shape=(144, 144, 3), num_classes=5, shared_weights=True,
                                 fusion_filters=8), (5,)),
    ("unet", dict(spatial_dims=2, input_shape=(64, 64, 1), num_classes=2, depth=3, base_filters=4), (64, 64, 2)),
    ("unet", dict(spatial_dims=2, input_shape=(32, 48, 3), num_classes=1, depth=2, base_filters=4,
                  upsampling="resize"), (32, 48, 1)),
    ("unet", dict(spatial_dims=3, input_shape=(16, 16, 16, 1), num_classes=4, depth=2, base_filters=4,
                  deep_supervision=True), [(16, 16, 16, 4)] * 2),
    ("unet", dict(spatial_dims=3, input_shape=(16, 32, 32, 2), num_classes=1, depth=3, base_filters=4,
                  residual=True, attention_gates=True), (16, 32, 32, 1)),
    ("unet", dict(spatial_dims=2, input_shape=(None, None, 1), num_classes=2, depth=2, base_filters=4), (None, None, 2)),
    ("unet", dict(spatial_dims=2, input_shape=(32, 32, 1), num_classes=2, depth=2, base_filters=4,
                  downsampling="conv2"), (32, 32, 2)),
    ("attention_mil", dict(input_shape=(None, 64), num_classes=3, task="multiclass"), (3,)),
    ("restoration_unet", dict(spatial_dims=2, input_shape=(32, 32, 3), depth=2, base_filters=4), (32, 32, 3)),
    ("restoration_unet", dict(spatial_dims=3, input_shape=(8, 16, 16, 1), depth=2, base_filters=4, scale=2),
     (16, 32, 32, 1)),
]


@pytest.mark.parametrize("name,kwargs,expected", SHAPES, ids=[f"{s[0]}-{i}" for i, s in enumerate(SHAPES)])
def test_output_shape_table(name, kwargs, expected):
    model = models.build(name, **kwargs)
    if isinstance(expected, list):
        assert [tuple(s[1:]) for s in model.output_shape] == expected
        assert model.output_names[:2] == ["predictions", "aux_1"]
    else:
        assert tuple(model.output_shape[1:]) == expected
        assert model.output_names == ["predictions"]
    for out in model.outputs:
        assert out.dtype == "float32"
    layer_types = {type(layer).__name__ for layer in model._flatten_layers()}
    assert not layer_types & {"MaxPooling3D", "AveragePooling3D"}, "3D pooling has no TFLite kernel"


def test_predictions_are_probabilities():
    model = build_small("unet2d")
    x, _, _ = batch(model, "unet2d")
    pred, *aux = _predict(model, x)
    np.testing.assert_allclose(pred.sum(-1), 1.0, atol=1e-5)
    assert len(aux) == 2 and all(a.shape == pred.shape for a in aux)
    model = build_small("unet3d")
    p = _predict(model, batch(model, "unet3d")[0])[0]
    assert p.min() >= 0 and p.max() <= 1


# ------------------------------------------------------------------------------------------- training step
def _bf16_conv_kernels_available() -> str | None:
    try:
        with tf.GradientTape() as tape:
            x = tf.random.normal((1, 4, 4, 4, 2), dtype=tf.bfloat16)
            w = tf.Variable(tf.random.normal((3, 3, 3, 2, 2), dtype=tf.bfloat16))
            y = tf.reduce_sum(tf.nn.conv3d(x, w, [1] * 5, "SAME"))
        tape.gradient(y, w).numpy()
        tf.nn.conv2d_transpose(tf.zeros((1, 2, 2, 2), tf.bfloat16), tf.zeros((2, 2, 2, 2), tf.bfloat16),
                               (1, 4, 4, 2), 2).numpy()
    except Exception as exc:  # noqa: BLE001
        return f"bfloat16 conv kernels unavailable on this CPU: {type(exc).__name__}: {exc}"[:300]
    return None


@pytest.fixture(params=["float32", "mixed_bfloat16"])
def policy(request):
    if request.param == "mixed_bfloat16":
        reason = _bf16_conv_kernels_available()
        if reason:
            pytest.skip(reason)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("key", sorted(SMALL))
def test_one_training_step(key, policy):
    model = build_small(key)
    x, y, loss_fn = batch(model, key)
    loss, changed = train_step(model, x, y, loss_fn)
    assert np.isfinite(loss)
    # tiny random models can have a few dead-ReLU paths with exactly zero gradient; most variables must move
    assert changed > 0.75, f"only {changed:.0%} of the trainable variables were updated"
    for out in model.outputs:
        assert out.dtype == "float32"
    if policy == "mixed_bfloat16":
        compute = {layer.compute_dtype for layer in model._flatten_layers() if layer.weights}
        assert "bfloat16" in compute
        assert model.get_layer("predictions").compute_dtype == "float32"


@pytest.mark.slow
def test_densenet121_3d_train_step_at_32():
    """The full DenseNet-121 topology (growth 8) at 32³ trains one step."""
    model = models.build("densenet3d_cbam", input_shape=(32, 32, 32, 1), num_classes=2, growth_rate=8)
    assert len([l for l in model.layers if l.name.endswith("_2_conv")]) == 58  # 6+12+24+16 dense layers
    x = np.random.default_rng(0).random((2, 32, 32, 32, 1)).astype("float32")
    loss, changed = train_step(model, x, keras.ops.one_hot(np.array([0, 1]), 2),
                               keras.losses.CategoricalCrossentropy(reduction=None))
    assert np.isfinite(loss) and changed > 0.9


# ------------------------------------------------------------------------------------------- serialisation
@pytest.mark.parametrize("key", sorted(SMALL))
def test_keras_round_trip(key, tmp_path):
    model = build_small(key)
    x, y, loss_fn = batch(model, key, seed=1)
    train_step(model, x, y, loss_fn)  # non-trivial BN statistics / weights
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    before, after = _predict(model, x), _predict(loaded, x)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]


def test_layer_names_are_stable():
    a, b = build_small("efficientnet"), build_small("efficientnet")
    assert [l.name for l in a.layers] == [l.name for l in b.layers]
    assert {"image", "input_scale", "keras_rescaling", "keras_normalization", "top_activation", "predictions"} <= {
        l.name for l in a.layers}
    unet_a, unet_b = build_small("unet2d"), build_small("unet2d")
    assert [l.name for l in unet_a.layers] == [l.name for l in unet_b.layers]


# ------------------------------------------------------------------------------------------- TFLite
def _feeds(model, key, n=1, seed=3):
    rng = np.random.default_rng(seed)
    return {inp.name: rng.random((n, *inp.shape[1:])).astype("float32") for inp in model.inputs}


SLOW_CONVERT = {"efficientnet", "xception_multiscale"}  # 40-70 s conversions: -m slow


@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_CONVERT else k
                                 for k in sorted(SMALL)])
def test_tflite_fp32_matches_keras(key):
    model = build_small(key)
    x, y, loss_fn = batch(model, key)
    train_step(model, x, y, loss_fn)
    blob = tflite_convert(model)
    ops = {name for name, _ in tflite_ops(blob)}
    assert not any(o.startswith("Flex") or o == "CUSTOM" for o in ops), ops
    feeds = _feeds(model, key)
    expected = _predict(model, [feeds[inp.name] for inp in model.inputs])
    got = tflite_run(blob, feeds)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-4)  # fp32 probabilities / intensities


def _representative(model, n=16, seed=7):
    rng = np.random.default_rng(seed)

    def gen():
        for _ in range(n):
            yield [rng.random((1, *inp.shape[1:])).astype("float32") for inp in model.inputs]
    return gen


# int8 vs Keras float32 on probabilities / intensities in [0, 1] (seeded small models after 3 training steps):
# (max |Δ| over all outputs and elements, mean |Δ|). Measured: unet2d max 0.02-0.09 / mean ≤ 0.01,
# restoration2d 0.01 / 0.003, simple2d and attention_mil ≤ 0.003.
INT8_TOL = {"simple2d": (0.05, 0.02), "efficientnet": (0.15, 0.05), "xception_multiscale": (0.15, 0.05),
            "unet2d": (0.25, 0.03), "attention_mil": (0.05, 0.02), "restoration2d": (0.1, 0.02)}


@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_CONVERT else k
                                 for k in TWO_D])
def test_tflite_full_int8_2d(key):
    _check_int8(key)


def _check_int8(key):
    keras.utils.set_random_seed(0)
    model = build_small(key)
    x, y, loss_fn = batch(model, key, n=4)
    for _ in range(3):
        train_step(model, x, y, loss_fn)
    blob = tflite_convert(model, int8=True, representative=_representative(model))
    ops = tflite_ops(blob)
    float_ops = [name for name, dtypes in ops if name not in ("QUANTIZE", "DEQUANTIZE")
                 and any(d == np.float32 for d in dtypes)]
    assert not float_ops, f"ops left in float in a full-int8 model: {float_ops}"
    feeds = _feeds(model, key, seed=7)  # one of the calibration-like inputs
    expected = _predict(model, [feeds[inp.name] for inp in model.inputs])
    got = tflite_run(blob, feeds)
    max_tol, mean_tol = INT8_TOL[key]
    for e, g in zip(expected, got):
        diff = np.abs(g - e)
        assert diff.max() <= max_tol and diff.mean() <= mean_tol, (
            f"{key}: int8 vs float max |diff| {diff.max():.3f} (tol {max_tol}), mean {diff.mean():.4f} (tol {mean_tol})")


@pytest.mark.parametrize("strict", [False, True], ids=["int8-with-float-fallback", "TFLITE_BUILTINS_INT8"])
def test_3d_int8_keeps_conv3d_in_float(strict):
    """Documented behaviour (TF 2.21): CONV_3D has no int8 kernel. An "int8" 3D model keeps every CONV_3D in
    float between DEQUANTIZE/QUANTIZE — even with TFLITE_BUILTINS_INT8 only — while the rest (MUL, MEAN, FC,
    LOGISTIC) runs in int8; it runs on ai-edge-litert."""
    model = build_small("simple3d")
    blob = tflite_convert(model, int8=True, representative=_representative(model, n=4), int8_only=strict)
    ops = tflite_ops(blob)
    names = [n for n, _ in ops]
    conv3d = [dtypes for name, dtypes in ops if name == "CONV_3D"]
    assert len(conv3d) == 3 and all(dtypes[0] == np.float32 for dtypes in conv3d)
    assert "QUANTIZE" in names and "DEQUANTIZE" in names
    assert all(d == np.int8 for n, ds in ops if n in ("MEAN", "FULLY_CONNECTED") for d in ds[:1])
    feeds = _feeds(model, "simple3d")
    np.testing.assert_allclose(tflite_run(blob, feeds)[0], _predict(model, feeds["image"])[0], atol=0.05)


def test_attention_mil_mask_ignores_padding_and_exposes_attention():
    plain = models.build("attention_mil", input_shape=(None, 16), num_classes=2, hidden_units=(8,), attention_dim=4,
                         instance_dropout=0.0)
    masked = models.build("attention_mil", input_shape=(None, 16), num_classes=2, hidden_units=(8,),
                          attention_dim=4, instance_dropout=0.0, with_mask=True)
    masked.set_weights(plain.get_weights())
    rng = np.random.default_rng(9)
    bag = rng.random((1, 5, 16)).astype("float32")
    padded = np.concatenate([bag, rng.random((1, 3, 16)).astype("float32") * 10], axis=1)
    mask = np.array([[1] * 5 + [0] * 3], "float32")
    np.testing.assert_allclose(_predict(masked, [padded, mask])[0], _predict(plain, bag)[0], atol=1e-6)
    attention = keras.Model(masked.inputs, masked.get_layer("mil_pooling").output[1])([padded, mask])
    np.testing.assert_allclose(np.asarray(attention)[0, :, 0].sum(), 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(attention)[0, 5:, 0], 0.0)


def test_xception_batchnorm_statistics_follow_the_weights():
    """Regression: Keras' Xception BN momentum 0.99 left ``0.99**steps`` of the initial moving variance (1.0)
    in layers whose real variance is ~1e-4, so a model trained for a few hundred steps predicted one grade
    for every input in inference mode. With the builder's 0.9, 100 training-mode passes make the
    inference-mode features as input-dependent as the training-mode ones (0.99 leaves a ratio of ~1e-4)."""
    keras.utils.set_random_seed(0)
    model = models.build("xception_multiscale", input_shape=(71, 71, 1), num_classes=3, scales=[1.0],
                         fusion_filters=8)
    bns = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) > 30 and {layer.momentum for layer in bns} == {0.9}
    backbone = model.get_layer("xception_s0")
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (4, 71, 71, 1)).astype("float32"))
    step = tf.function(lambda v: backbone(v, training=True))
    for _ in range(100):
        step(x)
    infer, train = backbone(x, training=False).numpy(), backbone(x, training=True).numpy()
    assert infer.std(0).mean() / train.std(0).mean() > 0.5
    rebuilt = keras.Model.from_config(model.get_config())
    assert {layer.momentum for layer in rebuilt._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}
    with pytest.raises(ValueError, match="bn_momentum"):
        models.build("xception_multiscale", input_shape=(71, 71, 1), num_classes=3, scales=[1.0], bn_momentum=1.0)


def test_unet_downsampling_kernel():
    """``downsampling="conv2"``: 2×2 stride-2 down-sampling convolutions (pixel-aligned with the 2×2
    transposed-convolution up-sampling); the default stays 3×3."""
    for mode, k in (("conv3", 3), ("conv2", 2)):
        model = models.build("unet", spatial_dims=3, input_shape=(8, 16, 16, 1), num_classes=2, depth=2,
                             base_filters=4, downsampling=mode)
        assert model.get_layer("down0_conv").kernel_size == (k,) * 3
        assert model.get_layer("down0_conv").strides == (2,) * 3
    with pytest.raises(ValueError, match="downsampling"):
        models.build("unet", spatial_dims=2, input_shape=(32, 32, 1), downsampling="pool")
