"""PNG/JPEG/TIFF, crafted NIfTI geometry vs SimpleITK, npz layouts, discover bookkeeping."""

from __future__ import annotations

import subprocess
import sys

import cv2
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from io_dicom_factory import make_series, make_slice

from medtf.io import Pseudonymizer, ReadError, ReadOptions, SourceUnit, discover, read_unit
from medtf.io.arrays import iter_npz
from medtf.io.images import read_image
from medtf.io.nifti import read_nifti, read_nifti_mask

PZ = Pseudonymizer(b"test-secret-0123456789")
RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------------------ 2D images
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_gray_and_rgb_roundtrip(tmp_path, dtype):
    hi = np.iinfo(dtype).max
    gray = RNG.integers(0, hi, size=(17, 23), dtype=dtype)
    rgb = RNG.integers(0, hi, size=(9, 11, 3), dtype=dtype)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    cv2.imwrite(str(tmp_path / "c.png"), rgb[..., ::-1])  # OpenCV writes BGR
    g = read_image(tmp_path / "g.png", patient="P-1")[0]
    c = read_image(tmp_path / "c.png", patient="P-1")[0]
    assert g.array.dtype == dtype and np.array_equal(g.array[..., 0], gray) and g.array.shape == (17, 23, 1)
    assert c.array.dtype == dtype and np.array_equal(c.array, rgb)  # RGB order restored
    assert g.spacing == (1.0, 1.0) and g.meta["spacing_default"] and g.modality == "PNG"


