"""De-identification: planted PHI never reaches Images, meta, keys or errors; pseudonymizer keys."""

from __future__ import annotations

import dataclasses
import os
import pickle
import stat

import numpy as np
import pydicom
import pytest
from io_dicom_factory import make_slice
from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.sequence import Sequence

from medtf.io import ReadError, discover, read_unit
from medtf.io.deid import (
    ANNEX_E_KEYWORDS, SAFE_META_KEYS, Pseudonymizer, assert_deidentified, check_meta, deidentify_dataset, scrub,
)

PZ = Pseudonymizer(b"test-secret-0123456789")


def _planted_value(keyword: str, idx: int):
    """A distinctive value valid for the attribute's VR, or None when not a text VR."""
    vr = dictionary_VR(tag_for_keyword(keyword))
    return {
        "PN": f"Zyxphi{idx}^Qwerty",
        "LO": f"PHI-LO-{idx}-Zyx",
        "SH": f"PHISH{idx}ZYX",
        "LT": f"PHI long text {idx} Zyx",
        "ST": f"PHI short text {idx} Zyx",
        "UT": f"PHI unlimited {idx} Zyx",
        "UC": f"PHI UC {idx} Zyx",
        "CS": f"PHICS{idx}",
        "AE": f"PHIAE{idx}",
        "DA": f"1{idx % 10}{(idx * 7) % 100:02d}0{1 + idx % 9}1{idx % 10}",
        "TM": f"21{idx % 60:02d}17.{idx:04d}",
        "DT": f"19{idx % 100:02d}0203040506.{idx:06d}",
        "UI": f"1.2.826.0.1.3680043.10.777.{idx}",
        "AS": "097Y",
        "DS": f"{1234 + idx}.{5 + idx % 4}",
    }.get(vr)


def _plant(ds: Dataset) -> set[str]:
    """Put a distinctive value in every Annex E attribute and a private tag; return the values."""
    planted: set[str] = set()
    for idx, keyword in enumerate(ANNEX_E_KEYWORDS):
        if tag_for_keyword(keyword) >> 16 in (0x0000, 0x0002):  # command / file-meta groups: not in datasets
            continue
        vr = dictionary_VR(tag_for_keyword(keyword))
        if vr == "SQ":
            item = Dataset()
            item.CodeMeaning = f"PHI-seq-item-{idx}-Zyx"
            item.PersonName = f"Seqphi{idx}^Zyx"
            setattr(ds, keyword, Sequence([item]))
            planted |= {item.CodeMeaning, str(item.PersonName)}
            continue
        value = _planted_value(keyword, idx)
        if value is None:
            continue
        setattr(ds, keyword, value)
        planted.add(value)
    block = ds.private_block(0x0009, "ACME PHI CREATOR", create=True)
    block.add_new(0x10, "LO", "PRIVATE-PHI-Zyx-1")
    planted.add("PRIVATE-PHI-Zyx-1")
    return planted


def _planted_file(path, series_uid: str, z: float, seed: int):
    make_slice(path, z=z, seed=seed)
    ds = pydicom.dcmread(path)
    planted = _plant(ds)
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.888.{seed}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path)
    return planted | {series_uid, ds.SOPInstanceUID}


def _text_of(obj) -> str:
    if dataclasses.is_dataclass(obj):
        parts = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if not isinstance(value, np.ndarray):
                parts.append(repr(value))
        return " ".join(parts)
    return repr(obj)


def _assert_clean(text: str, planted: set[str]):
    hits = [v for v in planted if v in text]
    hits += [part for v in planted for part in v.split("^") if len(part) > 5 and part in text]
    assert not hits, f"PHI leaked: {sorted(set(hits))[:5]}"


def test_planted_phi_never_reaches_outputs(tmp_path):
    series_uid = "1.2.826.0.1.3680043.10.777.424242"
    planted = set()
    (tmp_path / "series").mkdir()
    for i in range(3):
        planted |= _planted_file(tmp_path / "series" / f"s{i}.dcm", series_uid, z=2.0 * i, seed=i)
    planted |= _planted_file(tmp_path / "single.dcm", "1.2.826.0.1.3680043.10.777.515151", z=0.0, seed=7)
    ds = pydicom.dcmread(tmp_path / "single.dcm")
    assert ds.PatientName and ds[0x0009, 0x1010].value == "PRIVATE-PHI-Zyx-1"  # really planted
    assert len(planted) > 150

    units, rejected = discover([tmp_path], pseudonymizer=PZ)
    assert rejected == []
    assert {u.kind for u in units} == {"dicom", "dicom_series"}
    for unit in units:
        _assert_clean(unit.key, planted)
        for image in read_unit(unit, pseudonymizer=PZ):
            _assert_clean(_text_of(image), planted)
            check_meta(image.meta)
            assert image.patient == PZ.patient(ds.PatientID)

    # errors must not echo header values either: corrupt the pixel data of a planted file
    ds.PixelData = ds.PixelData[:10]
    ds.save_as(tmp_path / "broken.dcm")
    unit = [u for u in discover([tmp_path / "broken.dcm"], pseudonymizer=PZ)[0]][0]
    with pytest.raises(ReadError) as exc:
        read_unit(unit, pseudonymizer=PZ)
    _assert_clean(exc.value.reason, planted)


