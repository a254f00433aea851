"""The preprocessing contract end to end: raw files → ``tfrecord-convert`` (window / MONOCHROME1 / spacing /
size) → ``medtf train`` (one epoch) → ``medtf export`` (SavedModel, fp32 and int8 LiteRT, with the raw-input
parity gate) → ``medtf predict``, the edge runtime and the SavedModel's ``serving_default`` on the RAW
source files. Every artifact must give, on the raw file, what the Keras model gives on that file's record:

* float artifacts (Keras via ``medtf predict``, the SavedModel, fp32 LiteRT): max |Δp| ≤ 1e-4 — the chain is
  the same NumPy reference the converter ran (predict, edge) or its graph twin (SavedModel; resampling
  and resizing in float32 differ from the reference by ~1e-5 on HU values, far below what moves an output
  by 1e-4);
* int8 LiteRT: within the raw gate of ``medtf.export.raw_parity`` (one or two quantization steps).

Segmentation: masks written back on the source grid equal the record-space prediction resampled onto the
source grid with SimpleITK's nearest neighbour, using the geometry SimpleITK reads from the DICOM and the
geometry stored in the record.
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore")


# ------------------------------------------------------------------------------------------ helpers
def _convert(src, out, *args, labels=None):
    from medtf.cli.tfrecord_convert import main as convert_main

    argv = [str(src), "--output", str(out), "--no-progress", "--split", "0.6,0.2,0.2", *args]
    if labels:
        argv += ["--labels", str(labels)]
    assert convert_main(argv) == 0
    return json.loads((pathlib.Path(out) / "manifest.json").read_text())


def _train(records, runs, model_kwargs=None, task="binary", preprocessing=None, label_mode="binary", model="simple_cnn"):
    from medtf.training.config import TrainConfig
    from medtf.training.trainer import train

    cfg = TrainConfig.from_dict({
        "records": str(records), "task": task,
        "model": {"name": model, "kwargs": model_kwargs or {"filters": [4, 8]}},
        "data": {"batch_size": 16, "label_mode": label_mode, "preprocessing": preprocessing or {},
                 "shuffle_buffer": 64},
        "optimizer": {"learning_rate": 0.01}, "epochs": 1, "seed": 0, "monitor": "val_loss",
        "output_dir": str(runs), "run_name": "run", "tensorboard": False, "verbose": 0,
    })
    return pathlib.Path(train(cfg))


def _records(records, split="test"):
    """{source key: (record model input, element)} with the run's training stage applied."""
    from medtf.records.reader import load

    return {e["source"].decode(): e for e in load(records, split).as_numpy_iterator()}


def _keras_on_records(run, records):
    import tensorflow as tf

    from medtf.preprocess import tf_ops
    from medtf.training.run import RunInfo, load_model

    info = RunInfo.load(run)
    model = load_model(run)
    out = {}
    for key, e in _records(records).items():
        x = tf_ops.apply(tf.constant(e["image"]), info.preprocessing).numpy()
        out[key] = np.asarray(model(x[None], training=False))[0]
    return out


def _export(run, *formats, extra=()):
    from medtf.cli.main import main as medtf_main

    argv = ["export", str(run)]
    for f in formats:
        argv += ["--format", f]
    code = medtf_main(argv + ["--gate", "int8=1.0,fp32=1.0,savedmodel=1.0", "--raw-max", "12", *extra])
    parity = json.loads((run / "export" / "parity.json").read_text())
    return code, parity


def _predict_csv(run, inputs, out):
    from medtf.cli.main import main as medtf_main

    code = medtf_main(["predict", str(run), *map(str, inputs), "--out", str(out)])
    with open(out, newline="") as f:
        return code, list(csv.DictReader(f))


