"""Processing options against independent references (tf.image.resize, SciPy, pydicom's windowing)."""

from __future__ import annotations

import numpy as np
import pytest

from medtf.io.types import Image
from medtf.records.process import (
    ProcessError,
    ProcessOptions,
    cast_for_storage,
    conversion_spec,
    join_dtypes,
    natural_dtype,
    process_image,
)


def resize(img, size):
    return process_image(img, ProcessOptions(size=size, image_dtype="float32"))


def crop_or_pad(img, size, pad_value):
    return process_image(img, ProcessOptions(size=size, resize="crop_or_pad"))


def resample_to_spacing(img, spacing):
    return process_image(img, ProcessOptions(spacing=spacing, image_dtype="float32"))


def _img(shape, spacing, mask=False, origin=(10.0, 20.0, 30.0)):
    rng = np.random.default_rng(len(shape))
    arr = rng.integers(-1000, 1500, shape).astype(np.int16)
    m = rng.integers(0, 3, shape[:-1]).astype(np.uint8) if mask else None
    return Image(array=arr, spacing=spacing, patient="P-x", origin=origin, direction=tuple(np.eye(3).ravel()), mask=m)


def test_raw_keeps_values_and_picks_narrowest_dtype():
    img = _img((6, 5, 1), (0.5, 0.7))
    out = process_image(img, ProcessOptions())
    assert out.array.dtype == np.int16
    np.testing.assert_array_equal(out.array, img.array)
    hu = img.array.astype(np.float64)  # integer-valued floats (HU after rescale) are stored as integers
    assert process_image(Image(array=hu, spacing=(1, 1), patient="p"), ProcessOptions()).array.dtype == np.int16


@pytest.mark.parametrize(
    "values,expected",
    [([0, 255], "uint8"), ([-1, 5], "int16"), ([0, 60000], "uint16"), ([-1, 60000], "int32"),
     ([0.5], "float32"), ([-1024.0, 3071.0], "int16"), ([np.nan], "float32")],
)
def test_natural_dtype(values, expected):
    assert natural_dtype(np.asarray(values)) == expected


def test_join_dtypes_is_lossless():
    assert join_dtypes(["uint8", "int16"]) == "int16"
    assert join_dtypes(["uint16", "int16"]) == "int32"
    assert join_dtypes(["uint8", "float32"]) == "float32"
    with pytest.raises(ProcessError, match="do not fit"):
        cast_for_storage(np.array([70000]), "int16")


def test_windows_stack_as_channels_like_pydicom():
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_voi_lut

    img = _img((8, 9, 1), (1.0, 1.0))
    opts = ProcessOptions(intensity="window", windows=("lung", (400, 40)))
    out = process_image(img, opts)
    assert out.array.shape == (8, 9, 2) and out.array.dtype == np.float32
    for c, (w, l) in enumerate([(1500.0, -600.0), (400.0, 40.0)]):
        ds = Dataset()
        ds.WindowWidth, ds.WindowCenter, ds.PhotometricInterpretation = w, l, "MONOCHROME2"
        ds.BitsStored, ds.PixelRepresentation = 16, 1
        ref = apply_voi_lut(img.array[..., 0].astype(np.float64), ds)  # pydicom maps into [y_min, y_max] of the stored range
        lo, hi = -(2 ** 15), 2 ** 15 - 1
        np.testing.assert_allclose(out.array[..., c], (ref - lo) / (hi - lo), atol=1e-6)


@pytest.mark.parametrize("shape,size", [((10, 12, 1), (7, 17)), ((9, 4, 3), (9, 8)), ((5, 6, 4, 1), (3, 9, 5))])
def test_resize_matches_tf_image_resize(shape, size):
    tf = pytest.importorskip("tensorflow")
    img = _img(shape, tuple([1.0] * (len(shape) - 1)), mask=True)
    out = resize(img, size)
    assert out.array.shape == tuple(size) + shape[-1:]
    x = img.array.astype(np.float32)
    if len(size) == 2:
        ref = tf.image.resize(x, size, method="bilinear").numpy()
        mref = tf.image.resize(img.mask[..., None], size, method="nearest").numpy()[..., 0]
    else:  # separable: H,W first, then D
        hw = tf.image.resize(x, size[1:], method="bilinear").numpy()
        ref = tf.transpose(tf.image.resize(tf.transpose(hw, (1, 0, 2, 3)), (size[0], size[2]), method="bilinear"),
                           (1, 0, 2, 3)).numpy()
        mref = None
    np.testing.assert_allclose(out.array, ref, atol=1e-3)
    if mref is not None:
        np.testing.assert_array_equal(out.mask, mref)
    # geometry: same physical extent; first centre moves by half the spacing change
    sp = np.asarray(img.spacing) * np.asarray(shape[:-1]) / np.asarray(size)
    np.testing.assert_allclose(out.spacing, sp)
    shift = (sp - np.asarray(img.spacing)) / 2
    np.testing.assert_allclose(np.asarray(out.origin)[: len(size)], np.asarray(img.origin)[: len(size)] + shift[::-1])