def test_scrub_removes_header_values_from_library_messages():
    ds = Dataset()
    ds.PatientName = "Secret^Person"
    ds.InstitutionName = "St Elsewhere"
    msg = "Invalid value for VR DA: Secret^Person at St Elsewhere, 'whatever123'"
    out = scrub(msg, ds)
    assert "Secret" not in out and "Person" not in out and "Elsewhere" not in out and "whatever123" not in out


def test_deidentify_dataset_removes_annex_e_and_private(tmp_path):
    make_slice(tmp_path / "x.dcm")
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    _plant(ds)
    with pytest.raises(AssertionError, match="PatientName"):
        assert_deidentified(ds)
    clean = deidentify_dataset(ds)
    assert_deidentified(clean)
    assert "PatientName" in ds  # input untouched
    assert clean.Rows == ds.Rows and clean.PixelData == ds.PixelData


def test_annex_e_list_is_valid_and_covers_the_basics():
    unknown = [k for k in ANNEX_E_KEYWORDS if tag_for_keyword(k) is None]
    assert unknown == []
    for k in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
              "ReferringPhysicianName", "PatientAddress", "StudyInstanceUID", "SeriesInstanceUID",
              "SOPInstanceUID", "StudyDate", "ImageComments", "OperatorsName", "StationName"):
        assert k in ANNEX_E_KEYWORDS
    assert not SAFE_META_KEYS & set(ANNEX_E_KEYWORDS)


def test_check_meta_whitelist():
    assert check_meta({"Modality": "CT", "WindowCenter": (40.0, 400.0)}) == {"Modality": "CT", "WindowCenter": [40.0, 400.0]}
    with pytest.raises(ValueError, match="PatientName"):
        check_meta({"PatientName": "x"})
    with pytest.raises(ValueError, match="expected numbers/strings"):
        check_meta({"Modality": object()})


# -------------------------------------------------------------------------------------------- pseudonyms
def test_pseudonymizer_is_keyed_hmac():
    import hashlib
    import hmac

    secret = b"0123456789abcdef-site"
    pz = Pseudonymizer(secret)
    p = pz.patient("12345")
    assert p.startswith("P-") and len(p) == 18 and int(p[2:], 16) >= 0
    assert p == "P-" + hmac.new(secret, b"patient\x0012345", hashlib.sha256).hexdigest()[:16]
    assert pz.patient("12345") == p and pz.patient("12346") != p
    assert Pseudonymizer(b"another-secret-xxxxx").patient("12345") != p
    assert len(pz.token("1.2.3")) == 16 and pz.token("12345") != p[2:]
    assert "0123456789abcdef" not in repr(pz)
    with pytest.raises(TypeError):
        pickle.dumps(pz)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Pseudonymizer(b"short")


def test_pseudonymizer_default_env_and_key_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTF_PSEUDONYM_KEY", "00112233445566778899aabbccddeeff")
    assert Pseudonymizer.default().patient("x") == Pseudonymizer(bytes.fromhex("00112233445566778899aabbccddeeff")).patient("x")
    monkeypatch.setenv("MEDTF_PSEUDONYM_KEY", "a site passphrase that is long")
    assert Pseudonymizer.default().patient("x") == Pseudonymizer(b"a site passphrase that is long").patient("x")
    monkeypatch.delenv("MEDTF_PSEUDONYM_KEY")
    key_file = tmp_path / "cfg" / "pseudonym.key"
    monkeypatch.setenv("MEDTF_PSEUDONYM_KEY_FILE", str(key_file))
    first = Pseudonymizer.default()
    assert key_file.exists() and stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert Pseudonymizer.default().patient("x") == first.patient("x")  # stable across loads
    assert Pseudonymizer.from_key_file(key_file).patient("x") == first.patient("x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Pseudonymizer.from_key_file(tmp_path / "missing.key")
