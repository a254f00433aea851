"""medtf.preprocess: the NumPy reference against independent references (pydicom, OpenCV, SimpleITK,
tf.image) and the TensorFlow twin against the NumPy reference (unbatched and batched, 2D and 3D)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing

import medtf.preprocess as P
from medtf.preprocess import Chain, Preprocessing
from medtf.preprocess import tf_ops as T


def _pydicom_window01(x, width, level, function="LINEAR"):
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = 16
    ds.PixelRepresentation = 1
    ds.WindowCenter = level
    ds.WindowWidth = width
    ds.VOILUTFunction = function
    y = apply_windowing(np.asarray(x, np.float64), ds)
    return (y + 32768.0) / 65535.0


@pytest.mark.parametrize("width,level", [(1500.0, -600.0), (400.0, 40.0), (80.0, 40.0), (2.0, 0.0), (3000.5, 17.25)])
def test_window_equals_pydicom_linear(width, level):
    x = np.concatenate([np.linspace(-2000, 2000, 4001), [level - width / 2, level + width / 2, level - 0.5]])
    ref = _pydicom_window01(x, width, level)
    got = T.window(tf.constant(x, tf.float32), width, level).numpy()
    np.testing.assert_allclose(got, ref, atol=2e-6)  # float32 vs float64 reference
    np.testing.assert_allclose(P.window(x, width, level), ref, atol=2e-6)
    assert got.min() >= 0.0 and got.max() <= 1.0


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_voi_functions_equal_pydicom(function):
    x = np.linspace(-1500, 1500, 3001)
    np.testing.assert_allclose(P.voi_window(x, 40.0, 400.0, function), _pydicom_window01(x, 400.0, 40.0, function),
                               atol=2e-6)


def test_window_presets_parse_once():
    assert P.parse_window("lung") == (1500.0, -600.0)
    assert P.parse_window("Mediastinum") == (350.0, 50.0)
    assert P.parse_window("400,40") == (400.0, 40.0)
    assert P.parse_windows(["lung,mediastinum", "80,40"]) == ((1500.0, -600.0), (350.0, 50.0), (80.0, 40.0))
    with pytest.raises(ValueError, match="preset"):
        P.parse_window("lungs")
    with pytest.raises(ValueError, match="width must be >= 1"):
        P.parse_window("0.5,10")
    # the spec resolves preset names too
    assert Preprocessing(intensity="window", windows=("lung",)).windows == ((1500.0, -600.0),)


def test_resize_matches_opencv_linear_and_tf():
    rng = np.random.default_rng(0)
    x = rng.random((37, 29, 2)).astype(np.float32)
    for size in [(64, 50), (20, 15), (37, 60)]:
        ref = cv2.resize(x, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(P.resize(x, size), ref, atol=1e-5)
        np.testing.assert_allclose(T.resize(x, size).numpy(), P.resize(x, size), atol=1e-5)
        tfr = tf.image.resize(x, size, "bilinear", antialias=False).numpy()
        np.testing.assert_allclose(P.resize(x, size), tfr, atol=1e-5)


def test_crop_or_pad_matches_tf_image_2d_and_fills():
    x = np.arange(7 * 10 * 2, dtype=np.float32).reshape(7, 10, 2)
    for size in [(5, 4), (9, 13), (4, 12), (7, 10)]:
        ref = tf.image.resize_with_crop_or_pad(x, *size).numpy()
        np.testing.assert_array_equal(T.crop_or_pad(x, size).numpy(), ref)
        np.testing.assert_array_equal(P.crop_or_pad(x, size), ref)
    padded = P.crop_or_pad(x, (9, 12), fill=-7)
    assert padded[0, 0, 0] == -7 and padded[1, 1, 0] == x[0, 0, 0]
    np.testing.assert_array_equal(T.crop_or_pad(x, (9, 12), -7.0).numpy(), padded)


def test_resize_3d_is_separable_trilinear_and_nearest_keeps_labels():
    rng = np.random.default_rng(1)
    x = rng.random((6, 9, 11, 1)).astype(np.float32)
    got = T.resize(x, (10, 7, 16)).numpy()
    np.testing.assert_allclose(got, P.resize(x, (10, 7, 16)), atol=1e-5)
    batched = T.resize(np.stack([x, 2 * x]), (10, 7, 16), batched=True).numpy()
    np.testing.assert_allclose(batched[1], P.resize(2 * x, (10, 7, 16)), atol=1e-5)
    m = rng.integers(0, 4, (6, 9, 11, 1)).astype(np.uint8)
    mn = T.resize(m, (12, 18, 22), "nearest").numpy()
    assert mn.dtype == np.uint8 and set(np.unique(mn)) <= set(np.unique(m))
    np.testing.assert_array_equal(mn, P.resize(m, (12, 18, 22), "nearest"))
    np.testing.assert_array_equal(mn[::2, ::2, ::2], m)  # exact 2x nearest upsampling


def _sitk_resample(x, in_sp, out_sp, nearest):
    vector = x.shape[-1] > 1
    img = sitk.GetImageFromArray(x if vector else x[..., 0], isVector=vector)
    img.SetSpacing([float(s) for s in in_sp[::-1]])
    rs = sitk.ResampleImageFilter()
    out = P.numpy_ops.resampled_shape(x.shape[:-1], in_sp, out_sp)
    rs.SetSize([int(s) for s in out[::-1]])
    rs.SetOutputSpacing([float(s) for s in out_sp[::-1]])
    rs.SetOutputOrigin([0.0] * len(in_sp))
    rs.SetOutputDirection(img.GetDirection())
    rs.SetInterpolator(sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    rs.SetDefaultPixelValue(float(x.min()))
    if not nearest:
        rs.SetOutputPixelType(sitk.sitkVectorFloat32 if vector else sitk.sitkFloat32)
    a = sitk.GetArrayFromImage(rs.Execute(img))
    return a if vector else a[..., None]


RESAMPLES = [
    ((2.5, 0.7, 0.7), (4.0, 1.5, 1.5)),  # CT series → coarse isotropic-ish
    ((1.0, 1.0, 1.0), (0.6, 0.7, 1.3)),  # finer on two axes: samples past the last voxel take the default
    ((3.0, 0.85, 0.9), (1.0, 1.0, 1.0)),  # (no sample exactly half-way: ITK and we may round those apart)
    ((0.7, 0.9), (1.1, 0.5)),  # 2D in-plane
]


@pytest.mark.parametrize("in_sp,out_sp", RESAMPLES)
def test_resample_equals_simpleitk_and_tf(in_sp, out_sp):
    rng = np.random.default_rng(5)
    shape = (7, 9, 11) if len(in_sp) == 3 else (23, 17)
    x = (rng.normal(size=shape + (1,)) * 300).astype(np.float32)
    got = P.resample(x, in_sp, out_sp)
    ref = _sitk_resample(x, in_sp, out_sp, nearest=False)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-3)  # ITK interpolates in double, both round to float32
    np.testing.assert_allclose(T.resample(x, in_sp, out_sp).numpy(), got, atol=1e-3)
    m = rng.integers(0, 3, shape + (1,)).astype(np.uint8)
    np.testing.assert_array_equal(P.resample(m, in_sp, out_sp, "nearest", default=0),
                                  _sitk_resample(m, in_sp, out_sp, nearest=True))
    np.testing.assert_array_equal(T.resample(m, in_sp, out_sp, "nearest", default=0).numpy(),
                                  P.resample(m, in_sp, out_sp, "nearest", default=0))


def test_resample_multichannel_equals_simpleitk_vector():
    rng = np.random.default_rng(6)
    x = rng.random((12, 10, 3)).astype(np.float32)
    np.testing.assert_allclose(P.resample(x, (0.8, 1.0), (1.3, 0.6)), _sitk_resample(x, (0.8, 1.0), (1.3, 0.6), False),
                               atol=1e-6)


SPECS = [
    Preprocessing(intensity="window", windows=((1500, -600), (400, 40)), size=(20, 24)),
    Preprocessing(intensity="zscore", size=(16, 16), resize="crop_or_pad", channels=3),
    Preprocessing(intensity="zscore", mean=10.0, std=300.0, channels=1),
    Preprocessing(intensity="range", value_range=(-1000, 400), size=(31, 17)),
    Preprocessing(intensity="scale", scale=255.0, size=(40, 40), channels=3),
    Preprocessing(size=(30, 20), resize="crop_or_pad", pad="min"),
    Preprocessing(spacing=(1.4, 0.9), intensity="window", windows=("lung",), size=(12, 12)),
    Preprocessing(),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_tf_apply_matches_numpy_2d_unbatched_and_batched(spec):
    rng = np.random.default_rng(2)
    xs = rng.integers(-1200, 1500, (3, 23, 27, 1)).astype(np.float32)
    sp = np.array([[0.7, 0.8], [1.0, 1.0], [0.5, 0.6]], np.float32)
    ref = np.stack([P.apply(x, spec, s) for x, s in zip(xs, sp)])
    for i in range(3):
        np.testing.assert_allclose(T.apply(xs[i], spec, sp[i]).numpy(), ref[i], atol=1e-4, rtol=1e-5)
    if spec.spacing is None or spec.size is not None:
        got = T.apply_chain(xs, Chain.of(spec), sp, batched=True).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-5)


def test_tf_apply_matches_numpy_3d_and_rgb():
    rng = np.random.default_rng(3)
    vol = rng.integers(-1000, 1000, (9, 12, 14, 1)).astype(np.float32)
    for spec in [Preprocessing(intensity="window", windows=((400, 40),), size=(6, 16, 10)),
                 Preprocessing(intensity="zscore", size=(12, 8, 8), resize="crop_or_pad"),
                 Preprocessing(spacing=(4.0, 1.5, 1.5), intensity="window", windows=("lung", "mediastinum"),
                               size=(4, 8, 8))]:
        np.testing.assert_allclose(T.apply(vol, spec, (2.5, 0.7, 0.7)).numpy(), P.apply(vol, spec, (2.5, 0.7, 0.7)),
                                   atol=1e-5)
    rgb = rng.integers(0, 256, (15, 13, 3)).astype(np.float32)
    spec = Preprocessing(intensity="scale", scale=255.0, channels=1, size=(10, 10))
    np.testing.assert_allclose(T.apply(rgb, spec).numpy(), P.apply(rgb, spec), atol=1e-5)


def test_chain_applies_stages_in_order_with_spacing_following():
    rng = np.random.default_rng(7)
    vol = rng.integers(-1000, 1000, (10, 20, 20, 1)).astype(np.int16)
    conv = Preprocessing(spacing=(4.0, 1.0, 1.0), intensity="window", windows=("lung",), size=(4, 16, 16))
    train = Preprocessing(intensity="zscore", channels=2)
    chain = Chain.of(conv, train)
    got = P.apply_chain(vol, chain, (2.0, 0.8, 0.8))
    stage1 = P.apply(vol, conv, (2.0, 0.8, 0.8))
    np.testing.assert_allclose(got, P.apply(stage1, train), atol=1e-6)
    assert got.shape == (4, 16, 16, 2)
    tf_got = T.apply_chain(vol[None].astype(np.float32), chain, np.array([[2.0, 0.8, 0.8]]), batched=True).numpy()[0]
    np.testing.assert_allclose(tf_got, got, atol=1e-4)
    assert Chain.from_list(chain.to_list()) == chain


def test_apply_moves_mask_with_every_geometric_step():
    x = np.zeros((20, 20, 1), np.float32)
    x[4:8, 12:16] = 1000
    mask = (x[..., 0] > 0).astype(np.uint8)
    for spec in [Preprocessing(size=(12, 12), resize="crop_or_pad"), Preprocessing(size=(10, 10)),
                 Preprocessing(spacing=(2.0, 2.0))]:
        img, m = P.apply(x, spec, (1.0, 1.0), mask=mask)
        assert m.dtype == np.uint8
        np.testing.assert_array_equal(m > 0, img[..., 0] > 500)
        tf_img, tf_m = T.apply(x, spec, (1.0, 1.0), mask=mask[..., None])
        np.testing.assert_array_equal(tf_m.numpy()[..., 0], m)


def test_keep_dtype_stores_raw_values_exactly():
    x = np.arange(-50, 50, dtype=np.int16).reshape(10, 10, 1)
    out = P.apply(x, Preprocessing(size=(6, 14), resize="crop_or_pad", pad="min"), keep_dtype=True)
    assert out.dtype == np.int16 and out.min() == -50


def test_bad_specs_and_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="size needs 2 values"):
        P.resize(np.zeros((4, 4, 1)), (3, 3, 3))
    with pytest.raises(ValueError, match="preprocessing.intensity"):
        Preprocessing(intensity="hu")
    with pytest.raises(ValueError, match=r"preprocessing\.spacing"):
        Preprocessing(spacing=(1.0, -2.0))
    with pytest.raises(ValueError, match="unknown config key .preprocessing.intensty. .did you mean .intensity"):
        Preprocessing.from_dict({"intensty": "window"})
    with pytest.raises(ValueError, match="spacing is unknown"):
        P.apply(np.zeros((4, 4, 1)), Preprocessing(spacing=(1.0,)))
    with pytest.raises(ValueError, match="cannot map 2 channels to 3"):
        P.apply(np.zeros((4, 4, 2)), Preprocessing(channels=3))