def test_png_alpha_dropped_and_jpeg(tmp_path):
    rgba = RNG.integers(0, 255, size=(8, 8, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    a = read_image(tmp_path / "a.png", patient="P-1")[0]
    assert a.array.shape == (8, 8, 3) and a.meta["alpha_dropped"]
    assert np.array_equal(a.array, cv2.cvtColor(rgba, cv2.COLOR_BGRA2RGB))
    img = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (16, 1))
    cv2.imwrite(str(tmp_path / "j.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    j = read_image(tmp_path / "j.jpg", patient="P-1")[0]
    ref = cv2.imread(str(tmp_path / "j.jpg"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(j.array[..., 0], ref) and j.modality == "JPEG"


def test_tiff_gray_rgb_and_pages(tmp_path):
    g16 = RNG.integers(0, 65535, size=(10, 12), dtype=np.uint16)
    rgb = RNG.integers(0, 255, size=(10, 12, 3), dtype=np.uint8)
    stack = RNG.integers(0, 255, size=(4, 10, 12), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "g.tif", g16)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "s.tif", stack)
    assert np.array_equal(read_image(tmp_path / "g.tif", patient="P")[0].array[..., 0], g16)
    assert np.array_equal(read_image(tmp_path / "c.tif", patient="P")[0].array, rgb)
    vol = read_image(tmp_path / "s.tif", patient="P")[0]
    assert vol.array.shape == (4, 10, 12, 1) and np.array_equal(vol.array[..., 0], stack)
    pages = read_image(tmp_path / "s.tif", patient="P", options=ReadOptions(frames="each"))
    assert [p.index for p in pages] == [0, 1, 2, 3] and np.array_equal(pages[2].array[..., 0], stack[2])


def test_corrupt_and_huge_images_rejected(tmp_path):
    img = RNG.integers(0, 255, size=(64, 64), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "ok.png"), img)
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[:60])
    with pytest.raises(ReadError) as exc:
        read_image(tmp_path / "trunc.png", patient="P")
    assert exc.value.path == str(tmp_path / "trunc.png")
    with pytest.raises(ReadError, match="max_pixels"):
        read_image(tmp_path / "ok.png", patient="P", options=ReadOptions(max_pixels=100))
    cv2.imwrite(str(tmp_path / "ok.jpg"), img)
    with pytest.raises(ReadError, match="max_pixels"):
        read_image(tmp_path / "ok.jpg", patient="P", options=ReadOptions(max_pixels=100))


# ------------------------------------------------------------------------------------------------ NIfTI
def _oblique_affine():
    rot = np.array([[np.cos(0.4), -np.sin(0.4), 0.0], [np.sin(0.4), np.cos(0.4), 0.0], [0.0, 0.0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.8, 1.1, 2.5])
    aff[:3, 3] = [12.5, -30.0, 7.25]
    return aff


@pytest.mark.parametrize("codes", [(1, 1), (1, 2), (1, 0), (0, 1), (2, 1), (2, 0), (4, 1), (3, 2)])
def test_nifti_geometry_matches_simpleitk(tmp_path, codes):
    sform_code, qform_code = codes
    data = RNG.normal(size=(7, 6, 5)).astype(np.float32)
    aff = _oblique_affine()
    img = nib.Nifti1Image(data, None)
    img.set_sform(aff, code=sform_code)
    q = aff.copy()
    q[:3, 3] += [1.0, 2.0, 3.0]  # make qform differ so the choice is visible
    img.set_qform(q, code=qform_code)
    path = tmp_path / "x.nii.gz"
    nib.save(img, path)
    ours = read_nifti(path, patient="P")
    ref = sitk.ReadImage(str(path))
    assert np.array_equal(ours.array[..., 0], sitk.GetArrayFromImage(ref))
    np.testing.assert_allclose(ours.spacing[::-1], ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(ours.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ours.direction, ref.GetDirection(), atol=1e-5)


def test_nifti_sheared_sform_handling(tmp_path):
    sheared = np.eye(4)
    sheared[:3, :3] = [[1.0, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), None)
    img.set_sform(sheared, code=1)
    q = np.eye(4)
    q[:3, 3] = [5.0, 6.0, 7.0]
    img.set_qform(q, code=1)
    nib.save(img, tmp_path / "q.nii.gz")
    ours, ref = read_nifti(tmp_path / "q.nii.gz", patient="P"), sitk.ReadImage(str(tmp_path / "q.nii.gz"))
    assert ours.meta["nifti_xform"] == "qform"  # ITK falls back to the qform too
    np.testing.assert_allclose(ours.origin, ref.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(ours.direction, ref.GetDirection(), atol=1e-6)
    img.set_qform(q, code=0)
    nib.save(img, tmp_path / "s.nii.gz")
    with pytest.raises(ReadError, match="orthonormal"):
        read_nifti(tmp_path / "s.nii.gz", patient="P")


def test_nifti_4d_to_channels_and_scaling(tmp_path):
    data = RNG.integers(-100, 100, size=(6, 5, 4, 3)).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0]))
    nib.save(img, tmp_path / "t.nii")
    ours = read_nifti(tmp_path / "t.nii", patient="P")
    assert ours.array.shape == (4, 5, 6, 3) and ours.array.dtype == np.int16
    assert np.array_equal(ours.array, data.transpose(2, 1, 0, 3))
    assert ours.spacing == (3.0, 1.5, 1.5)
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, tmp_path / "s.nii.gz")
    scaled = read_nifti(tmp_path / "s.nii.gz", patient="P")
    assert scaled.array.dtype == np.float32
    np.testing.assert_array_equal(scaled.array, (data.transpose(2, 1, 0, 3) * 0.5 + 10.0).astype(np.float32))


def test_nifti_mask_alignment(tmp_path):
    aff = _oblique_affine()
    nib.save(nib.Nifti1Image(RNG.normal(size=(7, 6, 5)).astype(np.float32), aff), tmp_path / "img.nii.gz")
    labels = RNG.integers(0, 4, size=(7, 6, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(labels, aff), tmp_path / "seg.nii.gz")
    moved = aff.copy()
    moved[0, 3] += 5.0
    nib.save(nib.Nifti1Image(labels, moved), tmp_path / "off.nii.gz")
    image = read_nifti(tmp_path / "img.nii.gz", patient="P")
    mask = read_nifti_mask(tmp_path / "seg.nii.gz", image)
    assert mask.dtype == np.uint8 and np.array_equal(mask, labels.transpose(2, 1, 0).astype(np.uint8))
    with pytest.raises(ReadError, match="geometry"):
        read_nifti_mask(tmp_path / "off.nii.gz", image)
    nib.save(nib.Nifti1Image(labels + 0.5, aff), tmp_path / "frac.nii.gz")
    with pytest.raises(ReadError, match="integers"):
        read_nifti_mask(tmp_path / "frac.nii.gz", image)


def test_truncated_nifti_rejected(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4)), tmp_path / "a.nii")
    data = (tmp_path / "a.nii").read_bytes()
    (tmp_path / "b.nii").write_bytes(data[:2000])
    with pytest.raises(ReadError):
        read_nifti(tmp_path / "b.nii", patient="P")


