"""Crafted DICOM: MONOCHROME1, modality LUT dtypes, VOI, series geometry errors, malformed inputs."""

from __future__ import annotations

import os
import pathlib
import tracemalloc

import numpy as np
import pydicom
import pytest
from io_dicom_factory import make_series, make_slice
from pydicom.pixels import apply_modality_lut

from medtf.io import Pseudonymizer, ReadError, ReadOptions, SourceUnit, discover, read_unit
from medtf.io.dicom import invert_monochrome1, read_dicom_file, read_dicom_series, voi_window

PZ = Pseudonymizer(b"test-secret-0123456789")


# ------------------------------------------------------------------------------------------ MONOCHROME1
def test_monochrome1_inverts_over_bits_stored_not_min_max(tmp_path):
    stored = np.array([[0, 100, 200], [300, 400, 500]], dtype=np.uint16)  # max 500 << 4095
    path = make_slice(tmp_path / "m1.dcm", pixels=stored, photometric="MONOCHROME1", bits_stored=12,
                      slope=1.0, intercept=0.0)
    image = read_dicom_file(path, pseudonymizer=PZ)[0]
    hand = np.array([[4095, 3995, 3895], [3795, 3695, 3595]])  # 2^12 - 1 - v, computed by hand
    assert np.array_equal(image.array[..., 0], hand)
    assert image.meta["inverted_monochrome1"] is True
    # a min/max inversion would give 500 - v; make sure we did not
    assert not np.array_equal(image.array[..., 0], stored.max() - stored)


def test_monochrome1_inversion_happens_before_modality_lut(tmp_path):
    stored = np.array([[0, 1, 2, 1000]], dtype=np.uint16)
    path = make_slice(tmp_path / "m1r.dcm", pixels=stored, photometric="MONOCHROME1", bits_stored=10,
                      slope=2.0, intercept=-5.0)
    image = read_dicom_file(path, pseudonymizer=PZ)[0]
    expected = ((1023 - stored.astype(np.float64)) * 2.0 - 5.0)
    np.testing.assert_array_equal(image.array[..., 0], expected)
    assert image.array.dtype == np.float64


def test_monochrome1_signed_range():
    arr = np.array([-2048, -1, 0, 2047], dtype=np.int16)
    out = invert_monochrome1(arr, 12, signed=True)
    # signed 12-bit range [-2048, 2047]: min + max - v = -1 - v
    np.testing.assert_array_equal(out, [2047, 0, -1, -2048])
    assert out.dtype == np.int16


# ------------------------------------------------------------------------------------------ modality LUT
def test_integer_rescale_stays_integer_and_equals_pydicom(tmp_path):
    path = make_slice(tmp_path / "ct.dcm", bits_stored=12, slope=1.0, intercept=-1024.0)
    image = read_dicom_file(path, pseudonymizer=PZ)[0]
    ds = pydicom.dcmread(path)
    ref = apply_modality_lut(ds.pixel_array, ds)
    assert np.issubdtype(image.array.dtype, np.integer)
    assert np.array_equal(image.array[..., 0], ref)
    assert image.meta["modality_lut"] == "rescale_int"


def test_fractional_rescale_matches_pydicom_float64(tmp_path):
    path = make_slice(tmp_path / "pt.dcm", bits_stored=12, slope=0.37, intercept=1.5)
    image = read_dicom_file(path, pseudonymizer=PZ)[0]
    ds = pydicom.dcmread(path)
    ref = apply_modality_lut(ds.pixel_array, ds)
    assert image.array.dtype == ref.dtype == np.float64
    np.testing.assert_array_equal(image.array[..., 0], ref)


def test_geometry_of_single_slice(tmp_path):
    path = make_slice(tmp_path / "g.dcm", z=7.0, pixel_spacing=(0.5, 0.75))
    image = read_dicom_file(path, pseudonymizer=PZ)[0]
    assert image.spacing == (0.5, 0.75)
    assert image.origin == (-10.0, -20.0, 7.0)
    assert image.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    no_sp = make_slice(tmp_path / "nosp.dcm", extra={})
    ds = pydicom.dcmread(no_sp)
    del ds.PixelSpacing
    ds.save_as(no_sp)
    image = read_dicom_file(no_sp, pseudonymizer=PZ)[0]
    assert image.spacing == (1.0, 1.0) and image.meta["spacing_default"] is True