def _check_classifier_on_raw(run, records, src_root, tmp_path, int8: bool):
    """medtf predict, the edge runtime (fp32/int8) and serving_default on every raw test source."""
    import tensorflow as tf

    from medtf.export.edge import predict_files
    from medtf.training.run import RunInfo

    info = RunInfo.load(run)
    ref = _keras_on_records(run, records)
    assert ref, "no test records"
    # medtf predict on the raw source folder: rows keyed by the same source keys as the records
    code, rows = _predict_csv(run, [src_root], tmp_path / "pred.csv")
    assert code == 0
    got = {r["source"]: float(r["probability"]) for r in rows if r["source"] in ref}
    assert set(got) == set(ref)
    for key, p in ref.items():
        assert abs(got[key] - float(p[-1])) <= 1e-4, key
    located = _unit_paths(src_root, info.spatial_dims)  # record keys are keyed pseudonyms of the paths
    files = {key: located[key] for key in ref}
    # edge runtime (no TensorFlow in its path) on the raw files
    fp32 = next((run / "export").glob("*_fp32.tflite"))
    for key in ref:
        path = files[key]
        res = predict_files(fp32, [path])
        assert len(res) == 1 and "error" not in res[0], res
        assert abs(res[0]["probability"] - float(ref[key][-1])) <= 1e-4, key
    if int8:
        q = next((run / "export").glob("*_int8.tflite"))
        res = predict_files(q, [files[k] for k in ref])
        assert all("error" not in r for r in res), res
        diffs = [abs(r["probability"] - float(ref[k][-1])) for r, k in zip(res, ref)]
        assert max(diffs) <= 0.1  # int8 against float Keras: quantization error, not preprocessing error
    # the SavedModel's serving_default on raw pixels (+ spacing when the chain resamples)
    from medtf.io.inputs import iter_inputs

    loaded = tf.saved_model.load(str(next((run / "export" / "savedmodel").glob("*/1"))))
    serve = loaded.signatures["serving_default"]
    wants_spacing = "spacing" in serve.structured_input_signature[1]
    checked = 0
    for unit, image in iter_inputs([src_root], spatial_dims=info.spatial_dims, voi=info.chain.voi):
        if unit.key not in ref:
            continue
        kw = {"image": tf.constant(np.asarray(image.array, np.float32)[None])}
        if wants_spacing:
            kw["spacing"] = tf.constant(np.asarray(image.spacing, np.float32)[None])
        p = serve(**kw)["predictions"].numpy()[0]
        np.testing.assert_allclose(p, ref[unit.key], atol=1e-4)
        checked += 1
    assert checked == len(ref)


def _unit_paths(root, spatial_dims):
    """{record key: the file (or a series' folder)} under ``root``, named as the converter named them."""
    from medtf.io.inputs import iter_inputs

    return {unit.key: (pathlib.Path(unit.paths[0]) if len(unit.paths) == 1 else pathlib.Path(unit.paths[0]).parent)
            for unit, _ in iter_inputs([root], spatial_dims=spatial_dims)}


def _series_dir(root, key):
    """The folder holding the series whose unit key is ``key`` (one series per leaf folder here)."""
    from medtf.io.inputs import iter_inputs

    for d in sorted({p.parent for p in root.rglob("*.dcm")}):
        for unit, _ in iter_inputs([d], spatial_dims=3):
            if unit.key == key:
                return d
    raise AssertionError(f"no folder for {key}")


def _assert_raw_gate(parity, formats):
    raw = parity["raw"]
    assert raw["examples"] > 0 and raw["passed"], raw
    for f in formats:
        e = raw["exports"][f]
        assert e["passed"] and e["raw_vs_records"] <= e["tolerance"], (f, e)
        if f in ("keras", "savedmodel", "tflite-fp32"):
            assert e["raw_vs_keras"] <= 1e-4, (f, e)


# ------------------------------------------------------------------------------------------ 2D CT
def test_ct_slices_two_windows_and_resize(tmp_path):
    from medtf.synthetic.phantoms import write_ct_phantoms

    ph = tmp_path / "ct"
    write_ct_phantoms(ph, n_patients=12, studies_per_patient=2, size=64, n_slices=16, seed=1)
    rec = tmp_path / "rec"
    m = _convert(ph / "dicom", rec, "--mode", "slice", "--window", "lung", "--window", "mediastinum",
                 "--size", "32,32", labels=ph / "labels.csv")
    assert m["preprocessing"]["windows"] == [[1500.0, -600.0], [350.0, 50.0]] and m["channels"] == 2
    run = _train(rec, tmp_path / "runs")
    info = json.loads((run / "model.json").read_text())
    assert info["conversion"]["intensity"] == "window" and info["conversion"]["size"] == [32, 32]
    code, parity = _export(run, "savedmodel", "tflite-fp32", "tflite-int8", extra=["--calibration-examples", "200"])
    assert code == 0, parity
    _assert_raw_gate(parity, ["keras", "savedmodel", "tflite-fp32", "tflite-int8"])
    _check_classifier_on_raw(run, rec, ph / "dicom", tmp_path, int8=True)


