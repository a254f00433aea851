"""EfficientNet wrapper: parameter parity with keras.applications, local weight loading, adapters, input range."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from medtf import models  # noqa: E402


def test_b0_parameter_count_equals_keras_applications():
    ours = models.efficientnet("b0", input_shape=(224, 224, 3), num_classes=1000)
    ref = keras.applications.EfficientNetB0(weights=None)
    assert ours.count_params() == ref.count_params() == 5_330_571
    assert sorted(tuple(w.shape) for w in ours.weights) == sorted(tuple(w.shape) for w in ref.weights)


@pytest.mark.slow
@pytest.mark.parametrize("variant,ctor", [("b3", "EfficientNetB3"), ("v2b0", "EfficientNetV2B0"),
                                          ("v2s", "EfficientNetV2S")])
def test_other_variants_parameter_count(variant, ctor):
    ours = models.efficientnet(variant, num_classes=1000)
    assert ours.count_params() == getattr(keras.applications, ctor)(weights=None).count_params()


def _save_fake_imagenet(path, include_top, seed=0):
    """A stand-in for Keras' ImageNet file: the reference model with Keras' random init, ImageNet-like input
    statistics in its Normalization layer and perturbed BatchNorm statistics (so every kind of weight matters),
    saved in a fresh process (auto-generated layer names then differ from the test process, as with the real
    downloaded file)."""
    code = f"""
import numpy as np, keras
m = keras.applications.EfficientNetB0(include_top={include_top}, weights=None,
                                      input_shape=None if {include_top} else (64, 64, 3))
rng = np.random.default_rng({seed})
norm = [l for l in m.layers if isinstance(l, keras.layers.Normalization)][0]
norm.set_weights([np.array([0.485, 0.456, 0.406], 'float32'), np.array([0.229, 0.224, 0.225], 'float32') ** 2,
                  np.array(0)])