# -------------------------------------------------------------------------------------------------- VOI
def test_voi_window_linear_formula_and_apply_voi(tmp_path):
    # PS3.3 C.11.2.1.2.1: c=40, w=400 → y = ((x - 39.5) / 399 + 0.5), clipped to [0, 1]
    x = np.array([-200.0, -159.5, 39.5, 40.0, 239.0, 240.0, 1000.0])
    y = voi_window(x, 40.0, 400.0)
    hand = np.clip((x - 39.5) / 399.0 + 0.5, 0, 1)
    np.testing.assert_allclose(y, hand, atol=1e-7)
    stored = np.array([[0, 1000, 1064, 1100, 4095]], dtype=np.uint16)
    path = make_slice(tmp_path / "w.dcm", pixels=stored, extra={"WindowCenter": 40.0, "WindowWidth": 400.0})
    image = read_dicom_file(path, pseudonymizer=PZ, options=ReadOptions(apply_voi=True))[0]
    hu = stored.astype(np.float64) - 1024
    np.testing.assert_allclose(image.array[..., 0], np.clip((hu - 39.5) / 399.0 + 0.5, 0, 1), atol=1e-6)
    assert image.array.dtype == np.float32 and image.meta["voi_applied"] is True
    with pytest.raises(ReadError, match="no VOI window"):
        read_dicom_file(make_slice(tmp_path / "nw.dcm"), pseudonymizer=PZ, options=ReadOptions(apply_voi=True))


def test_voi_on_monochrome1_is_displayed_inverted(tmp_path):
    stored = np.array([[0, 2048, 4095]], dtype=np.uint16)
    path = make_slice(tmp_path / "w1.dcm", pixels=stored, photometric="MONOCHROME1", slope=1.0, intercept=0.0,
                      extra={"WindowCenter": 2048.0, "WindowWidth": 4096.0})
    image = read_dicom_file(path, pseudonymizer=PZ, options=ReadOptions(apply_voi=True))[0]
    expected = 1.0 - np.clip((stored - 2047.5) / 4095.0 + 0.5, 0, 1)
    np.testing.assert_allclose(image.array[..., 0], expected, atol=1e-6)


# ----------------------------------------------------------------------------------------------- series
def test_series_sorted_by_position_not_names(tmp_path):
    paths = make_series(tmp_path / "s", n=6, dz=2.5)
    image = read_dicom_series(paths, pseudonymizer=PZ)[0]
    assert image.array.shape == (6, 8, 6, 1)
    # slice i was written with seed=i at z0 + i*dz: check ordering against each file's own pixels
    for p in paths:
        ds = pydicom.dcmread(p)
        k = int(round((float(ds.ImagePositionPatient[2]) - (-30.0)) / 2.5))
        np.testing.assert_array_equal(image.array[k, ..., 0], apply_modality_lut(ds.pixel_array, ds))
    assert image.spacing == pytest.approx((2.5, 0.5, 0.75), abs=1e-9)
    assert image.origin == pytest.approx((-10.0, -20.0, -30.0))


def test_series_oblique_orientation_ordering(tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    iop = (c, s, 0.0, 0.0, 0.0, -1.0)  # coronal-ish oblique: normal has x/y components
    paths = make_series(tmp_path / "o", n=4, dz=1.25, iop=iop)
    image = read_dicom_series(paths, pseudonymizer=PZ)[0]
    d = np.asarray(image.direction).reshape(3, 3)
    np.testing.assert_allclose(d[:, 0], iop[:3], atol=1e-9)
    np.testing.assert_allclose(d[:, 1], iop[3:], atol=1e-9)
    np.testing.assert_allclose(d[:, 2], np.cross(iop[:3], iop[3:]), atol=1e-9)
    assert image.spacing[0] == pytest.approx(1.25)


def test_series_missing_slice_rejected(tmp_path):
    paths = make_series(tmp_path / "m", n=6, skip=(3,))
    with pytest.raises(ReadError, match="missing slice"):
        read_dicom_series(paths, pseudonymizer=PZ)


def test_series_duplicate_slice_rejected(tmp_path):
    paths = make_series(tmp_path / "d", n=5, duplicate=2)
    with pytest.raises(ReadError, match="duplicate slice"):
        read_dicom_series(paths, pseudonymizer=PZ)


def test_series_non_uniform_spacing_rejected(tmp_path):
    paths = [make_slice(tmp_path / f"{i}.dcm", z=z, seed=i) for i, z in enumerate([0.0, 2.0, 4.0, 7.0, 9.0])]
    with pytest.raises(ReadError, match="non-uniform spacing"):
        read_dicom_series(paths, pseudonymizer=PZ)


def test_series_mismatched_orientation_rejected(tmp_path):
    paths = make_series(tmp_path / "x", n=4)
    paths.append(make_slice(tmp_path / "x" / "odd.dcm", z=100.0, iop=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0)))
    with pytest.raises(ReadError, match="orientation"):
        read_dicom_series(paths, pseudonymizer=PZ)