# ------------------------------------------------------------------------------------------ 2D DX
def test_dx_monochrome1_and_resize(tmp_path):
    from medtf.synthetic.phantoms import write_cxr_phantoms

    ph = tmp_path / "cxr"
    write_cxr_phantoms(ph, n_patients=180, studies_per_patient=2, size=32, seed=2, monochrome1_fraction=0.5)
    rec = tmp_path / "rec"
    _convert(ph / "dicom", rec, "--size", "24,24", labels=ph / "labels.csv")
    run = _train(rec, tmp_path / "runs", preprocessing={"intensity": "scale", "scale": 4095.0})
    code, parity = _export(run, "savedmodel", "tflite-fp32", "tflite-int8", extra=["--calibration-examples", "200"])
    assert code == 0, parity
    _assert_raw_gate(parity, ["keras", "savedmodel", "tflite-fp32", "tflite-int8"])
    _check_classifier_on_raw(run, rec, ph / "dicom", tmp_path, int8=True)


# ------------------------------------------------------------------------------------------ 3D CT
def test_ct_series_spacing_and_size(tmp_path):
    from medtf.synthetic.phantoms import write_ct_phantoms

    ph = tmp_path / "ct"
    write_ct_phantoms(ph, n_patients=6, studies_per_patient=2, size=48, n_slices=20, seed=3)
    rec = tmp_path / "rec"
    m = _convert(ph / "dicom", rec, "--mode", "volume", "--spacing", "5,12,12", "--size", "8,24,24",
                 labels=ph / "labels.csv")
    assert m["preprocessing"]["spacing"] == [5.0, 12.0, 12.0]
    run = _train(rec, tmp_path / "runs", preprocessing={"intensity": "range", "value_range": [-1000, 400]})
    # CONV_3D has no int8 kernel in LiteRT: 3D models export float formats
    code, parity = _export(run, "savedmodel", "tflite-fp32")
    assert code == 0, parity
    _assert_raw_gate(parity, ["keras", "savedmodel", "tflite-fp32"])
    _check_classifier_on_raw(run, rec, ph / "dicom", tmp_path, int8=False)


# ------------------------------------------------------------------------------------------ NIfTI volume
def test_nifti_volume_spacing_and_size(tmp_path):
    import nibabel as nib

    src = tmp_path / "nii"
    src.mkdir()
    rng = np.random.default_rng(4)
    rows = []
    for i in range(12):
        shape = (20 + i % 3, 22, 18 + 2 * (i % 2))
        vol = rng.normal(0, 50, shape).astype(np.float32)
        label = i % 2
        if label:
            vol[5:12, 6:14, 4:10] += 300
        affine = np.diag([1.2 + 0.1 * (i % 3), 1.0, 2.0 + 0.5 * (i % 2), 1.0])
        affine[:3, 3] = [-10.0 * i, 5.0, 3.0]
        nib.save(nib.Nifti1Image(vol, affine), src / f"case{i:02d}.nii.gz")
        rows.append(f"case{i:02d}.nii.gz,{label}")
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    rec = tmp_path / "rec"
    _convert(src, rec, "--spacing", "2.5", "--size", "8,12,12", labels=tmp_path / "labels.csv")
    run = _train(rec, tmp_path / "runs", preprocessing={"intensity": "zscore"})
    code, parity = _export(run, "savedmodel", "tflite-fp32")
    assert code == 0, parity
    _assert_raw_gate(parity, ["keras", "savedmodel", "tflite-fp32"])
    _check_classifier_on_raw(run, rec, src, tmp_path, int8=False)


# ------------------------------------------------------------------------------------------ the gate bites
def test_raw_gate_fails_on_a_wrong_spec_and_old_runs_warn(tmp_path, capsys):
    from medtf.synthetic.phantoms import write_ct_phantoms
    from medtf.training.predict import predict_inputs
    from medtf.training.run import RunInfo

    ph = tmp_path / "ct"
    write_ct_phantoms(ph, n_patients=4, studies_per_patient=1, size=40, n_slices=8, seed=6)
    rec = tmp_path / "rec"
    _convert(ph / "dicom", rec, "--mode", "slice", "--window", "lung", "--size", "24,24", labels=ph / "labels.csv")
    run = _train(rec, tmp_path / "runs")
    # break the spec on purpose: the stored conversion forgets the window
    doc = json.loads((run / "model.json").read_text())
    doc["conversion"]["intensity"], doc["conversion"]["windows"], doc["conversion"]["pad"] = "none", [], "min"
    (run / "model.json").write_text(json.dumps(doc))
    code, parity = _export(run, "savedmodel", "tflite-fp32")
    assert code == 1
    assert not parity["passed"] and {"raw:keras", "raw:savedmodel", "raw:tflite-fp32"} <= set(parity["failed"])
    assert "raw-input parity failed" in capsys.readouterr().err
    # an old run (model.json without the conversion spec, the window only in its informational note) still
    # loads and predicts as before — the training stage only, resized to the model — with a warning naming
    # the missing conversion step
    del doc["conversion"]
    doc["intensity"] = {"kind": "window", "windows": [[1500.0, -600.0]]}
    (run / "model.json").write_text(json.dumps(doc))
    info = RunInfo.load(run)
    assert info.conversion is None and info.chain.steps[-1].size == (24, 24)
    with pytest.warns(UserWarning, match="conversion window 1500/-600"):
        rows, rejected = predict_inputs(run, [ph / "dicom"], progress=False)
    assert rows and not rejected


