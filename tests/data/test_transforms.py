"""Deterministic transforms against independent references (pydicom, OpenCV, tf.image, NumPy twin)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tensorflow as tf
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing

from medtf.data import spec as S
from medtf.data import transforms as T


def _pydicom_window01(x, width, level):
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = 16
    ds.PixelRepresentation = 1
    ds.WindowCenter = level
    ds.WindowWidth = width
    y = apply_windowing(np.asarray(x, np.float64), ds)
    return (y + 32768.0) / 65535.0


@pytest.mark.parametrize("width,level", [(1500.0, -600.0), (400.0, 40.0), (80.0, 40.0), (2.0, 0.0), (3000.5, 17.25)])
def test_window_equals_pydicom_linear(width, level):
    x = np.concatenate([np.linspace(-2000, 2000, 4001), [level - width / 2, level + width / 2, level - 0.5]])
    ref = _pydicom_window01(x, width, level)
    got = T.window(tf.constant(x, tf.float32), width, level).numpy()
    np.testing.assert_allclose(got, ref, atol=2e-6)  # float32 vs float64 reference
    np.testing.assert_allclose(S.window_numpy(x, width, level), ref, atol=2e-6)
    assert got.min() >= 0.0 and got.max() <= 1.0


def test_resize_numpy_matches_opencv_linear():
    rng = np.random.default_rng(0)
    x = rng.random((37, 29, 2)).astype(np.float32)
    for size in [(64, 50), (20, 15), (37, 60)]:
        ref = cv2.resize(x, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(S.resize_numpy(x, size), ref, atol=1e-5)


def test_crop_or_pad_matches_tf_image_2d():
    x = np.arange(7 * 10 * 2, dtype=np.float32).reshape(7, 10, 2)
    for size in [(5, 4), (9, 13), (4, 12), (7, 10)]:
        ref = tf.image.resize_with_crop_or_pad(x, *size).numpy()
        np.testing.assert_array_equal(T.crop_or_pad(x, size).numpy(), ref)
        np.testing.assert_array_equal(S.crop_or_pad_numpy(x, size), ref)


def test_resize_3d_is_separable_trilinear_and_nearest_keeps_labels():
    rng = np.random.default_rng(1)
    x = rng.random((6, 9, 11, 1)).astype(np.float32)
    got = T.resize(x, (10, 7, 16)).numpy()
    np.testing.assert_allclose(got, S.resize_numpy(x, (10, 7, 16)), atol=1e-5)
    m = rng.integers(0, 4, (6, 9, 11, 1)).astype(np.uint8)
    mn = T.resize(m, (12, 18, 22), "nearest").numpy()
    assert mn.dtype == np.uint8 and set(np.unique(mn)) <= set(np.unique(m))
    np.testing.assert_array_equal(mn, S.resize_numpy(m, (12, 18, 22), "nearest"))
    np.testing.assert_array_equal(mn[::2, ::2, ::2], m)  # exact 2x nearest upsampling


SPECS = [
    S.Preprocessing(intensity="window", windows=((1500, -600), (400, 40)), size=(20, 24)),
    S.Preprocessing(intensity="zscore", size=(16, 16), resize="crop_or_pad", channels=3),
    S.Preprocessing(intensity="zscore", mean=10.0, std=300.0, channels=1),
    S.Preprocessing(intensity="range", value_range=(-1000, 400), size=(31, 17)),
    S.Preprocessing(intensity="scale", scale=255.0, size=(40, 40), channels=3),
    S.Preprocessing(),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.intensity + "-" + s.resize)
def test_apply_preprocessing_matches_numpy_twin_2d(spec):
    rng = np.random.default_rng(2)
    x = rng.integers(-1200, 1500, (23, 27, 1)).astype(np.float32)
    np.testing.assert_allclose(T.apply_preprocessing(x, spec).numpy(), S.apply_numpy(x, spec), atol=1e-5, rtol=1e-5)


def test_apply_preprocessing_matches_numpy_twin_3d_and_rgb():
    rng = np.random.default_rng(3)
    vol = rng.integers(-1000, 1000, (9, 12, 14, 1)).astype(np.float32)
    for spec in [S.Preprocessing(intensity="window", windows=((400, 40),), size=(6, 16, 10)),
                 S.Preprocessing(intensity="zscore", size=(12, 8, 8), resize="crop_or_pad")]:
        np.testing.assert_allclose(T.apply_preprocessing(vol, spec).numpy(), S.apply_numpy(vol, spec), atol=1e-5)
    rgb = rng.integers(0, 256, (15, 13, 3)).astype(np.float32)
    spec = S.Preprocessing(intensity="scale", scale=255.0, channels=1, size=(10, 10))
    np.testing.assert_allclose(T.apply_preprocessing(rgb, spec).numpy(), S.apply_numpy(rgb, spec), atol=1e-5)


def test_apply_preprocessing_moves_mask_with_crop():
    x = np.zeros((10, 10, 1), np.float32)
    x[2:4, 6:8] = 1
    mask = (x > 0).astype(np.uint8)
    spec = S.Preprocessing(size=(6, 6), resize="crop_or_pad")
    img, m = T.apply_preprocessing(x, spec, mask=mask)
    np.testing.assert_array_equal(m.numpy()[..., 0] > 0, img.numpy()[..., 0] > 0)


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


def test_bad_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="one value per spatial axis"):
        T.resize(np.zeros((4, 4, 1), np.float32), (4, 4, 4))
    with pytest.raises(ValueError, match="size needs 2 values"):
        S.resize_numpy(np.zeros((4, 4, 1)), (3,))