def test_series_mismatched_size_and_spacing_rejected(tmp_path):
    paths = make_series(tmp_path / "r", n=3)
    bad = make_slice(tmp_path / "r" / "big.dcm", z=-30 + 3 * 2.5, rows=9, cols=6)
    with pytest.raises(ReadError, match="Rows/Columns"):
        read_dicom_series(paths + [bad], pseudonymizer=PZ)
    bad.unlink()
    bad = make_slice(tmp_path / "r" / "sp.dcm", z=-30 + 3 * 2.5, pixel_spacing=(0.6, 0.75))
    with pytest.raises(ReadError, match="PixelSpacing"):
        read_dicom_series(paths + [bad], pseudonymizer=PZ)


def test_series_through_discover(tmp_path):
    make_series(tmp_path / "in", n=5)
    units, rejected = discover([tmp_path / "in"], pseudonymizer=PZ)
    assert rejected == [] and len(units) == 1 and units[0].kind == "dicom_series"
    assert units[0].key.startswith("series-") and "1.2.826" not in units[0].key
    assert units[0].key == f"series-{PZ.token('1.2.826.0.1.3680043.10.1234.1')}"
    image = read_unit(units[0], pseudonymizer=PZ)[0]
    assert image.array.shape == (5, 8, 6, 1)
    slices, _ = discover([tmp_path / "in"], pseudonymizer=PZ, mode="slice")
    assert len(slices) == 5 and all(u.kind == "dicom" for u in slices)


# ------------------------------------------------------------------------------------------- malformed
def _assert_reason(err: ReadError, path):
    assert err.path == str(path) and err.reason
    assert str(err) == f"{path}: {err.reason}"


def test_empty_and_random_files_rejected_by_discover(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "random.dcm").write_bytes(np.random.default_rng(1).bytes(4096))
    units, rejected = discover([tmp_path], pseudonymizer=PZ)
    assert units == []
    reasons = dict((os.path.basename(p), r) for p, r in rejected)
    assert reasons["empty.dcm"] == "empty file"
    assert "unknown file type" in reasons["random.bin"]
    assert "not a DICOM" in reasons["random.dcm"]
    for name in ("empty.dcm", "random.bin"):
        with pytest.raises(ReadError) as exc:
            read_unit(SourceUnit("dicom", (str(tmp_path / name),), name), pseudonymizer=PZ)
        _assert_reason(exc.value, tmp_path / name)


def test_truncated_dicom_rejected(tmp_path):
    path = make_slice(tmp_path / "full.dcm", rows=64, cols=64)
    data = path.read_bytes()
    trunc = tmp_path / "trunc.dcm"
    trunc.write_bytes(data[: len(data) - 3000])
    with pytest.raises(ReadError) as exc:
        read_dicom_file(trunc, pseudonymizer=PZ)
    _assert_reason(exc.value, trunc)


def test_dicom_without_pixel_data_rejected(tmp_path):
    path = make_slice(tmp_path / "np.dcm")
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(ReadError, match="no pixel data"):
        read_dicom_file(path, pseudonymizer=PZ)


def test_absurd_size_rejected_before_allocating(tmp_path):
    path = make_slice(tmp_path / "huge.dcm")
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 100000
    ds.save_as(path)
    tracemalloc.start()
    try:
        with pytest.raises(ReadError, match="max_pixels") as exc:
            read_unit(SourceUnit("dicom", (str(path),), "huge.dcm"), pseudonymizer=PZ)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"peak allocation {peak} bytes: the size check came too late"
    _assert_reason(exc.value, path)
    # a custom limit applies as well
    small = make_slice(tmp_path / "s.dcm", rows=10, cols=10)
    with pytest.raises(ReadError, match="max_pixels=50"):
        read_dicom_file(small, pseudonymizer=PZ, options=ReadOptions(max_pixels=50))


