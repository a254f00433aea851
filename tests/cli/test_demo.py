"""`medtf demo --quick` end to end: phantoms → records → train → evaluate → int8 → edge on one DICOM."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from medtf.cli import main as cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    code = cli.main(["demo", "--quick", "--out", str(out)])
    assert code == 0
    return out, json.loads((out / "demo_summary.json").read_text())


def test_demo_writes_every_artifact(demo):
    out, s = demo
    assert pathlib.Path(s["report"]).is_file() and s["report"].endswith(".html")
    manifest = json.loads((out / "records" / "manifest.json").read_text())
    assert manifest["counts"]["rejected_files"] == 0
    assert sum(v["examples"] for v in manifest["splits"].values()) == s["phantoms"]["files"] == 80
    for name in ("model.keras", "model.json", "history.csv", "config.yaml"):
        assert (out / "runs" / "demo" / name).is_file()
    assert (out / "export" / "model-int8.tflite").is_file()
    parity = json.loads((out / "export" / "parity.json").read_text())
    assert parity["examples"] == s["test"]["n"] and "tflite-int8" in parity["exports"]
    assert set(s["timings_s"]) >= {"phantoms_s", "convert_s", "train_s", "evaluate_s", "export_s", "edge_s", "total_s"}


def test_demo_patients_never_span_splits(demo):
    out, _ = demo
    import tensorflow as tf

    from medtf.records.reader import load

    patients = {}
    for split in ("train", "val", "test"):
        for e in load(out / "records", split):
            patients.setdefault(e["patient"].numpy().decode(), set()).add(split)
    assert len(patients) == 40 and all(len(v) == 1 for v in patients.values())
    del tf


def test_demo_report_matches_sklearn(demo):
    """The report's test AUC equals sklearn's on the run's own predictions file."""
    out, s = demo
    import csv

    from sklearn.metrics import roc_auc_score

    rows = list(csv.DictReader(open(out / "report" / "predictions.csv")))
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["probabilities"].split()[0]) for r in rows])
    assert len(rows) == s["test"]["n"]
    assert s["test"]["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)


def test_demo_edge_prediction_matches_keras(demo):
    """The int8 edge runtime's probability for the DICOM file is close to the Keras model's on the same pixels."""
    out, s = demo
    import pydicom

    from medtf.preprocess import Preprocessing
    from medtf.preprocess import apply_intensity as apply_intensity_numpy
    from medtf.preprocess import resize as resize_numpy
    from medtf.training.run import RunInfo, load_model

    e = s["edge_prediction"]
    ds = pydicom.dcmread(out / "phantoms" / "dicom" / e["file"])
    pixels = ds.pixel_array.astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        pixels = 4095 - pixels
    info = RunInfo.load(out / "runs" / "demo")
    spec: Preprocessing = info.preprocessing
    x = apply_intensity_numpy(pixels[..., None], spec)
    x = resize_numpy(x, spec.size)
    p_keras = float(np.asarray(load_model(out / "runs" / "demo")(x[None], training=False)).ravel()[0])
    assert e["probability"] == pytest.approx(p_keras, abs=0.05)
    assert e["prediction"] in (0, 1) and e["truth"] in (0, 1)
    assert abs(s["int8_parity"]["delta_auc"]) <= 1.0 and 0.0 <= s["int8_parity"]["agreement"] <= 1.0


def test_demo_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--out", str(tmp_path), "--patients", "3"]) == 2
    assert "--patients must be >= 10" in capsys.readouterr().err
