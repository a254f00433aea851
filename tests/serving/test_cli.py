"""``medtf serve`` usage errors (exit 2, one line, no traceback) and ``medtf predict --format seg|sr`` offline."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from . import _build
from .test_service import _ct_in_series_order, _files

pytestmark = pytest.mark.filterwarnings("ignore")


def _main(argv):
    from medtf.cli.main import main

    return main([str(a) for a in argv])


def test_serve_usage_errors_exit_2(artifacts, tmp_path, capsys):
    empty = tmp_path / "empty-token"
    empty.write_text("  \n")
    bare = tmp_path / "bare-run"
    bare.mkdir()
    (bare / "model.json").write_text((artifacts["cls"] / "model.json").read_text())
    cases = [
        ([tmp_path / "missing"], "no such file or folder"),
        ([bare], "medtf export"),
        ([tmp_path], "not a SavedModel folder"),
        ([artifacts["cls"], "--token-file", tmp_path / "nope"], "no such file"),
        ([artifacts["cls"], "--token-file", empty], "empty"),
        ([artifacts["cls"], artifacts["seg"], "--name", "one"], "--name must be given once per model"),
        ([artifacts["cls"], "--port", "0"], "--port"),
        ([artifacts["cls"], "--max-upload-mb", "0"], "--max-upload-mb"),
        ([artifacts["cls"], artifacts["cls_version"]], "two models are named 'cls'"),
    ]
    for args, message in cases:
        assert _main(["serve", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)


def test_predict_format_seg_and_sr_write_the_service_objects_offline(artifacts, tmp_path, monkeypatch):
    import highdicom as hd
    import pydicom
    import SimpleITK as sitk

    monkeypatch.setenv("MEDTF_PSEUDONYM_KEY", "0123456789abcdef0123456789abcdef")  # the same source keys per run
    # segmentation: one SEG per series, equal to the mask `medtf predict` writes as NIfTI
    assert _main(["predict", artifacts["seg"], artifacts["ct"], "--out", tmp_path / "t.json"]) == 0
    (row,) = json.loads((tmp_path / "t.json").read_text())
    mask = sitk.GetArrayFromImage(sitk.ReadImage(row["output"]))
    assert _main(["predict", artifacts["seg"], artifacts["ct"], "--format", "seg", "--out", tmp_path / "s.json"]) == 0
    (srow,) = json.loads((tmp_path / "s.json").read_text())
    assert srow["output"].endswith("_seg.dcm") and srow["labels_present"] == row["labels_present"]
    seg = hd.seg.segread(srow["output"])
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            for f in _ct_in_series_order(artifacts["ct"])]
    labels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    np.testing.assert_array_equal(np.asarray(labels), mask)

    # classifier: one SR per image, probabilities equal the table
    assert _main(["predict", artifacts["cls"], artifacts["cxr"], "--out", tmp_path / "c.csv"]) == 0
    with open(tmp_path / "c.csv", newline="") as f:
        table = {r["source"]: float(r["probability"]) for r in csv.DictReader(f)}
    out = tmp_path / "r.json"
    assert _main(["predict", artifacts["cls"], artifacts["cxr"], "--format", "sr", "--out", out,
                  "--masks-dir", tmp_path / "srs"]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == len(_files(artifacts["cxr"])) == len(list((tmp_path / "srs").glob("*_sr.dcm")))
    for r in rows:
        sr = hd.sr.srread(r["output"])
        (group,) = sr.content.get_image_measurement_groups()
        assert abs(float(group.get_measurements()[0].value) - table[r["source"]]) <= 1e-6
        assert abs(r["probability"] - table[r["source"]]) <= 1e-6


def test_predict_dicom_usage_errors_exit_2(artifacts, tmp_path, capsys):
    cases = [
        (["predict", artifacts["cls"], artifacts["cxr"], "--format", "seg", "--out", tmp_path / "a.csv"], "seg"),
        (["predict", artifacts["seg"], artifacts["ct"], "--format", "sr", "--out", tmp_path / "a.csv"], "sr"),
        (["predict", artifacts["cls"], "--study", "1.2.3", "--out", tmp_path / "a.csv"], "--dicomweb"),
        (["predict", artifacts["cls"], "--dicomweb", "http://127.0.0.1:9/dicom-web", "--out", tmp_path / "a.csv"],
         "--study"),
        (["predict", artifacts["cls"], "--out", tmp_path / "a.csv"], "input"),
    ]
    for argv, message in cases:
        assert _main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    # an unreachable PACS: the job fails (3) with one line
    assert _main(["predict", artifacts["cls"], "--dicomweb", "http://127.0.0.1:9/dicom-web", "--study", "1.2.3",
                  "--out", tmp_path / "a.csv"]) == 3
    err = capsys.readouterr().err
    assert "WADO-RS" in err and "Traceback" not in err


def test_predict_format_sr_with_no_readable_input_exits_3(artifacts, tmp_path, capsys):
    """--format seg|sr on local files follows the table's exit rule: nothing predicted → 3, with the reason."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.dcm").write_bytes(b"not a dicom file at all" * 20)
    assert _main(["predict", artifacts["cls"], str(bad), "--format", "sr", "--out", tmp_path / "r.json"]) == 3
    err = capsys.readouterr().err
    assert "no readable input" in err and "Traceback" not in err
