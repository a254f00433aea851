"""Restoration on records with paired targets: the pipeline's (x, y) are the stored input and target with
one geometric draw for both, ``medtf train`` infers the task from the manifest, and ``medtf evaluate``
reports the model, the input and the classical baseline (non-local means chosen on validation; bicubic for
super-resolution)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from medtf.cli.tfrecord_convert import main as convert_main

pytestmark = pytest.mark.filterwarnings("ignore")


def _phantom(rng, size):
    """A smooth image in [0.1, 0.9] (a few Gaussian blobs): something non-local means and a U-Net can denoise."""
    yy, xx = np.mgrid[:size, :size] / size
    img = np.full((size, size), 0.1)
    for _ in range(4):
        cy, cx, r, a = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.2), rng.uniform(0.2, 0.4)
        img += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return np.clip(img, 0.0, 0.9)


def _pairs(root, n=10, size=32, k=1, noise=0.06, seed=0):
    """16-bit PNG pairs: noisy (or k-times smaller) inputs in low/, clean targets in full/, and a splits CSV."""
    rng = np.random.default_rng(seed)
    (root / "low").mkdir(parents=True)
    (root / "full").mkdir()
    rows = ["path,split"]
    for i in range(n):
        clean = _phantom(rng, size * k)
        if k == 1:
            low = np.clip(clean + rng.normal(0, noise, clean.shape), 0, 1)
        else:  # box-average k x k blocks: the low-resolution image covering the same extent
            low = clean.reshape(size, k, size, k).mean(axis=(1, 3))
        PILImage.fromarray(np.round(low * 65535).astype(np.uint16)).save(root / "low" / f"s{i:02d}.png")
        PILImage.fromarray(np.round(clean * 65535).astype(np.uint16)).save(root / "full" / f"s{i:02d}.png")
        rows.append(f"s{i:02d}.png,{'train' if i < n - 4 else 'val' if i < n - 2 else 'test'}")
    (root / "splits.csv").write_text("\n".join(rows) + "\n")
    return root


def _convert(root, out) -> dict:
    code = convert_main([str(root / "low"), "--targets", str(root / "full"), "--labels", str(root / "splits.csv"),
                         "--split", "input", "--window", "65536,32768", "-o", str(out), "--no-progress"])
    assert code == 0
    return json.loads((out / "manifest.json").read_text())


def test_pipeline_pairs_input_and_target_with_joint_geometry(tmp_path):
    from medtf.data import DataConfig, build_dataset
    from medtf.data.config import AugmentConfig, OpConfig, PatchConfig
    from medtf.records.reader import load

    rec = tmp_path / "rec"
    _convert(_pairs(tmp_path / "d", n=6, k=2, size=16), rec)
    stored = [(e["image"], e["target"]) for e in load(rec, "train").as_numpy_iterator()]
    # evaluation: x = the stored input resized (linear, half-pixel) to the target grid, y = the stored target
    import tensorflow as tf

    cfg = DataConfig(batch_size=2, label_mode="image")
    (x, y), = build_dataset(rec, "train", cfg, training=False).take(1).as_numpy_iterator()
    ref = tf.image.resize(stored[0][0][None], (32, 32), method="bilinear", antialias=False).numpy()[0]
    np.testing.assert_allclose(x[0], ref, atol=1e-6)
    np.testing.assert_array_equal(y[0], stored[0][1])
    # training: patches cut at the same place and one flip draw for both; no degradation without intensity ops
    aug = AugmentConfig(ops=(OpConfig("flip", 0.5), OpConfig("rot90", 0.5)))
    cfg = DataConfig(batch_size=4, label_mode="image", augment=aug, patch=PatchConfig(size=(8, 8), samples_per_volume=3))
    ups = [tf.image.resize(a[None], (32, 32), method="bilinear", antialias=False).numpy()[0] for a, _ in stored]
    from numpy.lib.stride_tricks import sliding_window_view

    for xb, yb in build_dataset(rec, "train", cfg, training=True, seed=3).take(2).as_numpy_iterator():
        for xp, yp in zip(xb, yb):
            # the pair is one window of a stored (input, target) under one dihedral transform, for both
            found = 0
            for up, (_, t) in zip(ups, stored):
                for kk in range(4):
                    for flip in (False, True):
                        a, b = np.rot90(up, kk), np.rot90(t, kk)
                        a, b = (a[:, ::-1], b[:, ::-1]) if flip else (a, b)
                        wa = sliding_window_view(a, (8, 8, 1))[..., 0, :, :, :]
                        wb = sliding_window_view(b, (8, 8, 1))[..., 0, :, :, :]
                        hit = (np.abs(wb - yp).max(axis=(-3, -2, -1)) < 1e-6) & (np.abs(wa - xp).max(axis=(-3, -2, -1)) < 1e-5)
                        found += int(hit.any())
            assert found >= 1


def test_train_and_evaluate_denoising_pairs_reports_three_rows(tmp_path):
    from medtf.evaluation.evaluate import evaluate_run
    from medtf.training.config import TrainConfig
    from medtf.training.run import RunInfo
    from medtf.training.trainer import train

    rec = tmp_path / "rec"
    m = _convert(_pairs(tmp_path / "d", n=10), rec)
    assert m["target_scale"] == [1, 1] and m["splits"]["val"]["examples"] == 2
    cfg = TrainConfig.from_dict({
        "records": str(rec), "output_dir": str(tmp_path / "runs"), "run_name": "den",
        "model": {"name": "restoration_unet", "kwargs": {"input_shape": [None, None, 1], "depth": 2,
                                                         "base_filters": 4}},
        "data": {"batch_size": 4, "patch": {"size": [16, 16], "samples_per_volume": 2}},
        "loss": {"name": "l1_ssim", "kwargs": {"filter_size": 7}}, "epochs": 1, "tensorboard": False, "verbose": 0,
    })
    run = train(cfg)
    info = RunInfo.load(run)
    assert info.task == "restoration" and info.label_mode == "image"  # inferred from the manifest's targets
    rep = evaluate_run(run, "test", progress=False)
    rows = rep["metrics"]["comparison"]
    assert [r["method"] for r in rows] == ["input", "nlm", "model"]
    assert rows[1]["h_split"] == "val" and rows[1]["h"] in (800, 1200, 1600, 2000, 2600, 3200, 4000)
    # non-local means must clean the simulated noise; the rows are the PSNR of each against the stored targets
    assert rows[1]["psnr_mean"] > rows[0]["psnr_mean"] + 3
    from medtf.records.reader import load

    tgt = [e["target"] for e in load(rec, "test").as_numpy_iterator()]
    inp = [e["image"] for e in load(rec, "test").as_numpy_iterator()]
    ref = [10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)) for a, b in zip(tgt, inp)]
    np.testing.assert_allclose(rows[0]["psnr"], ref, rtol=1e-4)
    assert rep["metrics"]["psnr"] == rows[2]["psnr"] and len(rep["per_case"]) == 2
    saved = json.loads((run / "eval-test" / "report.json").read_text())
    assert [r["method"] for r in saved["metrics"]["comparison"]] == ["input", "nlm", "model"]
    html = (run / "eval-test" / "report.html").read_text()
    assert "input (identity)" in html and "OpenCV non-local means" in html and "model (restoration_unet)" in html


def test_evaluate_super_resolution_pairs_against_bicubic(tmp_path):
    import cv2

    from medtf.evaluation.evaluate import evaluate_run
    from medtf.records.reader import load
    from medtf.training.config import TrainConfig
    from medtf.training.trainer import train

    rec = tmp_path / "rec"
    m = _convert(_pairs(tmp_path / "d", n=8, size=16, k=2), rec)
    assert m["target_scale"] == [2, 2]
    cfg = TrainConfig.from_dict({
        "records": str(rec), "output_dir": str(tmp_path / "runs"), "run_name": "sr",
        "model": {"name": "restoration_unet", "kwargs": {"input_shape": [None, None, 1], "depth": 2,
                                                         "base_filters": 4}},
        "data": {"batch_size": 2, "patch": {"size": [16, 16]}}, "loss": {"name": "l1_ssim", "kwargs": {"filter_size": 7}}, "epochs": 1,
        "tensorboard": False, "verbose": 0,
    })
    run = train(cfg)
    rep = evaluate_run(run, "test", progress=False)
    rows = rep["metrics"]["comparison"]
    assert [r["method"] for r in rows] == ["input", "bicubic", "model"]
    assert rows[0]["label"] == "input resized (linear) to the target grid"
    recs = list(load(rec, "test").as_numpy_iterator())
    bic = [cv2.resize(e["image"][..., 0], (32, 32), interpolation=cv2.INTER_CUBIC) for e in recs]
    ref = [10 * np.log10(1.0 / np.mean((e["target"][..., 0].astype(np.float64) - b) ** 2)) for e, b in zip(recs, bic)]
    np.testing.assert_allclose(rows[1]["psnr"], ref, rtol=1e-4)
    # medtf predict on a raw low-resolution file: the input goes onto the target grid first (as in training),
    # the written image is k times larger with spacing / k; values equal the model on the resized, windowed input
    import SimpleITK as sitk

    from medtf.preprocess import apply_chain, resize
    from medtf.training.predict import predict_dense_model_space, predict_inputs
    from medtf.training.run import RunInfo, load_model

    src = tmp_path / "d" / "low" / "s07.png"
    rows, rejected = predict_inputs(run, [str(src)], masks_dir=tmp_path / "pred", mask_format="nifti", progress=False)
    assert not rejected and rows[0]["shape"] == [32, 32]
    out = sitk.ReadImage(rows[0]["output"])
    assert out.GetSpacing() == pytest.approx((0.5, 0.5))
    raw = np.asarray(PILImage.open(src)).astype(np.float32)[..., None]
    info = RunInfo.load(run)
    x = apply_chain(resize(raw, (32, 32)), info.chain)
    # the model window is the training patch (16 px): predict slides it over the 32-px resized input
    ref = predict_dense_model_space(load_model(run), x, tuple(info.input_shape[:-1]))[..., 0]
    np.testing.assert_allclose(sitk.GetArrayFromImage(out), ref, atol=1e-5)
