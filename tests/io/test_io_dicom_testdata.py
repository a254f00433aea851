"""Every pydicom test file: our reader equals pydicom's decode + modality LUT, or rejects it cleanly."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.pixels import apply_color_lut, apply_modality_lut

from medtf.io import Pseudonymizer, ReadError
from medtf.io.dicom import read_dicom_file
from medtf.io.sources import classify

PZ = Pseudonymizer(b"test-secret-0123456789")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    FILES = sorted(f for f in get_testdata_files("*") if os.path.isfile(f))


def _reference(path):
    """pydicom's own decode: (expected array channels-last, dataset) or (exception, None)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True)
            arr = ds.pixel_array
        except Exception as exc:  # noqa: BLE001
            return exc, None
    photometric = ds.get("PhotometricInterpretation", "")
    if photometric == "PALETTE COLOR":
        return apply_color_lut(arr, ds), ds
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        if photometric == "MONOCHROME1":
            bits = int(ds.BitsStored)
            if int(ds.PixelRepresentation) == 1:
                arr = (-1 - arr.astype(np.int64)).astype(arr.dtype)
            else:
                arr = ((2**bits - 1) - arr.astype(np.int64)).astype(arr.dtype)
        return apply_modality_lut(arr, ds)[..., None], ds
    return arr, ds


def test_testdata_present():
    assert len(FILES) >= 50, "pydicom's bundled test files are missing"


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f) for f in FILES])
def test_testdata_file_equals_pydicom_or_is_rejected(path):
    kind, reason = classify(path)
    if kind != "dicom":
        assert kind is None and reason, f"{path}: classified {kind!r} without reason"
        return
    expected, ds = _reference(path)
    try:
        images = read_dicom_file(path, pseudonymizer=PZ)
    except ReadError as err:
        assert err.reason and str(err).startswith(str(path))
        return
    assert ds is not None, f"we decoded {os.path.basename(path)} but pydicom could not: {expected!r}"
    assert len(images) == 1
    out = images[0].array
    assert out.shape == expected.shape
    # exact equality of values (our integer HU vs pydicom's float64 are compared by value)
    assert np.array_equal(out, expected), os.path.basename(path)
    how = images[0].meta.get("modality_lut")
    if how == "rescale_float":  # non-integral rescale: pydicom's float64 exactly
        assert out.dtype == expected.dtype == np.float64
    elif how in ("rescale_int", "none"):  # slope 1, integral intercept: exact integers kept as integers
        assert np.issubdtype(out.dtype, np.integer) or np.issubdtype(out.dtype, np.floating) and how == "none"
    assert images[0].patient.startswith("P-")


def test_known_decodable_transfer_syntaxes_are_read():
    """A file of each transfer syntax family must really be decoded (not only rejected)."""
    names = {
        "MR_small_implicit.dcm": "Implicit VR Little Endian",
        "MR_small.dcm": "Explicit VR Little Endian",
        "MR_small_bigendian.dcm": "Explicit VR Big Endian",
        "image_dfl.dcm": "Deflated Explicit VR Little Endian",
        "MR_small_RLE.dcm": "RLE Lossless",
        "SC_rgb_jpeg_dcmtk.dcm": "JPEG Baseline (Process 1)",
        "JPGExtended.dcm": "JPEG Extended (Process 2 and 4)",
        "SC_rgb_jpeg_gdcm.dcm": "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS Lossless Image Compression",
        "MR_small_jp2klossless.dcm": "JPEG 2000 Image Compression (Lossless Only)",
        "JPEG2000.dcm": "JPEG 2000 Image Compression",
    }
    by_name = {os.path.basename(f): f for f in FILES}
    for name, ts in names.items():
        if name not in by_name:
            pytest.skip(f"{name} not bundled with this pydicom")
        image = read_dicom_file(by_name[name], pseudonymizer=PZ)[0]
        assert image.meta["TransferSyntax"] == ts
        expected, _ = _reference(by_name[name])
        assert np.array_equal(image.array, expected)


def test_colour_and_multiframe_layouts():
    by_name = {os.path.basename(f): f for f in FILES}
    ybr = read_dicom_file(by_name["SC_ybr_full_422_uncompressed.dcm"], pseudonymizer=PZ)[0]
    assert ybr.array.shape == (100, 100, 3) and ybr.meta["color_converted"] == "YBR_FULL_422->RGB"
    # pure red/green/blue bands survive YBR→RGB within rounding
    ref = read_dicom_file(by_name["SC_rgb_small_odd.dcm"], pseudonymizer=PZ)[0]
    assert ref.array.shape == (3, 3, 3)
    mf = read_dicom_file(by_name["examples_ybr_color.dcm"], pseudonymizer=PZ)
    assert mf[0].array.shape == (30, 240, 320, 3) and mf[0].spacing[0] == 1.0 and mf[0].meta["frame_spacing_default"]
    from medtf.io.types import ReadOptions

    each = read_dicom_file(by_name["rtdose.dcm"], pseudonymizer=PZ, options=ReadOptions(frames="each"))
    assert len(each) == 15 and [im.index for im in each] == list(range(15))
    assert np.array_equal(np.stack([im.array for im in each]), read_dicom_file(by_name["rtdose.dcm"], pseudonymizer=PZ)[0].array)
    # RT dose grid: spacing from the per-frame/GridFrameOffsetVector is not in functional groups → 1.0 flagged
    assert each[0].array.dtype == np.uint32


def test_discover_and_read_unit_over_all_testdata(tmp_path):
    """discover() + read_unit() on pydicom's whole test-file folder: every file accounted, none crashes."""
    import shutil

    for f in FILES:
        shutil.copyfile(f, tmp_path / os.path.basename(f))
    from medtf.io import discover, read_unit

    units, rejected = discover([tmp_path], pseudonymizer=PZ)
    consumed = sorted([p for u in units for p in u.paths] + [p for p, _ in rejected])
    assert consumed == sorted(str(tmp_path / os.path.basename(f)) for f in FILES)
    read, failed = 0, 0
    for unit in units:
        try:
            images = read_unit(unit, pseudonymizer=PZ)
        except ReadError as err:
            assert err.reason
            failed += 1
        else:
            assert images and all(im.array.size for im in images)
            read += 1
    assert read >= 40 and failed >= 1  # pydicom's MR_small* variants share one position → duplicate-slice series