def test_options_validation():
    with pytest.raises(ValueError, match="frames"):
        ReadOptions(frames="some")
    with pytest.raises(ValueError, match="max_pixels"):
        ReadOptions(max_pixels=0)
    with pytest.raises(ValueError, match="mode"):
        discover([pathlib.Path(__file__).parent], pseudonymizer=PZ, mode="3d")


def _enhanced_multiframe(path, positions, iop=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0)):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    path = make_slice(path, rows=4, cols=5)
    ds = pydicom.dcmread(path)
    n = len(positions)
    frames = np.arange(n * 20, dtype=np.uint16).reshape(n, 4, 5)
    ds.NumberOfFrames = n
    ds.PixelData = frames.tobytes()
    for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, k)
    measures, orient = Dataset(), Dataset()
    measures.PixelSpacing = [0.4, 0.6]
    orient.ImageOrientationPatient = list(iop)
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orient])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for pos in positions:
        plane, item = Dataset(), Dataset()
        plane.ImagePositionPatient = list(pos)
        item.PlanePositionSequence = Sequence([plane])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.save_as(path)
    return path, frames


def test_enhanced_multiframe_geometry_from_functional_groups(tmp_path):
    path, frames = _enhanced_multiframe(tmp_path / "mf.dcm", [(1.0, 2.0, 3.0 + 1.5 * i) for i in range(4)])
    image = read_dicom_file(path, pseudonymizer=PZ)[0]
    assert image.array.shape == (4, 4, 5, 1)
    np.testing.assert_array_equal(image.array[..., 0], frames.astype(np.int64) - 1024)
    assert image.spacing == pytest.approx((1.5, 0.4, 0.6))
    assert image.origin == (1.0, 2.0, 3.0) and "frame_spacing_default" not in image.meta
    middle = read_dicom_file(path, pseudonymizer=PZ, options=ReadOptions(frames="middle"))[0]
    assert middle.array.shape == (4, 5, 1) and middle.index == 2 and middle.spacing == pytest.approx((0.4, 0.6))
    np.testing.assert_array_equal(middle.array[..., 0], frames[2].astype(np.int64) - 1024)
    # irregular frame positions: frame spacing unknown → 1.0, flagged
    path2, _ = _enhanced_multiframe(tmp_path / "irr.dcm", [(0, 0, 0), (0, 0, 1), (0, 0, 5)])
    irregular = read_dicom_file(path2, pseudonymizer=PZ)[0]
    assert irregular.spacing[0] == 1.0 and irregular.meta["frame_spacing_default"] is True


def test_single_segment_seg_from_highdicom_reads_back(tmp_path):
    """highdicom writes a one-segment SEG's segment number once, in the shared functional groups."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from medtf.io.seg import read_dicom_seg

    paths = sorted(make_series(tmp_path / "ct", n=4), key=str)
    sources = sorted((pydicom.dcmread(p) for p in paths), key=lambda d: float(d.ImagePositionPatient[2]))
    frame_of_reference = pydicom.uid.generate_uid()
    for d in sources:  # the patient/study module highdicom copies into the SEG
        d.FrameOfReferenceUID = d.get("FrameOfReferenceUID") or frame_of_reference
        for kw in ("PatientName", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
                   "ReferringPhysicianName", "StudyDate", "StudyTime"):
            if kw not in d:
                setattr(d, kw, "1" if kw == "StudyID" else ("20240101" if kw == "StudyDate" else
                                                            "120000" if kw == "StudyTime" else ""))
    mask = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), dtype=bool)
    mask[1:3, 2:6, 3:7] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion", segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc], series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="medtf", manufacturer_model_name="test", software_versions="0",
        device_serial_number="0")
    seg.save_as(tmp_path / "seg.dcm")
    res = read_dicom_seg(tmp_path / "seg.dcm", [str(p) for p in paths])
    assert list(res.labels) == ["lesion"]
    got = res.mask[..., 0] if res.mask.ndim == 4 else res.mask
    np.testing.assert_array_equal(got.astype(bool), mask)
