"""evaluate_run / ``medtf evaluate`` / ``medtf explain`` on tiny hand-built run folders.

References are computed independently here: preprocessing with the NumPy implementation in
``medtf.preprocess`` and predictions with ``model.predict``; metrics then go through the already
reference-tested functions.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from medtf.preprocess import Preprocessing  # noqa: E402
from medtf.preprocess import apply_intensity as apply_intensity_numpy  # noqa: E402
from medtf.evaluation import metrics as M  # noqa: E402
from medtf.evaluation.evaluate import evaluate_run  # noqa: E402


def _binary_examples(n, seed, size=16):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = int(rng.integers(0, 2))
        img = np.clip(rng.normal(100 + 25 * y, 40, (size, size, 1)), 0, 255).astype(np.uint8)
        img[: size // 2, : size // 4] = 200 * y  # asymmetric patch: a left-right flip changes the input
        out.append({"image": img, "label": [y], "patient": f"P-{seed:02d}{i // 2:04d}"})
    return out


@pytest.fixture(scope="module")
def binary_model():
    from medtf import models

    keras.utils.set_random_seed(0)
    model = models.build("simple_cnn", input_shape=(16, 16, 1), num_classes=1, task="binary", filters=(4, 8))
    ex = _binary_examples(64, 9)
    x = np.stack([e["image"] for e in ex]).astype(np.float32) / 255
    model.compile("adam", "binary_crossentropy")
    model.fit(x, np.array([e["label"][0] for e in ex]), epochs=2, batch_size=16, verbose=0)
    return model


def _manual_probs(model, examples, spec, flip=False):
    x = np.stack([apply_intensity_numpy(e["image"], spec) for e in examples])
    p = model.predict(x, verbose=0)[:, 0].astype(np.float64)
    if flip:
        p = (p + model.predict(x[:, :, ::-1], verbose=0)[:, 0]) / 2
    return p


def test_binary_run_threshold_chosen_on_validation(tmp_path, binary_model, records_writer, run_writer):
    test, val = _binary_examples(40, 1), _binary_examples(30, 2)
    rec = records_writer(tmp_path / "records", {"test": test, "val": val}, image_dtype="uint8",
                         label_names=["normal", "abnormal"])
    spec = Preprocessing(intensity="scale", scale=255.0)
    run = run_writer(tmp_path / "run", binary_model, task="binary", class_names=["normal", "abnormal"],
                     preprocessing=spec, records=rec)
    report = evaluate_run(run, "test", n_boot=200, progress=False)

    y = np.array([e["label"][0] for e in test])
    p = _manual_probs(binary_model, test, spec)
    pv = _manual_probs(binary_model, val, spec)
    t = M.select_threshold([e["label"][0] for e in val], pv, "youden")
    assert report["threshold"]["source"] == "validation"
    np.testing.assert_allclose(report["threshold"]["value"], t, rtol=1e-5)
    np.testing.assert_allclose(report["metrics"]["auc"]["value"], M.roc_auc(y, p), atol=1e-6)
    ref = M.threshold_metrics(y, p, report["threshold"]["value"])
    for k in ("tp", "fp", "tn", "fn"):
        assert report["metrics"][k] == ref[k]
    out = run / "eval-test"
    for f in ("report.json", "report.html", "roc.png", "pr.png", "confusion_matrix.png", "calibration.png",
              "predictions.csv"):
        assert (out / f).is_file(), f
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 40 and rows[0]["case"] == "case_0001"
    np.testing.assert_allclose([float(r["probabilities"]) for r in rows], p, atol=1e-5)
    saved = json.loads((out / "report.json").read_text())
    assert saved["split"] == "test" and saved["task"] == "binary" and "predictions" not in saved


def test_binary_run_threshold_from_model_json_and_tta(tmp_path, binary_model, records_writer, run_writer):
    test = _binary_examples(24, 3)
    rec = records_writer(tmp_path / "records", {"test": test}, image_dtype="uint8")
    spec = Preprocessing(intensity="scale", scale=255.0)
    run = run_writer(tmp_path / "run", binary_model, task="binary", class_names=["n", "p"], preprocessing=spec,
                     records=rec, threshold=0.42, threshold_method="youden")
    report = evaluate_run(run, "test", tta=True, n_boot=50, out_dir=tmp_path / "out", progress=False)
    assert report["threshold"]["value"] == 0.42 and report["threshold"]["source"] == "model.json"
    assert report["tta"] is True
    p_tta = _manual_probs(binary_model, test, spec, flip=True)
    p_plain = _manual_probs(binary_model, test, spec)
    got = np.array([r["probabilities"][0] for r in report["predictions"]])
    np.testing.assert_allclose(got, p_tta, atol=1e-5)
    assert not np.allclose(got, p_plain, atol=1e-4)  # the flip really changed something
    assert (tmp_path / "out" / "report.html").is_file()


def _seg_model(size, num_classes=3, k=10.0):
    """1x1 conv whose softmax argmax returns round(x): logits_c = 2kc·x − kc² (x = label value)."""
    inp = keras.Input(tuple(size) + (1,))
    conv = keras.layers.Conv2D(num_classes, 1, name="logits")
    out = keras.layers.Activation("softmax", name="predictions", dtype="float32")(conv(inp))
    model = keras.Model(inp, out)
    c = np.arange(num_classes, dtype=np.float32)
    conv.set_weights([(2 * k * c).reshape(1, 1, 1, -1), -k * c**2])
    return model


def _seg_examples(n, shift_rows=1):
    out = []
    for i in range(n):
        mask = np.zeros((24, 24), np.uint8)
        mask[6 + i:14 + i, 5:15] = 1
        mask[15:19, 14:20] = 2
        img = np.roll(mask, shift_rows, axis=0)[..., None] * 100  # the model "sees" the mask shifted by a row
        out.append({"image": img.astype(np.uint8), "mask": mask, "spacing": (2.0, 0.5), "patient": f"P-{i:04d}"})
    return out


def test_segmentation_run_spacing_and_crop_restore(tmp_path, records_writer, run_writer):
    ex = _seg_examples(3)
    rec = records_writer(tmp_path / "records", {"test": ex}, image_dtype="uint8", label_names=["bg", "organ", "lesion"])
    model = _seg_model((22, 22))
    # crop 24 → 22 centre (1 voxel each side): predictions are padded back to the records' 24×24 grid
    spec = Preprocessing(intensity="scale", scale=100.0, size=(22, 22), resize="crop_or_pad")
    run = run_writer(tmp_path / "run", model, task="segmentation", class_names=["bg", "organ", "lesion"],
                     preprocessing=spec, records=rec, name="unet")
    report = evaluate_run(run, "test", progress=False)
    assert report["n"] == 3
    for case, e in zip(report["per_case"], ex):
        pred = np.roll(e["mask"], 1, axis=0)
        for c in (1, 2):
            m = case["metrics"][c]
            assert m["dice"] == pytest.approx(M.dice(pred == c, e["mask"] == c))
            assert m["hd95"] == pytest.approx(M.hd95(pred == c, e["mask"] == c, (2.0, 0.5)))
            assert m["hd"] == pytest.approx(2.0)  # one row at 2 mm
    assert set(report["metrics"]["per_class"]) == {"organ", "lesion"}
    assert (run / "eval-test" / "per_case_dice.png").is_file()
    html = (run / "eval-test" / "report.html").read_text()
    assert "case_0001" in html and "HD95" in html


def test_segmentation_run_resize_restores_record_grid(tmp_path, records_writer, run_writer):
    ex = _seg_examples(2, shift_rows=0)
    rec = records_writer(tmp_path / "records", {"test": ex}, image_dtype="uint8")
    spec = Preprocessing(intensity="scale", scale=100.0, size=(48, 48))  # 2× upsampling and back
    run = run_writer(tmp_path / "run", _seg_model((48, 48)), task="segmentation", class_names=["bg", "a", "b"],
                     preprocessing=spec, records=rec, name="unet")
    report = evaluate_run(run, "test", tta=True, progress=False, write=False)
    assert report["metrics"]["mean_dice"] > 0.9
    assert "files" not in report


def test_segmentation_run_sliding_window(tmp_path, records_writer, run_writer):
    """Records larger than the model's fixed input (24² vs 10²) go through overlapping tiles."""
    ex = _seg_examples(2)
    rec = records_writer(tmp_path / "records", {"test": ex}, image_dtype="uint8")
    run = run_writer(tmp_path / "run", _seg_model((10, 10)), task="segmentation", class_names=["bg", "a", "b"],
                     preprocessing=Preprocessing(intensity="scale", scale=100.0), records=rec, name="unet")
    report = evaluate_run(run, "test", progress=False, write=False)
    for case, e in zip(report["per_case"], ex):
        pred = np.roll(e["mask"], 1, axis=0)
        assert case["metrics"][1]["dice"] == pytest.approx(M.dice(pred == 1, e["mask"] == 1))
        assert case["metrics"][2]["hd"] == pytest.approx(2.0)


