"""Grad-CAM: equals CAM (Zhou et al.) for GAP + Dense heads (2D and 3D), finds the blob in a trained model."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from medtf.evaluation.explain import find_target_layer, grad_cam, overlay, save_overlay  # noqa: E402


def _gap_model(spatial_dims, shape, classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    conv = keras.layers.Conv2D if spatial_dims == 2 else keras.layers.Conv3D
    gap = keras.layers.GlobalAveragePooling2D if spatial_dims == 2 else keras.layers.GlobalAveragePooling3D
    inp = keras.Input(shape)
    x = conv(6, 3, padding="same", name="conv")(inp)
    x = keras.layers.ReLU(name="relu")(x)
    x = gap(name="gap")(x)
    out = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out)


def _cam_reference(model, x, c):
    """Class activation map: ReLU(sum_k w_kc A_k) from the layer weights, normalised by its max."""
    fmap = keras.Model(model.inputs[0], model.get_layer("relu").output)(x).numpy()
    w = model.get_layer("predictions").kernel.numpy()
    cam = np.maximum(np.tensordot(fmap, w[:, c], axes=([-1], [0])), 0)
    peak = cam.reshape(len(cam), -1).max(1).reshape((-1,) + (1,) * (cam.ndim - 1))
    return cam / np.where(peak > 0, peak, 1)


@pytest.mark.parametrize("spatial_dims,shape", [(2, (16, 20, 2)), (3, (6, 10, 12, 1))])
def test_grad_cam_equals_cam_for_gap_dense_head(spatial_dims, shape):
    model = _gap_model(spatial_dims, shape)
    x = np.random.default_rng(0).normal(size=(5,) + shape).astype(np.float32)
    assert find_target_layer(model) == "relu"
    for c in range(3):
        got = grad_cam(model, x, class_index=c)
        assert got.shape == (5,) + shape[:-1]
        np.testing.assert_allclose(got, _cam_reference(model, x, c), rtol=1e-4, atol=1e-5)
    # default target = the predicted class, per image
    pred = model.predict(x, verbose=0).argmax(1)
    ref = np.stack([_cam_reference(model, x[i:i + 1], pred[i])[0] for i in range(5)])
    np.testing.assert_allclose(grad_cam(model, x), ref, rtol=1e-4, atol=1e-5)
    # a single image without batch axis
    assert grad_cam(model, x[0], class_index=1).shape == (1,) + shape[:-1]


def test_grad_cam_upsamples_strided_feature_maps_3d():
    from medtf import models

    model = models.build("simple_cnn", input_shape=(16, 16, 16, 1), num_classes=3, task="multiclass", filters=(4, 8))
    assert find_target_layer(model) == "block2_relu"
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 16, 1)).astype(np.float32)
    cams = grad_cam(model, x, class_index=0)
    assert cams.shape == (2, 16, 16, 16)
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6


def test_errors_are_clear():
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(ValueError, match="4-D or 5-D"):
        find_target_layer(dense)
    model = _gap_model(2, (8, 8, 1))
    x = np.zeros((1, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match="class_index"):
        grad_cam(model, x, class_index=3)
    with pytest.raises(ValueError, match="not a layer"):
        grad_cam(model, x, layer_name="nope")
    with pytest.raises(ValueError, match="feature map"):
        grad_cam(model, x, layer_name="gap")
    with pytest.raises(ValueError, match="images must be"):
        grad_cam(model, np.zeros((1, 2, 8, 8, 1), np.float32))


def test_overlay_pngs_2d_and_3d(tmp_path):
    import matplotlib.image as mpimg

    img = np.random.default_rng(0).random((20, 30, 1)).astype(np.float32)
    heat = np.zeros((20, 30), np.float32)
    heat[5, 7] = 1.0
    rgb = overlay(img, heat)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    assert rgb[5, 7, 0] > rgb[5, 7, 2]  # hot spot shown red (jet at 1.0)
    p2 = save_overlay(tmp_path / "a.png", img, heat)
    assert mpimg.imread(p2).shape[:2] == (20, 30)
    vol = np.random.default_rng(1).random((8, 20, 30, 1)).astype(np.float32)
    p3 = save_overlay(tmp_path / "sub" / "b.png", vol, np.random.default_rng(2).random((8, 20, 30)))
    # axial (20x30) | coronal (8x30) | sagittal (8x20), 2-pixel gaps
    assert mpimg.imread(p3).shape[:2] == (20, 30 + 2 + 30 + 2 + 20)


def _quadrant_images(n, seed, size=48):
    """Noise + a hollow square distractor in one quadrant; class 1 adds a Gaussian blob in another quadrant."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    x = rng.normal(0, 0.15, (n, size, size, 1)).astype(np.float32)
    y = rng.integers(0, 2, n)
    q = rng.integers(0, 4, n)
    h = size // 2
    for i in range(n):
        qd = (q[i] + rng.integers(1, 4)) % 4
        cy, cx = (qd // 2) * h + rng.integers(7, h - 7), (qd % 2) * h + rng.integers(7, h - 7)
        x[i, cy - 5:cy + 6, cx - 5:cx + 6, 0] += 1.0
        x[i, cy - 3:cy + 4, cx - 3:cx + 4, 0] -= 1.0
        if y[i]:
            cy, cx = (q[i] // 2) * h + rng.integers(7, h - 7), (q[i] % 2) * h + rng.integers(7, h - 7)
            x[i, ..., 0] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))
    return x, y, q


def test_grad_cam_sanity_peak_in_blob_quadrant():
    """A CNN trained to detect a blob (with a same-brightness distractor elsewhere) must look at the blob:
    the Grad-CAM peak falls in the blob's quadrant for >= 90% of positive test images."""
    from medtf import models

    keras.utils.set_random_seed(0)
    x, y, _ = _quadrant_images(1200, 0)
    xt, yt, qt = _quadrant_images(200, 1)
    model = models.build("simple_cnn", input_shape=(48, 48, 1), num_classes=1, task="binary")
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    acc = model.evaluate(xt, yt, verbose=0)[1]
    assert acc >= 0.9, f"the model did not learn the task (test accuracy {acc:.3f})"
    pos = yt == 1
    cams = grad_cam(model, xt[pos])  # binary: the positive unit
    peaks = np.array([np.unravel_index(np.argmax(c), c.shape) for c in cams])
    quadrant = (peaks[:, 0] >= 24) * 2 + (peaks[:, 1] >= 24)
    hit = float(np.mean(quadrant == qt[pos]))
    assert hit >= 0.9, f"Grad-CAM peak in the blob quadrant for only {hit:.1%} of {pos.sum()} images"