# -------------------------------------------------------------------------------------------------- npz
def test_npz_layouts(tmp_path):
    np.savez(tmp_path / "m2.npz", train_images=np.zeros((3, 4, 5), np.uint8), train_labels=np.array([[0], [1], [1]]),
             test_images=np.ones((2, 4, 5, 3), np.uint8), test_labels=np.array([[0, 1], [1, 0]]))
    imgs = list(iter_npz(tmp_path / "m2.npz", pseudonymizer=PZ))
    assert [im.split for im in imgs] == ["train"] * 3 + ["test"] * 2
    assert imgs[0].array.shape == (4, 5, 1) and imgs[3].array.shape == (4, 5, 3)
    assert imgs[1].label == (1,) and imgs[4].label == (1, 0)
    np.savez(tmp_path / "m3.npz", val_images=np.zeros((2, 6, 6, 6), np.uint8), val_labels=np.array([[3], [4]]))
    vol = list(iter_npz(tmp_path / "m3.npz", pseudonymizer=PZ))
    assert vol[0].array.shape == (6, 6, 6, 1) and vol[0].spacing == (1.0, 1.0, 1.0) and vol[1].label == (4,)
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((3, 4, 5), np.uint8), train_labels=np.array([0, 1]))
    with pytest.raises(ReadError, match="rows"):
        list(iter_npz(tmp_path / "bad.npz", pseudonymizer=PZ))
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ReadError, match="train_images"):
        list(iter_npz(tmp_path / "other.npz", pseudonymizer=PZ))


# --------------------------------------------------------------------------------------------- discover
def test_discover_every_file_exactly_once_and_deterministic(tmp_path):
    root = tmp_path / "in"
    make_series(root / "ct", n=4)
    (root / "single").mkdir(parents=True)
    (root / "pics").mkdir()
    make_slice(root / "single" / "xr.dcm", series_uid="1.2.826.0.1.3680043.10.1234.77")
    cv2.imwrite(str(root / "pics" / "a.png"), np.zeros((4, 4), np.uint8))
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4)), root / "vol.nii.gz")
    np.savez(root / "data.npz", train_images=np.zeros((2, 4, 4), np.uint8))
    (root / "notes.txt").write_text("hello")
    (root / "empty.png").write_bytes(b"")
    (root / "fake.nii.gz").write_bytes(b"\x1f\x8b" + b"garbage")
    all_files = sorted(str(p) for p in root.rglob("*") if p.is_file())

    units, rejected = discover([root], pseudonymizer=PZ)
    consumed = [p for u in units for p in u.paths] + [p for p, _ in rejected]
    assert sorted(consumed) == all_files and len(consumed) == len(set(consumed))
    kinds = {u.rel or u.key: u.kind for u in units}
    assert all(u.key.startswith(("F-", "series-")) for u in units)  # names are pseudonyms by default
    assert kinds["pics/a.png"] == "image" and kinds["vol.nii.gz"] == "nifti" and kinds["data.npz"] == "npz"
    assert kinds["single/xr.dcm"] == "dicom"  # a one-slice series stays a 2D unit in auto mode
    assert sum(k == "dicom_series" for k in kinds.values()) == 1
    assert {r for _, r in rejected} >= {"empty file"}
    assert discover([root], pseudonymizer=PZ) == (units, rejected)
    vol_units, _ = discover([root], pseudonymizer=PZ, mode="volume")
    assert sum(u.kind == "dicom_series" for u in vol_units) == 2
    for unit in units:  # every unit reads
        assert read_unit(unit, pseudonymizer=PZ)


def test_read_unit_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        read_unit(SourceUnit("video", ("x",), "x"), pseudonymizer=PZ)


def test_import_is_cheap():
    code = ("import sys, medtf.io, medtf.io.deid, medtf.io.types; "
            "from medtf.io import discover, Pseudonymizer; "
            "assert 'tensorflow' not in sys.modules and 'pydicom' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
