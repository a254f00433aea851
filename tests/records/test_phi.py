"""PS3.15 Annex E: plant a distinctive value in every attribute of the basic profile and in a private
tag, convert through the command line, and byte-search every output file and the captured output."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

import records_dicom_factory as fac
from medtf.io.deid import ANNEX_E_KEYWORDS

_SKIP_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "US", "SS", "UL", "SL", "FL", "FD", "AT", "UV", "SV"}
# attributes the files need structurally (kept, but made distinctive too where possible)
_STRUCTURAL = {"MediaStorageSOPInstanceUID", "DataSetTrailingPadding"}


def _marker_value(i: int, vr: str):
    if vr == "DA":
        return f"1{i:03d}0{1 + i % 9}1{i % 9}"
    if vr == "TM":
        return f"1{i % 10}{i % 6}{i % 10}{i % 6}{i % 10}.{700000 + i}"
    if vr == "DT":
        return f"1{i:03d}0{1 + i % 9}1{i % 9}1234{i:02d}.5{i:05d}"
    if vr == "UI":
        return f"1.2.826.0.1.3680043.99.{900000 + i}.{i}"
    if vr == "AS":
        return f"{100 + i % 900:03d}Y"[-4:]
    if vr in ("DS",):
        return f"{i}.987{i:03d}"
    if vr == "IS":
        return str(918273 + i)
    if vr == "CS":
        return f"PHICS{i:03d}Q"
    if vr == "AE":
        return f"PHIAE{i:03d}Q"
    return f"PHIMARK{i:03d}Z"


def _plant(ds: Dataset, start: int) -> list[str]:
    """Set every Annex E keyword on ``ds``; returns the planted strings to search for."""
    markers = []
    for j, kw in enumerate(ANNEX_E_KEYWORDS):
        if kw in _STRUCTURAL or kw in ("SeriesInstanceUID", "SOPInstanceUID"):
            continue  # those are set per file below (also distinctive)
        tag = tag_for_keyword(kw)
        if tag is None or (tag >> 16) in (0x0000, 0x0002):
            continue  # command-set / file-meta elements cannot live in a stored dataset
        vr = dictionary_VR(tag)
        i = start + j
        if vr == "SQ":
            item = Dataset()
            item.CodeMeaning = f"PHISEQ{i:03d}Z"
            item.PersonName = f"PHISEQPN{i:03d}Z"
            setattr(ds, kw, [item])
            markers += [item.CodeMeaning, str(item.PersonName)]
            continue
        if vr.split(" or ")[0] in _SKIP_VRS:
            continue
        value = _marker_value(i, vr.split(" or ")[0])
        setattr(ds, kw, value)
        markers.append(value)
    ds.add_new(0x00110010, "LO", "MEDTF PRIVATE CREATOR")
    ds.add_new(0x00111001, "LO", f"PRIVATEPHI{start:03d}Z")
    markers.append(f"PRIVATEPHI{start:03d}Z")
    return markers


def test_no_phi_value_in_any_output_byte(tmp_path):
    inp = tmp_path / "in"
    markers: list[str] = []
    # a 3-slice series (one volume)
    series_uid = "1.2.826.0.1.3680043.99.777.1"
    for z in range(3):
        ds = fac.ct_slice(np.full((8, 8), 100 * z, np.uint16), patient_id="PHIPATIENTID01", series_uid=series_uid,
                          study_uid="1.2.826.0.1.3680043.99.777.2", z=2.0 * z)
        markers += _plant(ds, 0)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.99.778.{z}"
        ds.PatientID, ds.PatientName = "PHIPATIENTID01", "PHISURNAME^PHIGIVEN"
        fac.save(ds, inp / "series" / f"s{z}.dcm")
    markers += [series_uid, "1.2.826.0.1.3680043.99.778.0", "PHIPATIENTID01", "PHISURNAME", "PHIGIVEN"]
    # a standalone image, a file that fails to decode, and one without pixels, all full of PHI
    for k, (name, breakage) in enumerate((("single.dcm", None), ("broken.dcm", "truncate"), ("nopix.dcm", "nopixels"))):
        ds = fac.ct_slice(np.arange(64, dtype=np.uint16).reshape(8, 8), patient_id="PHIPATIENTID02",
                          series_uid=f"1.2.826.0.1.3680043.99.779.{k}", z=0.0)
        markers += _plant(ds, 500)
        ds.PatientID = "PHIPATIENTID02"
        if breakage == "nopixels":
            del ds.PixelData
        path = fac.save(ds, inp / name)
        if breakage == "truncate":
            path.write_bytes(path.read_bytes()[:-100])
    markers += ["PHIPATIENTID02"]
    assert len(set(markers)) > 150
    env = dict(os.environ, MEDTF_PSEUDONYM_KEY="00112233445566778899aabbccddeeff", MEDTF_DEBUG="")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "medtf.cli.tfrecord_convert", str(inp), "--output", str(out), "--workers", "2",
         "--keep-work", "--split", "train=1.0", "--mode", "slice"],
        env=env, capture_output=True,
    )
    assert proc.returncode == 1, proc.stderr.decode()[-2000:]
    blobs = {"stdout": proc.stdout, "stderr": proc.stderr}
    for p in out.rglob("*"):
        if p.is_file():
            blobs[str(p.relative_to(out))] = p.read_bytes()
    assert any(k.endswith(".tfrecord") for k in blobs) and "manifest.json" in blobs
    leaks = [(m, name) for m in set(markers) for name, b in blobs.items() if m.encode() in b]
    assert not leaks, leaks[:10]
    # the good inputs did convert (the test is not vacuous)
    import json

    manifest = json.loads(blobs["manifest.json"])
    from medtf.io.deid import Pseudonymizer

    name = Pseudonymizer(env["MEDTF_PSEUDONYM_KEY"]).source  # file names are pseudonymous too
    converted = {f["path"] for f in manifest["files"] if f["outcome"] == "converted"}
    assert {name(p) for p in ("series/s0.dcm", "series/s1.dcm", "series/s2.dcm", "single.dcm")} <= converted
    assert {f["path"] for f in manifest["files"] if f["outcome"] == "rejected"} >= {name("nopix.dcm")}
