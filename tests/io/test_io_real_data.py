"""Real public data (../shared/data): LIDC series vs SimpleITK, DICOM-SEG vs NRRD, BraTS NIfTI vs
SimpleITK, MedMNIST npz split sizes. Each test skips when its folder is absent."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from medtf.io import Pseudonymizer, ReadOptions, discover, read_unit
from medtf.io.arrays import iter_npz
from medtf.io.nifti import read_nifti, read_nifti_case
from medtf.io.seg import read_dicom_seg

pytestmark = pytest.mark.shared_data
PZ = Pseudonymizer(b"test-secret-0123456789")


def _sitk_series(folder):
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(names)
    return reader.Execute(), names


def test_lidc_series_equals_simpleitk(shared_data, tmp_path):
    src = shared_data("tcia_lidc_idri_0001_ct_subset") / "dicom"
    files = sorted(src.glob("*.dcm"))
    assert len(files) == 41
    rng = random.Random(1234)
    names = [f"{rng.getrandbits(64):016x}.dcm" for _ in files]
    rng.shuffle(names)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for f, name in zip(files, names):
        shutil.copyfile(f, shuffled / name)

    units, rejected = discover([shuffled], pseudonymizer=PZ)
    assert rejected == [] and len(units) == 1 and units[0].kind == "dicom_series" and len(units[0].paths) == 41
    image = read_unit(units[0], pseudonymizer=PZ)[0]

    ref, _ = _sitk_series(shuffled)
    ref_arr = sitk.GetArrayFromImage(ref)
    assert image.array.shape == ref_arr.shape + (1,)
    assert np.array_equal(image.array[..., 0], ref_arr)  # HU identical
    assert np.issubdtype(image.array.dtype, np.integer)
    np.testing.assert_allclose(image.spacing[::-1], ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(image.origin, ref.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(image.direction, ref.GetDirection(), atol=1e-6)
    assert image.modality == "CT" and image.meta["num_slices"] == 41
    assert image.array.min() >= -2048 and image.array.max() <= 3071  # HU range stated in SOURCE.md
    assert image.spacing[0] == pytest.approx(2.5, abs=1e-4)  # SOURCE.md: contiguous, dz 2.5


def test_dicom_seg_equals_nrrd_label_maps(shared_data):
    root = shared_data("dicom_seg_dcmqi_ct3slice")
    ct = sorted((root / "ct-3slice").glob("*.dcm"))
    attrs = json.loads((root / "seg-example_partial_overlaps.json").read_text())["segmentAttributes"]

    by_paths = read_dicom_seg(root / "partial_overlaps.dcm", ct)
    assert by_paths.mask.shape == (3, 512, 512, 5) and by_paths.mask.dtype == np.uint8
    assert by_paths.labels == ("GREEN", "ORANGE", "PURPLE", "LIGHT_BLUE", "DARK_BLUE")
    checked = 0
    for i, group in enumerate(attrs, start=1):  # partial_overlaps-<i>.nrrd holds the i-th group's labelIDs
        nrrd = sitk.ReadImage(str(root / f"partial_overlaps-{i}.nrrd"))
        labels = sitk.GetArrayFromImage(nrrd)
        for seg in group:
            k = by_paths.labels.index(seg["SegmentLabel"])
            assert np.array_equal(by_paths.mask[..., k], (labels == seg["labelID"]).astype(np.uint8)), seg["SegmentLabel"]
            checked += 1
    assert checked == 5
    # the NRRD geometry is the CT volume's: the series volume must match it too
    units, _ = discover([root / "ct-3slice", root / "partial_overlaps.dcm"], pseudonymizer=PZ)
    series = [u for u in units if u.kind == "dicom_series"]
    assert len(series) == 1 and len(series[0].paths) == 4  # the SEG joined its series
    volume = read_unit(series[0], pseudonymizer=PZ)[0]
    np.testing.assert_allclose(volume.origin, nrrd.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(volume.spacing[::-1], nrrd.GetSpacing(), atol=1e-4)
    assert np.array_equal(volume.mask, by_paths.mask)
    assert volume.meta["segment_labels"] == list(by_paths.labels)
    # alignment by position (Images carry no UIDs) gives the same masks
    volume_only = read_unit(type(series[0])("dicom_series", series[0].paths[:3], series[0].key), pseudonymizer=PZ)[0]
    by_position = read_dicom_seg(root / "partial_overlaps.dcm", volume_only)
    assert np.array_equal(by_position.mask, by_paths.mask)
    # an unrelated SEG (its PET source is absent) is rejected by discover, not crashed on
    _, rejected = discover([root / "sr-example"], pseudonymizer=PZ)
    assert {p.split("/")[-1] for p, _ in rejected} == {"seg.dcm", "sr.dcm"}


def test_brats_nifti_equals_simpleitk(shared_data):
    case = shared_data("brats2015_deepmedic") / "train" / "brats_2013_pat0005_1"
    for name in ("Flair_subtrMeanDivStd.nii.gz", "OTMultiClass.nii.gz", "brainmask.nii.gz"):
        path = case / name
        image = read_nifti(path, patient="P-x")
        ref = sitk.ReadImage(str(path))
        ref_arr = sitk.GetArrayFromImage(ref)
        assert image.array.shape == ref_arr.shape + (1,)
        assert np.array_equal(image.array[..., 0], ref_arr), name
        np.testing.assert_allclose(image.spacing[::-1], ref.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(image.origin, ref.GetOrigin(), atol=1e-5)
        np.testing.assert_allclose(image.direction, ref.GetDirection(), atol=1e-6)


def test_brats_case_with_aligned_mask(shared_data):
    case = shared_data("brats2015_deepmedic") / "test" / "brats_2013_pat0001_1"
    image = read_nifti_case([case / "Flair_subtrMeanDivStd.nii.gz", case / "T1c_subtrMeanDivStd.nii.gz"],
                            case / "OTMultiClass.nii.gz", patient=PZ.patient("brats_2013_pat0001_1"))
    assert image.array.shape == (155, 240, 240, 2) and image.mask.shape == (155, 240, 240)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "OTMultiClass.nii.gz")))
    assert np.array_equal(image.mask, ref.astype(np.uint8))
    assert set(np.unique(image.mask)) <= {0, 1, 2, 3, 4}
    t1c = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "T1c_subtrMeanDivStd.nii.gz")))
    assert np.array_equal(image.array[..., 1], t1c)
    # discover with patient_from="parent" puts the case's files under one patient
    units, _ = discover([case.parent], pseudonymizer=PZ)
    pats = {read_unit(u, pseudonymizer=PZ, options=ReadOptions(patient_from="parent"))[0].patient
            for u in units if u.rel.startswith("brats_2013_pat0001_1/") and u.kind == "nifti"}
    assert len(pats) == 1


@pytest.mark.parametrize("name,sizes,labels", [
    ("pneumoniamnist", {"train": 4708, "val": 524, "test": 624}, {"train": {0: 1214, 1: 3494}, "test": {0: 234, 1: 390}}),
    ("retinamnist", {"train": 1080, "val": 120, "test": 400}, {"val": {0: 54, 1: 12, 2: 28, 3: 20, 4: 6}}),
])
def test_medmnist_split_sizes(shared_data, name, sizes, labels):
    path = shared_data(name) / f"{name}.npz"
    units, rejected = discover([path], pseudonymizer=PZ)
    assert [u.kind for u in units] == ["npz"] and rejected == []
    images = read_unit(units[0], pseudonymizer=PZ)
    counts = {s: sum(im.split == s for im in images) for s in sizes}
    assert counts == sizes
    for split, expected in labels.items():
        got = {}
        for im in images:
            if im.split == split:
                got[im.label[0]] = got.get(im.label[0], 0) + 1
        assert got == expected
    first = images[0]
    assert first.array.shape == ((28, 28, 1) if name == "pneumoniamnist" else (28, 28, 3))
    with np.load(path) as z:
        assert np.array_equal(first.array[..., 0] if name == "pneumoniamnist" else first.array, z["train_images"][0])
        assert np.array_equal(images[-1].array.reshape(z["test_images"][-1].shape), z["test_images"][-1])
    patients = {im.patient for im in images}
    assert len(patients) == len(images)  # one pseudonymous patient per row
    assert first.patient == PZ.patient(f"{name}.npz#train#0") and first.index == 0
    assert sum(1 for _ in iter_npz(path, pseudonymizer=PZ, splits=("val",))) == sizes["val"]


def test_adrenal3d_volumes(shared_data):
    path = shared_data("adrenalmnist3d") / "adrenalmnist3d.npz"
    images = list(iter_npz(path, pseudonymizer=PZ, splits=("val",)))
    assert len(images) == 98 and images[0].array.shape == (28, 28, 28, 1) and images[0].spacing == (1.0, 1.0, 1.0)