for layer in m.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                           rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2.0, var.shape)])
m.save_weights({str(path)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory):
    """{include_top: path} of the stand-in ImageNet files, written once per module."""
    root = tmp_path_factory.mktemp("fake_imagenet")
    paths = {}
    for include_top in (False, True):
        paths[include_top] = root / f"effb0_{'top' if include_top else 'notop'}.weights.h5"
        _save_fake_imagenet(paths[include_top], include_top)
    return paths


def _features(model, names=("stem_activation", "block4a_expand_activation", "top_activation")):
    return keras.Model(model.input, [model.get_layer(n).output for n in names])


@pytest.mark.parametrize("include_top", [False, True])
def test_local_weights_load_and_match_reference(fake_weights, include_top):
    path = fake_weights[include_top]
    ref = keras.applications.EfficientNetB0(include_top=include_top, weights=None,
                                            input_shape=None if include_top else (64, 64, 3))
    ref.load_weights(path)
    shape = (224, 224, 3) if include_top else (64, 64, 3)
    x = np.random.default_rng(1).random((2, *shape)).astype("float32")
    if include_top:  # full ImageNet classifier reproduced, inputs in [0, 255] as in keras.applications
        ours = models.efficientnet("b0", input_shape=shape, num_classes=1000, weights=path, pixel_max=255,
                                   imagenet_rescale=False)
        np.testing.assert_allclose(ours(x * 255), ref(x * 255), atol=1e-5)
    else:
        ours = models.efficientnet("b0", input_shape=shape, num_classes=2, weights=path, imagenet_rescale=False)
        for a, b in zip(_features(ours)(x), _features(ref)(x * 255)):  # pixel_max=1 → ×255 inside
            assert float(np.std(b)) > 0.05  # the signal reaches this depth
            np.testing.assert_allclose(a, b, atol=1e-4 * max(1.0, float(np.abs(b).max())))


def test_imagenet_rescale_matches_keras_imagenet_preprocessing(fake_weights):
    """Keras adds Rescaling(1/sqrt(std)) after Normalization for ImageNet weights; we fold it into the variance."""
    path = fake_weights[False]
    ours = models.efficientnet("b0", input_shape=(64, 64, 3), num_classes=2, weights=path)
    norm = keras.Model(ours.input, ours.get_layer("keras_normalization").output)
    ref = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    ref.load_weights(path)
    mean, var, _ = [w.numpy() for w in ref.get_layer(
        [l.name for l in ref.layers if isinstance(l, keras.layers.Normalization)][0]).weights]
    x = np.random.default_rng(2).random((1, 64, 64, 3)).astype("float32")
    expected = (x - mean) / np.sqrt(var) / np.sqrt(np.array([0.229, 0.224, 0.225]))
    np.testing.assert_allclose(norm(x), expected, rtol=1e-5, atol=1e-5)


def test_gray_input_channel_adapter_loads_rgb_weights(fake_weights):
    path = fake_weights[False]
    gray = models.efficientnet("b0", input_shape=(64, 64, 1), num_classes=2, task="binary", weights=path)
    adapter = gray.get_layer("channel_adapter")
    np.testing.assert_array_equal(adapter.get_weights()[0], np.ones((1, 1, 1, 3)))
    rgb = models.efficientnet("b0", input_shape=(64, 64, 3), num_classes=2, task="binary", weights=path)
    x = np.random.default_rng(3).random((2, 64, 64, 1)).astype("float32")
    for a, b in zip(_features(gray)(x), _features(rgb)(np.repeat(x, 3, -1))):
        np.testing.assert_allclose(a, b, atol=1e-4 * max(1.0, float(np.abs(b).max())))
    assert gray.count_params() == rgb.count_params() + 3


def test_no_adapter_without_weights_and_pixel_max():
    gray = models.efficientnet("b0", input_shape=(32, 32, 1), num_classes=2)
    assert "channel_adapter" not in {l.name for l in gray.layers}
    a = models.efficientnet("b0", input_shape=(32, 32, 3), num_classes=2, pixel_max=1.0)
    b = models.efficientnet("b0", input_shape=(32, 32, 3), num_classes=2, pixel_max=255.0)
    b.set_weights(a.get_weights())
    assert "input_scale" not in {l.name for l in b.layers}
    x = np.random.default_rng(4).random((1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(a(x), b(x * 255), atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="download"):
        models.efficientnet("b0", input_shape=(32, 32, 3), num_classes=2, weights="imagenet")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        models.efficientnet("b0", input_shape=(32, 32, 3), num_classes=2, weights="nope.h5")
    with pytest.raises(ValueError, match="variant"):
        models.efficientnet("b9", num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        models.efficientnet("b0")
    with pytest.raises(ValueError, match="input_shape"):
        models.efficientnet("b0", input_shape=(8, 32, 32, 1), num_classes=2)


def test_lite_form_has_relu6_and_no_squeeze_excitation():
    """``lite=True``: the keras.applications graph with ReLU6 and se_ratio 0 (EfficientNet-Lite's changes)."""
    import keras

    lite = models.build("efficientnet", variant="b0", input_shape=(64, 64, 1), num_classes=2, task="binary", lite=True)
    full = models.build("efficientnet", variant="b0", input_shape=(64, 64, 1), num_classes=2, task="binary")
    assert lite.name == "efficientnet_b0_lite"
    assert not [l.name for l in lite.layers if "_se_" in l.name]
    assert [l.name for l in full.layers if "_se_" in l.name]
    acts = {l.get_config()["activation"] for l in lite.layers if isinstance(l, keras.layers.Activation)}
    assert acts == {"relu6"}
    # the same blocks otherwise: every depthwise convolution of B0 is there, with the same kernels and strides
    dw = lambda m: [(l.name, l.kernel_size, l.strides) for l in m.layers if isinstance(l, keras.layers.DepthwiseConv2D)]
    assert dw(lite) == dw(full)
    assert lite.count_params() < full.count_params()
    x = np.random.default_rng(0).random((2, 64, 64, 1), dtype=np.float32)
    assert lite.predict(x, verbose=0).shape == (2, 1)


def test_lite_errors():
    with pytest.raises(ValueError, match="V1"):
        models.build("efficientnet", variant="v2b0", input_shape=(64, 64, 3), num_classes=2, task="binary", lite=True)
    with pytest.raises(ValueError, match="from scratch"):
        models.build("efficientnet", variant="b0", input_shape=(64, 64, 3), num_classes=2, task="binary", lite=True,
                     weights=__file__)


def test_bn_momentum_is_set_and_saved(tmp_path):
    import keras

    m = models.build("efficientnet", variant="b0", input_shape=(32, 32, 1), num_classes=2, task="binary",
                     bn_momentum=0.9)
    bns = [l for l in m.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 49 and {l.momentum for l in bns} == {0.9}
    m.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    assert {l.momentum for l in back.layers if isinstance(l, keras.layers.BatchNormalization)} == {0.9}
    with pytest.raises(ValueError, match="bn_momentum"):
        models.build("efficientnet", variant="b0", input_shape=(32, 32, 1), num_classes=2, task="binary",
                     bn_momentum=1.5)