def test_crop_or_pad_copies_exactly_and_moves_origin():
    img = _img((6, 7, 1), (0.5, 2.0), mask=True)
    out = crop_or_pad(img, (4, 9), pad_value=None)
    assert out.array.shape == (4, 9, 1)
    np.testing.assert_array_equal(out.array[:, 1:8], img.array[1:5])
    assert (out.array[:, 0] == img.array.min()).all() and (out.mask[:, 0] == 0).all()
    np.testing.assert_array_equal(out.mask[:, 1:8], img.mask[1:5])
    # row offset +1 (crop) → y += 0.5 mm; col offset -1 (pad) → x -= 2 mm
    np.testing.assert_allclose(out.origin, (10.0 - 2.0, 20.0 + 0.5, 30.0))
    assert out.array.dtype == img.array.dtype  # raw values are copied exactly and padded with the image minimum
    assert out.array.min() == img.array.min()


def test_resample_matches_scipy_linear_and_nearest_mask():
    from scipy import ndimage

    img = _img((5, 12, 10, 1), (2.5, 0.6, 0.8), mask=True)
    out = resample_to_spacing(img, (1.25, 1.2, 1.6))
    assert out.array.shape == (10, 6, 5, 1)
    assert out.spacing == (1.25, 1.2, 1.6) and out.origin == img.origin
    grid = np.meshgrid(*[np.arange(n) * t / s for n, t, s in zip((10, 6, 5), (1.25, 1.2, 1.6), img.spacing)],
                       indexing="ij")
    inside = np.all([(g <= n - 1) for g, n in zip(grid, (5, 12, 10))], axis=0)
    ref = ndimage.map_coordinates(img.array[..., 0].astype(np.float64), grid, order=1)
    np.testing.assert_allclose(out.array[..., 0][inside], ref[inside], atol=1e-2)
    mref = ndimage.map_coordinates(img.mask, grid, order=0)
    agree = (out.mask == mref)[inside].mean()
    assert agree > 0.95  # nearest-neighbour rounding at exact .5 ties may differ
    assert set(np.unique(out.mask)) <= set(np.unique(img.mask))


def test_option_errors_name_the_option():
    with pytest.raises(ValueError, match="intensity must be one of"):
        ProcessOptions(intensity="hu")
    with pytest.raises(ValueError, match="needs at least one window"):
        ProcessOptions(intensity="window")
    with pytest.raises(ValueError, match="window must be a preset"):
        ProcessOptions(intensity="window", windows=("lungs",))


def test_conversion_spec_is_what_process_image_applies_and_reads_old_manifests():
    from medtf.preprocess import apply

    opts = ProcessOptions(intensity="window", windows=("lung",), spacing=(2.0, 1.0), size=(5, 7))
    spec = opts.to_preprocessing()
    img = _img((8, 9, 1), (1.0, 1.5))
    np.testing.assert_array_equal(process_image(img, opts).array, apply(img.array, spec, img.spacing))
    assert conversion_spec({"preprocessing": spec.to_dict()}) == spec
    old = {"options": {"process": {"intensity": "raw", "windows": [], "spacing": None, "size": [4, 4],
                                   "resize": "crop_or_pad", "image_dtype": None}}}
    assert conversion_spec(old).size == (4, 4) and conversion_spec(old).pad == "min"
    assert conversion_spec({"intensity": {"kind": "window", "windows": [[400, 40]]}}).windows == ((400.0, 40.0),)
    assert conversion_spec({}) is None
    with pytest.raises(ProcessError, match="size needs 1 or 2 values"):
        process_image(_img((4, 4, 1), (1.0, 1.0)), ProcessOptions(size=(2, 2, 2)))
