"""Parity metrics against sklearn / hand computation, gates and the report table."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medtf.export import litert, parity

from ._helpers import tiny_classifier


def test_binary_metric_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)[:, None]
    m = parity.metric("binary", y[:, None], p, threshold=0.4)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p[:, 0]), abs=1e-12)
    assert m["accuracy"] == pytest.approx(np.mean((p[:, 0] >= 0.4) == y))


def test_multiclass_and_ordinal_metric():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + np.eye(4)[y] * 1.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ref = roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert parity.metric("multiclass", y, p)["auc"] == pytest.approx(ref, abs=1e-12)
    assert parity.metric("multiclass", np.eye(4)[y], p)["auc"] == pytest.approx(ref, abs=1e-12)
    cum = rng.random((300, 3))
    targets = (y[:, None] > np.arange(3)).astype(int)
    ref_ord = np.mean([roc_auc_score(targets[:, k], cum[:, k]) for k in range(3)])
    assert parity.metric("ordinal", y, cum)["auc"] == pytest.approx(ref_ord, abs=1e-12)


def test_dice():
    y = np.zeros((2, 8, 8), int)
    y[:, 2:6, 2:6] = 1
    probs = np.zeros((2, 8, 8, 2))
    probs[..., 0] = 1
    probs[:, 2:6, 2:4, 1] = 2  # predicts half the square
    # |A∩B| = 2*8 = 16 voxels, |A| = 16, |B| = 32 → 2*16/48
    assert parity.dice(y, probs) == pytest.approx(2 * 16 / 48)


def test_parse_gates():
    g = parity.parse_gates("int8=0.02,fp16=0.0005")
    assert g["tflite-int8"] == 0.02 and g["tflite-fp16"] == 0.0005 and g["tflite-fp32"] == 0.001
    with pytest.raises(ValueError, match="int8=0.01"):
        parity.parse_gates("int8:0.1")


def test_report_and_gate(tmp_path):
    model = tiny_classifier()
    rng = np.random.default_rng(0)
    x = rng.random((60, 32, 32, 1), dtype=np.float32)
    y = (model.predict(x, verbose=0)[:, 0] > np.median(model.predict(x, verbose=0))).astype(int)
    paths = {}
    for fmt in ("tflite-fp32", "tflite-int8"):
        paths[fmt] = tmp_path / f"{fmt}.tflite"
        litert.export_tflite(model, paths[fmt], fmt, calibration=rng.random((200, 32, 32, 1), dtype=np.float32),
                             task="binary")
    rep = parity.parity_report(model, paths, x, y, task="binary", runs=50, progress=False)
    fp32 = rep["exports"]["tflite-fp32"]
    assert fp32["max_abs_dprob"] < 1e-5 and fp32["agreement"] == 1.0 and abs(fp32["delta"]) < 1e-6
    assert rep["reference"]["auc"] == pytest.approx(1.0)
    assert rep["exports"]["tflite-int8"]["latency_ms"] > 0
    assert rep["passed"] is (rep["exports"]["tflite-int8"]["delta"] <= 0.01)
    strict = parity.parity_report(model, {"tflite-int8": paths["tflite-int8"]}, x, y, task="binary", runs=50,
                                  gates={"tflite-int8": -1.0}, progress=False)
    assert strict["passed"] is False and strict["failed"] == ["tflite-int8"]
    table = parity.format_table(rep)
    assert "tflite-int8" in table and "keras" in table
    parity.write_report(rep, tmp_path / "parity.json")
    assert (tmp_path / "parity.json").is_file()
