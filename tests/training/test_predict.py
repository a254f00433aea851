"""``medtf predict``: stored preprocessing + model on files, CSV/JSON out, masks for segmentation."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest

from training_helpers import make_records, tiny_config_dict
from medtf.cli.main import main
from medtf.preprocess import Preprocessing
from medtf.training.config import TrainConfig
from medtf.training.run import RunInfo

pytestmark = pytest.mark.filterwarnings("ignore")


def test_train_then_predict_png_folder(tmp_path):
    import cv2

    from medtf.training.run import load_model
    from medtf.training.trainer import train

    records = make_records(tmp_path / "records", n_train=32, n_val=16, n_test=0)
    run = train(TrainConfig.from_dict(tiny_config_dict(records, tmp_path / "runs", epochs=1)))
    info = RunInfo.load(run)
    assert info.task == "binary" and info.class_names == ("other", "top_left")
    assert info.threshold is not None and 0.0 <= info.threshold <= 1.0
    assert info.input_shape == (16, 16, 1) and info.preprocessing.scale == 255.0
    for name in ("config.yaml", "model.keras", "history.csv"):
        assert (run / name).exists()

    rng = np.random.default_rng(3)
    imgs = {}
    (tmp_path / "in").mkdir()
    for i in range(4):
        a = rng.integers(0, 255, (16, 16), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / "in" / f"img{i}.png"), a)
        imgs[f"img{i}.png"] = a
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    out = tmp_path / "pred.csv"
    rc = main(["predict", str(run), str(tmp_path / "in"), "--out", str(out)])
    assert rc == 1  # notes.txt rejected, the images predicted
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and all(r["source"].startswith("F-") and "path" not in r for r in rows)
    assert "img0" not in out.read_text()  # file names are identifiers: only pseudonyms by default
    rc = main(["predict", str(run), str(tmp_path / "in"), "--out", str(out), "--show-paths"])
    rows = list(csv.DictReader(out.open()))
    model = load_model(run)
    for r in rows:
        a = imgs[pathlib.Path(r["path"]).name].astype(np.float32)[None, ..., None] / 255.0  # independent preprocessing
        p = float(np.asarray(model(a))[0, 0])
        assert float(r["probability"]) == pytest.approx(p, abs=1e-6)
        assert int(r["prediction"]) == int(p >= info.threshold)
        assert r["label"] == info.class_names[int(r["prediction"])]
    js = tmp_path / "pred.json"
    assert main(["predict", str(run), *(str(tmp_path / "in" / k) for k in imgs), "--out", str(js)]) == 0
    assert len(json.loads(js.read_text())) == 4
    assert main(["predict", str(tmp_path), str(tmp_path / "in"), "--out", str(out)]) == 2  # not a run folder


def test_predict_segmentation_volume_by_sliding_window(tmp_path):
    import keras
    import nibabel as nib

    # a fully convolutional 3D "model": 1x1x1 conv + softmax with fixed weights → output at any position
    inp = keras.Input((8, 8, 8, 1))
    conv = keras.layers.Conv3D(2, 1, activation="softmax", name="predictions")
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.array([[[[[-4.0, 4.0]]]]], np.float32), np.array([2.0, -2.0], np.float32)])
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    RunInfo(name="unet", task="segmentation", class_names=["bg", "fg"], input_shape=(8, 8, 8, 1), spatial_dims=3,
            preprocessing=Preprocessing(intensity="range", value_range=(0.0, 100.0))).save(run)
    vol = np.random.default_rng(0).uniform(0, 100, (20, 13, 11)).astype(np.float32)  # (x, y, z) on disk
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "case.nii.gz"))
    out = tmp_path / "pred.json"
    rc = main(["predict", str(run), str(tmp_path / "case.nii.gz"), "--out", str(out), "--masks-dir", str(tmp_path / "m")])
    assert rc == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 1
    mask = nib.load(rows[0]["output"])
    np.testing.assert_allclose(np.abs(np.diag(mask.affine))[:3], [0.7, 0.8, 2.5], rtol=1e-5)
    expected = (vol / 100.0 * 8.0 - 4.0 > 0).astype(np.uint8)  # logit difference 8x - 4 > 0 ⇔ class 1
    got = np.asarray(mask.dataobj)
    assert got.shape == vol.shape
    np.testing.assert_array_equal(got, expected)