def main(argv):
    """``medtf`` with only this package's commands registered (independent of other command modules)."""
    import argparse

    from medtf.cli import evaluate, explain

    parser = argparse.ArgumentParser(prog="medtf")
    sub = parser.add_subparsers(dest="command")
    evaluate.register(sub)
    explain.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_evaluate_and_errors(tmp_path, binary_model, records_writer, run_writer, capsys):
    rec = records_writer(tmp_path / "records", {"test": _binary_examples(20, 5)}, image_dtype="uint8")
    run = run_writer(tmp_path / "run", binary_model, task="binary", class_names=["n", "p"],
                     preprocessing=Preprocessing(intensity="scale", scale=255.0), records=rec)
    assert main(["evaluate", str(run), "--n-boot", "50", "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "AUC" in out and "report.html" in out
    assert (tmp_path / "rep" / "report.html").is_file()
    assert main(["evaluate", str(run), "--split", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "model.json" in capsys.readouterr().err


def test_cli_explain_png_inputs(tmp_path, binary_model, run_writer, capsys):
    import cv2

    run = run_writer(tmp_path / "run", binary_model, task="binary", class_names=["n", "p"],
                     preprocessing=Preprocessing(intensity="scale", scale=255.0, size=(16, 16)), records=tmp_path)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(inputs / f"Doe_John_{i}.png"), rng.integers(0, 255, (20, 20), dtype=np.uint8))
    (inputs / "notes.txt").write_text("not an image")
    out = tmp_path / "cams"
    code = main(["explain", str(run), str(inputs), "--out", str(out)])
    assert code == 1  # overlays written, one input rejected
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["case_0001_gradcam.png", "case_0002_gradcam.png", "case_0003_gradcam.png"]
    info = json.loads((out / "explain.json").read_text())
    text = json.dumps(info)
    assert "Doe" not in text and "inputs" not in text  # no file names in outputs
    assert info["layer"] == "block2_relu" and len(info["cases"]) == 3 and info["rejected"] == 1
    assert all(0 <= v <= 1 for c in info["cases"] for v in c["probabilities"])
    capsys.readouterr()
    assert main(["explain", str(run), str(inputs / "notes.txt"), "--out", str(out)]) == 3  # nothing readable
    assert "no readable image" in capsys.readouterr().err


def test_evaluation_inputs_equal_build_dataset_eval_pipeline(tmp_path, records_writer):
    """evaluate_run reads records + the run's Preprocessing record by record; the images it feeds the model
    equal ``medtf.data.build_dataset(..., training=False)``'s, in the same order."""
    from medtf.data import DataConfig, build_dataset
    from medtf.evaluation.evaluate import _records_examples
    from medtf.records.reader import read_manifest

    ex = _binary_examples(13, 7, size=20)
    rec = records_writer(tmp_path / "records", {"test": ex}, image_dtype="uint8")
    spec = Preprocessing(intensity="scale", scale=255.0, size=(16, 16), channels=3)
    ours = np.stack([e["x"] for e in _records_examples(rec, "test", spec, read_manifest(rec))])
    cfg = DataConfig(batch_size=5, preprocessing=spec, label_mode="binary")
    xs, ys = zip(*[(x, y) for x, y in build_dataset(rec, "test", cfg, training=False, seed=0).as_numpy_iterator()])
    np.testing.assert_allclose(ours, np.concatenate(xs), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(ys)[:, 0], [e["label"][0] for e in ex])


def test_explain_run_3d_nifti(tmp_path, run_writer):
    """3D classifier + NIfTI input: one PNG with the three orthogonal mid-slices."""
    import matplotlib.image as mpimg
    import nibabel as nib

    from medtf import models
    from medtf.evaluation.explain import explain_run

    keras.utils.set_random_seed(0)
    model = models.build("simple_cnn", input_shape=(8, 16, 16, 1), num_classes=3, task="multiclass", filters=(4, 8))
    run = run_writer(tmp_path / "run", model, task="multiclass", class_names=["a", "b", "c"],
                     preprocessing=Preprocessing(intensity="zscore", size=(8, 16, 16)), records=tmp_path)
    vol = np.random.default_rng(0).normal(size=(20, 20, 10)).astype(np.float32)  # NIfTI (x, y, z)
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.5, 1.0])), str(tmp_path / "case.nii.gz"))
    result = explain_run(run, [tmp_path / "case.nii.gz"], tmp_path / "out", class_index=2)
    assert result["layer"] == "block2_relu" and result["cases"][0]["class_name"] == "c"
    png = mpimg.imread(tmp_path / "out" / "case_0001_gradcam.png")
    assert png.shape[:2] == (440, 1340)  # a figure: three mid-slice panels, a title and a colour bar
    case = result["cases"][0]
    assert case["shown_shape"] == [10, 20, 20]  # the source volume at its own resolution, not the 8x16x16 input
    assert case["title"].startswith("case_0001: c = ")
    assert len(case["peak"]) == 3
