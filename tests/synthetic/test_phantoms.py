"""Phantom generator: files decode with pydicom, headers and HU right, labels balanced, deterministic."""

from __future__ import annotations

import csv
import hashlib
import json
import pathlib
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from medtf.synthetic import phantoms as ph

REPO = pathlib.Path(__file__).resolve().parents[2]


def _digest(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def cxr(tmp_path_factory):
    return ph.write_cxr_phantoms(tmp_path_factory.mktemp("cxr"), n_patients=4, studies_per_patient=2, size=64, seed=3)


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    return ph.write_ct_phantoms(
        tmp_path_factory.mktemp("ct"), n_patients=2, studies_per_patient=2, size=64, n_slices=16, seed=5,
        nodule_radius_mm=(7.0, 9.0),
    )


def test_cxr_files_decode_with_headers_and_transfer_syntaxes(cxr):
    seen_ts, seen_pi = set(), set()
    for i, item in enumerate(cxr.items):
        ds = pydicom.dcmread(cxr.images_dir / item["path"])
        assert ds.SOPClassUID == ph.DX_SOP_CLASS and ds.Modality == "DX"
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        assert ds.Rows == ds.Columns == 64
        assert float(ds.PixelSpacing[0]) == pytest.approx(350 / 64) == float(ds.ImagerPixelSpacing[1])
        assert (ds.RescaleSlope, ds.RescaleIntercept) == (1, 0)
        assert ds.PatientID.startswith("PHANTOM-") and str(ds.PatientName).startswith("PHANTOM^")
        seen_ts.add(ds.file_meta.TransferSyntaxUID)
        seen_pi.add(ds.PhotometricInterpretation)
        # lossless round trip: decoded stored values equal the regenerated image (inverted for MONOCHROME1)
        expected, _ = ph.cxr_image(ph._rng(3, "cxr", i), 64, opacity=bool(item["label"]))
        stored = ds.pixel_array.astype(np.int32)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            assert ds.PresentationLUTShape == "INVERSE"
            stored = 4095 - stored
        np.testing.assert_array_equal(stored, expected)
        assert stored.max() <= 4095
    assert seen_ts == set(ph.TRANSFER_SYNTAXES.values())
    assert seen_pi == {"MONOCHROME1", "MONOCHROME2"}


def test_cxr_several_studies_per_patient_and_balanced_labels(cxr):
    rows = list(csv.DictReader(open(cxr.labels_csv)))
    assert [r["path"] for r in rows] == [it["path"] for it in cxr.items]
    labels = [int(r["label"]) for r in rows]
    assert labels.count(1) == labels.count(0) == 4
    studies = {}
    for item in cxr.items:
        ds = pydicom.dcmread(cxr.images_dir / item["path"], stop_before_pixels=True)
        studies.setdefault(ds.PatientID, set()).add(ds.StudyInstanceUID)
    assert len(studies) == 4 and all(len(s) == 2 for s in studies.values())
    summary = json.loads((cxr.root / "phantoms.json").read_text())
    assert summary["labels"] == {"0": 4, "1": 4} and summary["patients"] == 4


def test_cxr_opacity_signal_is_learnable():
    """A linear classifier (sklearn) on 16x16 thumbnails separates opacity from normal (cross-validated)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    x, y = [], []
    for i in range(80):
        img, _ = ph.cxr_image(np.random.default_rng(i), 64, opacity=bool(i % 2))
        x.append(img.reshape(16, 4, 16, 4).mean((1, 3)).ravel() / 4095.0)
        y.append(i % 2)
    auc = cross_val_score(LogisticRegression(C=10, max_iter=5000), np.array(x), np.array(y), cv=4, scoring="roc_auc")
    assert auc.mean() > 0.85


def test_ct_series_geometry_and_hu(ct):
    item = next(it for it in ct.items if it["label"] == 1)
    files = sorted((ct.images_dir / item["path"]).glob("*.dcm"))
    assert len(files) == 16
    dss = [pydicom.dcmread(f) for f in files]
    assert {d.SeriesInstanceUID for d in dss} == {dss[0].SeriesInstanceUID}
    z = [float(d.ImagePositionPatient[2]) for d in dss]
    np.testing.assert_allclose(np.diff(z), -2.5)
    assert all(float(d.SliceLocation) == pytest.approx(zz) for d, zz in zip(dss, z))
    assert all(list(map(float, d.ImageOrientationPatient)) == [1, 0, 0, 0, 1, 0] for d in dss)
    assert (dss[0].RescaleIntercept, dss[0].RescaleSlope, dss[0].SOPClassUID) == (-1024, 1, ph.CT_SOP_CLASS)
    hu = np.stack([pydicom.pixels.apply_rescale(d.pixel_array, d) for d in dss]).astype(np.float64)
    assert np.median(hu[:, :3, :3]) == pytest.approx(-1000, abs=15)  # air
    nd = item["nodules"][0]
    k, i, j = nd["center_vox"]
    assert hu[k - 1 : k + 2, i, j].mean() == pytest.approx(40, abs=40)  # nodule core (3 voxels within 2.5 mm)
    # lung parenchyma: the mode of the values between air and soft tissue
    lung_like = hu[(hu > -950) & (hu < -700)]
    assert np.median(lung_like) == pytest.approx(-850, abs=20)
    # the nodule centre recorded in LPS matches the slice position / pixel geometry
    d0 = dss[k]
    x = float(d0.ImagePositionPatient[0]) + j * float(d0.PixelSpacing[1])
    assert nd["center_lps_mm"][0] == pytest.approx(x, abs=1e-3)
    assert nd["center_lps_mm"][2] == pytest.approx(float(d0.ImagePositionPatient[2]), abs=1e-3)
    rows = list(csv.DictReader(open(ct.root / "nodules.csv")))
    assert sum(len(it["nodules"]) for it in ct.items) == len(rows) >= 1


def test_ct_negatives_have_no_nodule_and_labels_balanced(ct):
    labels = [it["label"] for it in ct.items]
    assert labels.count(0) == labels.count(1) == 2
    assert all((it["label"] == 1) == bool(it["nodules"]) for it in ct.items)


def test_mri_volumes_and_masks(tmp_path):
    nib = pytest.importorskip("nibabel")
    out = ph.write_mri_phantoms(tmp_path, n_patients=1, studies_per_patient=2, shape=(16, 32, 32), seed=1)
    item = out.items[0]
    mask = np.asarray(nib.load(out.images_dir / item["mask"]).dataobj)
    flair = np.asarray(nib.load(out.images_dir / item["channels"][0]).dataobj)
    assert mask.shape == flair.shape == (32, 32, 16)
    assert set(np.unique(mask)) <= {0, 1, 2, 4} and (mask == 4).any() and (mask == 2).any()
    # oedema is FLAIR-bright relative to normal brain
    brain = (flair > 300) & (mask == 0)
    assert flair[mask == 2].mean() > flair[brain].mean() + 200
    assert list(csv.DictReader(open(out.root / "pairs.csv")))[0]["mask"] == item["mask"]


def test_deterministic_for_a_seed(tmp_path):
    a = ph.write_cxr_phantoms(tmp_path / "a", 2, 2, size=32, seed=7)
    b = ph.write_cxr_phantoms(tmp_path / "b", 2, 2, size=32, seed=7)
    c = ph.write_cxr_phantoms(tmp_path / "c", 2, 2, size=32, seed=8)
    assert _digest(a.root) == _digest(b.root)
    assert _digest(a.root) != _digest(c.root)
    d = ph.write_ct_phantoms(tmp_path / "d", 1, 1, size=32, n_slices=6, seed=7, positive_fraction=1.0)
    e = ph.write_ct_phantoms(tmp_path / "e", 1, 1, size=32, n_slices=6, seed=7, positive_fraction=1.0)
    assert _digest(d.root) == _digest(e.root)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_patients": 0}, "n_patients must be an integer >= 1"),
        ({"positive_fraction": 1.5}, r"positive_fraction must be in \[0, 1\]"),
        ({"transfer_syntaxes": ("jpeg-xl",)}, "transfer_syntaxes must be a non-empty subset"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    args = {"n_patients": 1, "studies_per_patient": 1, "size": 32}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ph.write_cxr_phantoms(tmp_path, **args)


def test_import_does_not_load_tensorflow():
    code = "import sys, medtf.synthetic as s; s.write_cxr_phantoms; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_data_tools_script(tmp_path):
    subprocess.run(
        [sys.executable, str(REPO / "data_tools" / "phantoms.py"), "cxr", "--out", str(tmp_path), "--patients", "2",
         "--studies", "1", "--size", "32", "--seed", "1"],
        check=True, cwd=REPO, capture_output=True,
    )
    assert len(list(csv.DictReader(open(tmp_path / "labels.csv")))) == 2


def test_cxr_phantoms_convert_losslessly(tmp_path):
    """tfrecord-convert reads every phantom (all transfer syntaxes, MONOCHROME1 inverted to display values)."""
    tf = pytest.importorskip("tensorflow")
    from medtf.records.convert import ConvertConfig, convert
    from medtf.records.schema import parse_example

    s = ph.write_cxr_phantoms(tmp_path / "ph", n_patients=4, studies_per_patient=2, size=32, seed=2)
    res = convert(ConvertConfig(keep_paths=True, inputs=(str(s.images_dir),), output=str(tmp_path / "rec"), labels=str(s.labels_csv),
                                progress=False))
    m = res.manifest
    assert m["counts"]["rejected_files"] == 0 and m["counts"]["examples"] == 8
    key_to_path = {f["key"]: f["path"] for f in m["files"]}
    index = {it["path"]: i for i, it in enumerate(s.items)}
    seen = 0
    for split in m["splits"].values():
        for shard in split["shards"]:
            for rec in tf.data.TFRecordDataset(str(tmp_path / "rec" / shard)):
                ex = parse_example(rec, m["image_dtype"])
                i = index[key_to_path[ex["source"].numpy().decode()]]
                expected, _ = ph.cxr_image(ph._rng(2, "cxr", i), 32, opacity=bool(s.items[i]["label"]))
                np.testing.assert_array_equal(ex["image"].numpy()[..., 0], expected)
                assert ex["label"].numpy().tolist() == [s.items[i]["label"]]
                seen += 1
    assert seen == 8


def test_medtf_data_phantoms_cli(tmp_path, capsys):
    from medtf.cli import main as cli

    assert cli.main(["data", "phantoms", "ct", "--out", str(tmp_path / "ct"), "--patients", "1", "--studies", "2",
                     "--size", "32", "--slices", "6", "--quiet"]) == 0
    assert len(list((tmp_path / "ct" / "dicom").rglob("*.dcm"))) == 12
    assert cli.main(["data", "phantoms", "cxr", "--out", str(tmp_path / "x"), "--patients", "0", "--quiet"]) == 2
    assert "n_patients must be an integer >= 1" in capsys.readouterr().err
