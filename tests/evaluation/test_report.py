"""evaluate_predictions for every task + write_report (JSON, PNGs, one self-contained HTML)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from sklearn import metrics as skm

from medtf.evaluation.evaluate import evaluate_predictions
from medtf.evaluation.report import write_report


def _binary(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 2 * y - 1)))
    return y, p


def _png_ok(path):
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def _check_html(path, report_dir):
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    # self-contained: no external references, no scripts
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)
    assert "<script" not in text.lower()
    # every plot embedded once; a calibration warning shows the reliability diagram once more beside it
    warned = any("calibrated" in w for w in json.loads((report_dir / "report.json").read_text())["warnings"])
    assert text.count("data:image/png;base64,") == len(list(report_dir.glob("*.png"))) + int(warned)
    return text


def test_binary_threshold_from_validation_and_report(tmp_path):
    y, p = _binary(200, 0)
    yv, pv = _binary(150, 1)
    r = evaluate_predictions(y, p, "binary", y_val=yv, p_val=pv, threshold_method="sensitivity:0.9", n_boot=200,
                             class_names=["normal", "pneumonia"])
    assert r["threshold"]["source"] == "validation" and r["threshold"]["method"] == "sensitivity:0.9"
    from medtf.evaluation.metrics import select_threshold

    t = select_threshold(yv, pv, "target_sensitivity", target_sensitivity=0.9)
    assert r["threshold"]["value"] == t
    m = r["metrics"]
    np.testing.assert_allclose(m["auc"]["value"], skm.roc_auc_score(y, p), rtol=1e-12)
    assert m["auc"]["ci_low"] <= m["auc"]["value"] <= m["auc"]["ci_high"]
    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y, (p >= t).astype(int)))
    np.testing.assert_allclose(m["brier"], skm.brier_score_loss(y, p), rtol=1e-12)
    files = write_report(r, tmp_path, title="binary test")
    for k in ("roc", "pr", "confusion_matrix", "calibration"):
        assert _png_ok(files[k]), k
    html = _check_html(files["html"], tmp_path)
    assert "pneumonia" in html and "AUC" in html
    loaded = json.loads(files["json"].read_text())
    assert loaded["metrics"]["auc"]["value"] == pytest.approx(m["auc"]["value"])
    assert set(loaded["plots"]) == {"roc", "pr", "confusion_matrix", "calibration"}
    # report.json alone regenerates the report
    again = write_report(loaded, tmp_path / "again")
    assert _png_ok(again["roc"]) and again["html"].exists()


def test_binary_given_threshold_and_default():
    y, p = _binary(50, 3)
    assert evaluate_predictions(y, p, "binary", threshold=0.3, n_boot=10)["threshold"]["value"] == 0.3
    r = evaluate_predictions(y, p.reshape(-1, 1), "binary", n_boot=10)
    assert r["threshold"] == {"value": 0.5, "method": "default", "source": "default"}


def test_multiclass_and_ordinal_reports(tmp_path):
    rng = np.random.default_rng(0)
    n, k = 150, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    r = evaluate_predictions(np.eye(k)[y], p, "multiclass", n_boot=100)  # one-hot labels accepted
    np.testing.assert_allclose(r["metrics"]["auc"]["value"], skm.roc_auc_score(y, p, multi_class="ovr"), rtol=1e-12)
    files = write_report(r, tmp_path / "mc")
    assert _png_ok(files["confusion_matrix"]) and _png_ok(files["roc"])
    _check_html(files["html"], tmp_path / "mc")

    grades = rng.integers(0, 5, n)
    cum = 1 / (1 + np.exp(-(grades[:, None] - np.arange(4)[None, :] - 0.5 + rng.normal(0, 0.7, (n, 4)))))
    cum_targets = (grades[:, None] > np.arange(4)).astype(np.float32)  # the pipeline's ordinal encoding
    r1 = evaluate_predictions(grades, cum, "ordinal", n_boot=50)
    r2 = evaluate_predictions(cum_targets, cum, "ordinal", n_boot=50)
    assert r1["metrics"]["kappa_quadratic"] == r2["metrics"]["kappa_quadratic"]
    pred = (cum >= 0.5).sum(1)
    np.testing.assert_allclose(r1["metrics"]["kappa_quadratic"],
                               skm.cohen_kappa_score(grades, pred, weights="quadratic", labels=range(5)), rtol=1e-12)
    assert r1["class_names"] == ["0", "1", "2", "3", "4"]
    files = write_report(r1, tmp_path / "ord")
    assert "kappa" in files["html"].read_text()
    with pytest.raises(ValueError, match="cumulative"):
        evaluate_predictions(grades, cum[:, :3], "ordinal", class_names=list("abcde"))


def test_multilabel_per_label_thresholds_from_validation(tmp_path):
    rng = np.random.default_rng(4)
    n, L = 160, 3
    y = rng.integers(0, 2, (n, L))
    p = 1 / (1 + np.exp(-(rng.normal(size=(n, L)) + 1.5 * (2 * y - 1))))
    yv = rng.integers(0, 2, (n, L))
    pv = 1 / (1 + np.exp(-(rng.normal(size=(n, L)) + 1.5 * (2 * yv - 1))))
    r = evaluate_predictions(y, p, "multilabel", y_val=yv, p_val=pv, n_boot=50, class_names=["a", "b", "c"])
    from medtf.evaluation.metrics import select_threshold

    assert r["threshold"]["per_label"] == [select_threshold(yv[:, j], pv[:, j]) for j in range(L)]
    np.testing.assert_allclose([m["auc"]["value"] for m in r["metrics"]["per_label"]],
                               skm.roc_auc_score(y, p, average=None), rtol=1e-12)
    files = write_report(r, tmp_path)
    assert _png_ok(files["roc"]) and _png_ok(files["confusion_matrix"])


def test_segmentation_report_with_spacing(tmp_path):
    rng = np.random.default_rng(0)
    trues, probs = [], []
    for i in range(3):
        t = np.zeros((6, 20, 20), np.uint8)
        t[2:5, 4 + i:12 + i, 5:14] = 1
        t[1:3, 14:18, 14:18] = 2
        logits = rng.normal(0, 0.3, t.shape + (3,)) + 3 * np.eye(3)[t]
        logits[..., 2] -= 6 * (i == 2)  # class 2 never predicted on case 3
        trues.append(t)
        probs.append(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
    r = evaluate_predictions(trues, probs, "segmentation", spacing=[(3.0, 0.8, 0.8)] * 3,
                             class_names=["background", "liver", "tumour"])
    assert set(r["metrics"]["per_class"]) == {"liver", "tumour"}
    from medtf.evaluation.metrics import dice, hd95

    pred0 = probs[0].argmax(-1)
    assert r["per_case"][0]["metrics"][1]["dice"] == pytest.approx(dice(pred0 == 1, trues[0] == 1))
    assert r["per_case"][0]["metrics"][1]["hd95"] == pytest.approx(hd95(pred0 == 1, trues[0] == 1, (3.0, 0.8, 0.8)))
    assert r["per_case"][2]["metrics"][2]["dice"] == 0.0
    assert r["metrics"]["per_class"]["tumour"]["hd95"]["n_undefined"] == 1
    files = write_report(r, tmp_path)
    assert _png_ok(files["per_case_dice"])
    html = _check_html(files["html"], tmp_path)
    assert "case_0003" in html and "HD95" in html


def test_restoration_report(tmp_path):
    rng = np.random.default_rng(0)
    clean = rng.random((4, 24, 24, 1)).astype(np.float32)
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    r = evaluate_predictions(clean, noisy, "restoration")
    mse = ((clean - noisy) ** 2).reshape(4, -1).mean(1)
    np.testing.assert_allclose(r["metrics"]["psnr"], 10 * np.log10(1 / mse), rtol=1e-4)
    np.testing.assert_allclose(r["metrics"]["ssim"], [_ssim_numpy(c[..., 0], q[..., 0]) for c, q in zip(clean, noisy)],
                               rtol=1e-4)
    assert r["metrics"]["ssim_mean"] < 1.0
    vol = evaluate_predictions(clean[None, ..., :], noisy[None], "restoration")  # (1, D, H, W, 1)
    np.testing.assert_allclose(vol["metrics"]["psnr"][0], 10 * np.log10(1 / mse.mean()), rtol=1e-4)
    np.testing.assert_allclose(vol["metrics"]["ssim"][0], np.mean(r["metrics"]["ssim"]), rtol=1e-5)
    files = write_report(r, tmp_path)
    assert _png_ok(files["restoration"])


def _ssim_numpy(x, y, max_val=1.0):
    """Wang et al. SSIM with an 11x11 Gaussian window (sigma 1.5), valid region, as tf.image.ssim."""
    from scipy.signal import correlate2d

    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    f = lambda a: correlate2d(a.astype(np.float64), w, mode="valid")  # noqa: E731
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean()


def test_bad_task():
    with pytest.raises(ValueError, match="task"):
        evaluate_predictions([0, 1], [0.1, 0.2], "regression")
