"""Acceptance on real / reference data: pydicom's bundled files, the LIDC CT series (vs SimpleITK),
DICOM-SEG (vs the NRRD label maps), MedMNIST npz (official split sizes, bit-exact round trip)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medtf.records.convert import ConvertConfig, convert

tf = pytest.importorskip("tensorflow")


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("MEDTF_PSEUDONYM_KEY", "00112233445566778899aabbccddeeff")


def _records(out, split):
    from medtf.records import load

    return {r["source"].numpy().decode(): r for r in load(out, split)}


def _pydicom_reference(path):
    """pydicom's own values: apply_modality_lut of the decoded pixels, with MONOCHROME1 inverted over the
    stored range (2^BitsStored - 1 - stored) before the LUT. None when pydicom cannot decode the file."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception:  # noqa: BLE001 - pydicom itself cannot decode it: must be rejected, not converted
        return None
    if ds.get("PhotometricInterpretation") == "MONOCHROME1" and not ds.get("PixelRepresentation", 0):
        arr = (2 ** int(ds.BitsStored) - 1) - arr.astype(np.int64)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "ModalityLUTSequence" in ds or "RescaleSlope" in ds or "RescaleIntercept" in ds:
        arr = apply_modality_lut(arr, ds)
    return arr, frames, int(ds.get("SamplesPerPixel", 1))


@pytest.mark.shared_data
def test_every_pydicom_test_file_converts_or_is_rejected(tmp_path):
    import pydicom.data

    src = tmp_path / "pydicom"
    src.mkdir()
    files = sorted(p for p in pydicom.data.get_testdata_files() if p.endswith(".dcm"))
    for p in files:
        shutil.copy(p, src / p.split("/")[-1])
    res = convert(ConvertConfig(keep_paths=True, inputs=(str(src),), output=str(tmp_path / "out"), mode="slice",
                                split="train=1.0", progress=False))
    assert res.exit_code in (0, 1)
    m = res.manifest
    entries = {f["path"]: f for f in m["files"]}
    assert set(entries) == {p.split("/")[-1] for p in files}  # every input accounted for
    recs = _records(tmp_path / "out", "train")
    checked = 0
    for name, entry in sorted(entries.items()):
        if entry["outcome"] == "rejected":
            assert entry["reason"]
            continue
        ref = _pydicom_reference(str(src / name))
        assert ref is not None, f"{name}: converted although pydicom cannot decode it"
        arr, frames, spp = ref
        keys = [entry["key"]] if "key" in entry else entry.get("keys", [])
        if frames > 1:
            arr = arr.reshape((frames,) + arr.shape[-3 + (spp == 1):])
        else:
            arr = arr[None]
        for i, key in enumerate(keys):
            got = recs[key]["image"].numpy()
            want = arr[int(key.split("#")[1]) if "#" in key else i]
            want = want[..., None] if spp == 1 else want
            if m["image_dtype"] == "float32":
                want = want.astype(np.float32)
            np.testing.assert_array_equal(got, want, err_msg=name)
            checked += 1
    assert checked >= 50


@pytest.mark.shared_data
def test_lidc_series_in_any_order_equals_simpleitk(tmp_path, shared_data):
    import SimpleITK as sitk

    folder = shared_data("tcia_lidc_idri_0001_ct_subset") / "dicom"
    dcms = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ""))
    shuffled = tmp_path / "in"
    shuffled.mkdir()
    for i, p in enumerate(np.random.default_rng(1).permutation(dcms)):
        shutil.copy(p, shuffled / f"{i:03d}_x.dcm")  # names carry no order
    res = convert(ConvertConfig(keep_paths=True, inputs=(str(shuffled),), output=str(tmp_path / "out"), mode="volume",
                                split="train=1.0", progress=False))
    assert res.exit_code == 0
    (rec,) = _records(tmp_path / "out", "train").values()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    np.testing.assert_array_equal(rec["image"].numpy()[..., 0], sitk.GetArrayFromImage(ref).astype(np.float32))
    geo = json.loads(rec_geometry(tmp_path / "out"))
    np.testing.assert_allclose(geo["spacing"], ref.GetSpacing()[::-1], atol=1e-4)
    np.testing.assert_allclose(geo["origin"], ref.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(geo["direction"], ref.GetDirection(), atol=1e-6)
    assert res.manifest["image_dtype"] == "int16"


def rec_geometry(out):
    from medtf.records.reader import read_manifest, shard_paths
    from medtf.records.schema import parse_example

    m = read_manifest(out)
    ds = tf.data.TFRecordDataset(shard_paths(out, "train"))
    for s in ds.take(1):
        return parse_example(s, m["image_dtype"])["geometry"].numpy().decode()


@pytest.mark.shared_data
def test_dicom_seg_masks_align_with_nrrd(tmp_path, shared_data):
    import SimpleITK as sitk

    root = shared_data("dicom_seg_dcmqi_ct3slice")
    inp = tmp_path / "in"
    shutil.copytree(root / "ct-3slice", inp / "ct")
    shutil.copy(root / "partial_overlaps.dcm", inp / "seg.dcm")
    res = convert(ConvertConfig(keep_paths=True, inputs=(str(inp),), output=str(tmp_path / "out"), mode="volume",
                                split="train=1.0", progress=False))
    assert res.exit_code == 0, res.manifest["files"]
    (rec,) = _records(tmp_path / "out", "train").values()
    mask = rec["mask"].numpy()
    img = rec["image"].numpy()
    assert mask.shape[:3] == img.shape[:3]
    # partial_overlaps-k.nrrd are label maps on the CT grid (value v = segment number v); together they
    # hold the 5 overlapping segments, which the record keeps as one mask channel per segment
    assert mask.shape[-1] == 5
    seen = set()
    for k in (1, 2, 3):
        nrrd = sitk.GetArrayFromImage(sitk.ReadImage(str(root / f"partial_overlaps-{k}.nrrd")))
        for v in np.unique(nrrd)[1:]:
            np.testing.assert_array_equal(mask[..., int(v) - 1] != 0, nrrd == v, err_msg=f"segment {v}")
            seen.add(int(v))
    assert seen == {1, 2, 3, 4, 5}


@pytest.mark.shared_data
@pytest.mark.parametrize("name,sizes", [("pneumoniamnist", (4708, 524, 624)), ("retinamnist", (1080, 120, 400))])
def test_medmnist_official_splits_and_bit_exact_round_trip(tmp_path, shared_data, name, sizes):
    path = shared_data(name) / f"{name}.npz"
    res = convert(ConvertConfig(keep_paths=True, inputs=(str(path),), output=str(tmp_path / "out"), progress=False))
    assert res.exit_code == 0
    m = res.manifest
    assert [m["splits"][s]["examples"] for s in ("train", "val", "test")] == list(sizes)
    assert m["image_dtype"] == "uint8" and m["preprocessing"]["intensity"] == "none" and m["split_method"] == "input"
    npz = np.load(path)
    for split in ("train", "val", "test"):
        images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
        recs = _records(tmp_path / "out", split)
        assert len(recs) == len(images)
        for key, r in recs.items():
            i = int(key.rsplit("/", 1)[1])
            want = images[i] if images.ndim == 4 else images[i][..., None]
            np.testing.assert_array_equal(r["image"].numpy(), want.astype(np.float32))
            assert r["image"].numpy().astype(np.uint8).tobytes() == want.tobytes()
            assert r["label"].numpy().tolist() == labels[i].tolist()