# ------------------------------------------------------------------------------------------ segmentation
def _threshold_segmenter(input_shape, level: float = 0.5):
    """A fixed-weight 'segmenter': foreground where the windowed input exceeds ``level`` (deterministic)."""
    import keras

    inp = keras.Input(input_shape)
    conv = keras.layers.Conv2D if len(input_shape) == 3 else keras.layers.Conv3D
    layer = conv(1, 1, activation="sigmoid")
    out = layer(inp)
    w = np.zeros(layer.get_weights()[0].shape, np.float32)
    w[..., 0, 0] = 40.0
    layer.set_weights([w, np.array([-40.0 * level], np.float32)])
    return keras.Model(inp, out)


def _seg_run(run_dir: pathlib.Path, records, model):
    from medtf.preprocess import Preprocessing
    from medtf.records.process import conversion_spec
    from medtf.records.reader import read_manifest
    from medtf.training.run import RunInfo

    run_dir.mkdir(parents=True)
    model.save(run_dir / "model.keras")
    shape = tuple(model.inputs[0].shape[1:])
    RunInfo(name="threshold", task="segmentation", class_names=("background", "bright"), input_shape=shape,
            spatial_dims=len(shape) - 1, preprocessing=Preprocessing(),
            conversion=conversion_spec(read_manifest(records)), records=str(records)).save(run_dir)
    return run_dir


def _record_image(values, e, spatial_dims):
    import SimpleITK as sitk

    arr = values if spatial_dims == 3 else values[None]
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    sp = [float(s) for s in e["spacing"]][::-1] + ([] if spatial_dims == 3 else [1.0])
    img.SetSpacing(sp)
    img.SetOrigin([float(v) for v in e["origin"]])
    img.SetDirection([float(v) for v in e["direction"]])
    return img


def _nn_onto(moving, fixed):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                                sitk.sitkUInt8))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_segmentation_masks_go_back_on_the_source_grid(tmp_path, spatial_dims):
    import SimpleITK as sitk

    from medtf.interpret import segmentation_labels
    from medtf.preprocess import Preprocessing, tf_ops
    from medtf.synthetic.phantoms import write_ct_phantoms
    from medtf.training.predict import predict_inputs

    ph = tmp_path / "ct"
    write_ct_phantoms(ph, n_patients=2, studies_per_patient=1, size=48, n_slices=12, seed=5)
    rec = tmp_path / "rec"
    if spatial_dims == 2:
        _convert(ph / "dicom", rec, "--mode", "slice", "--window", "400,-100", "--spacing", "9,6", "--size", "24,32")
        shape = (24, 32, 1)
    else:
        _convert(ph / "dicom", rec, "--mode", "volume", "--window", "400,-100", "--spacing", "4,9,9",
                 "--size", "16,24,24")
        shape = (16, 24, 24, 1)
    run = _seg_run(tmp_path / "run", rec, _threshold_segmenter(shape))
    import keras

    model = keras.saving.load_model(run / "model.keras")
    rows, rejected = predict_inputs(run, [ph / "dicom"], masks_dir=tmp_path / "masks", progress=False)
    assert not rejected and rows
    out = {r["source"]: r["output"] for r in rows}
    checked = 0
    for split in ("train", "val", "test"):
        for key, e in _records(rec, split).items():
            x = tf_ops.apply(e["image"], Preprocessing())
            labels = segmentation_labels(np.asarray(model(np.asarray(x)[None]))[0])
            assert 0 < labels.mean() < 1  # a non-trivial mask
            if spatial_dims == 2:
                fixed = sitk.ReadImage(str(_unit_paths(ph / "dicom", 2)[key]))
            else:
                reader = sitk.ImageSeriesReader()
                folder = _series_dir(ph / "dicom", key)
                reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
                fixed = reader.Execute()
            ref = _nn_onto(_record_image(labels, e, spatial_dims), fixed)
            got = sitk.GetArrayFromImage(sitk.ReadImage(out[key]))
            ref = ref[0] if spatial_dims == 2 else ref
            assert got.shape == ref.shape
            np.testing.assert_array_equal(got, ref)
            checked += 1
    assert checked >= 2
