"""`medtf export` on a run folder and `medtf edge predict|bench` on its artifacts."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from medtf.cli.main import main

from ._helpers import tiny_classifier, write_ct_dicom


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from medtf.preprocess import Preprocessing
    from medtf.training.run import RunInfo

    run = tmp_path_factory.mktemp("run")
    model = tiny_classifier(input_shape=(32, 32, 1))
    model.save(run / "model.keras")
    spec = Preprocessing(intensity="window", windows=((400, 40),), size=(32, 32))
    RunInfo(name="simple_cnn", task="binary", class_names=("normal", "abnormal"), input_shape=(32, 32, 1),
            spatial_dims=2, preprocessing=spec, threshold=0.5).save(run)
    rng = np.random.default_rng(0)
    x = rng.random((260, 32, 32, 1), dtype=np.float32)
    p = model.predict(x, verbose=0)[:, 0]
    y = (p > np.median(p)).astype(np.int64)[:, None]
    np.savez(run / "data.npz", x_train=x[:200 + 10], y_train=y[:210], x_test=x[200:], y_test=y[200:])
    return run


def test_export_tflite_and_savedmodel_with_parity(run_dir, capsys):
    out = run_dir / "exp"
    code = main(["export", str(run_dir), "--format", "tflite-fp32", "--format", "tflite-int8", "--format",
                 "savedmodel", "--data", str(run_dir / "data.npz"), "--calibration-examples", "200",
                 "--out", str(out), "--name", "cxr", "--gate", "int8=0.5"])
    text = capsys.readouterr().out
    assert code == 0, text
    report = json.loads((out / "parity.json").read_text())
    assert set(report["exports"]) == {"tflite-fp32", "tflite-int8", "savedmodel"}
    assert report["exports"]["tflite-fp32"]["max_abs_dprob"] < 1e-5
    assert report["exports"]["savedmodel"]["max_abs_dprob"] < 1e-5
    assert (out / "cxr_int8.tflite").is_file() and (out / "cxr_int8.tflite.json").is_file()
    assert (out / "savedmodel" / "cxr" / "1" / "saved_model.pb").is_file()
    assert "tflite-int8" in text and "AUC" in text


def test_gate_failure_exits_1_and_suggests_qat(run_dir, capsys):
    code = main(["export", str(run_dir), "--format", "tflite-int8", "--data", str(run_dir / "data.npz"),
                 "--out", str(run_dir / "exp2"), "--gate", "int8=-1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "--qat" in err and "tflite-int8" in err


def test_usage_errors(run_dir, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "tflite-fp32"]) == 2
    assert "model.json" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--format", "tflite-dynamic", "--target", "tflite-runtime-2.14"]) == 2
    assert "tflite-runtime 2.14" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--prune", "1.5"]) == 2


def test_edge_predict_and_bench(run_dir, tmp_path, capsys):
    model_path = run_dir / "exp" / "cxr_int8.tflite"
    if not model_path.is_file():
        pytest.skip("needs test_export_tflite_and_savedmodel_with_parity")
    dcm = tmp_path / "a.dcm"
    write_ct_dicom(dcm)
    out = tmp_path / "res.json"
    code = main(["edge", "predict", str(model_path), str(dcm), str(tmp_path / "nope.png"), "--output", str(out)])
    assert code == 1  # one input rejected, the other predicted
    res = json.loads(out.read_text())
    assert res[0]["label"] in ("normal", "abnormal") and 0.0 <= res[0]["probability"] <= 1.0
    # the output file names inputs by pseudonym only (names can identify patients); the terminal shows the path
    assert res[1]["error"] == "no such input file or folder" and res[1]["input"].startswith("F-")
    assert "nope" not in out.read_text()
    capsys.readouterr()
    assert main(["edge", "bench", str(model_path), "--runs", "10", "--warmup", "1"]) == 0
    assert "p50" in capsys.readouterr().out


def test_profiles_apply_and_validate(tmp_path):
    import argparse

    from medtf.cli.export import apply_profile, register

    profiles = sorted((pathlib.Path(__file__).resolve().parents[2] / "export" / "profiles").glob("*.yaml"))
    assert {p.name for p in profiles} >= {"edge-int8.yaml", "serving.yaml"}
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    for prof in profiles:
        args = parser.parse_args(["export", "RUN"])
        apply_profile(args, prof)
        assert args.format
    args = parser.parse_args(["export", "RUN", "--target", "tflite-runtime-2.14"])
    apply_profile(args, [p for p in profiles if p.name == "edge-int8.yaml"][0])
    assert args.format == ["tflite-fp32", "tflite-int8"] and args.target == "tflite-runtime-2.14"  # explicit wins
    bad = tmp_path / "bad.yaml"
    bad.write_text("formats: [coreml]\n")
    with pytest.raises(ValueError, match="bad.yaml.*coreml"):
        apply_profile(parser.parse_args(["export", "RUN"]), bad)


def test_bench_device_script_runs_without_medtf(run_dir, tmp_path):
    import subprocess
    import sys

    model_path = run_dir / "exp" / "cxr_int8.tflite"
    if not model_path.is_file():
        pytest.skip("needs test_export_tflite_and_savedmodel_with_parity")
    script = pathlib.Path(__file__).resolve().parents[2] / "export" / "bench_device.py"
    out = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, str(script), str(model_path), str(run_dir / "exp" / "cxr_fp32.tflite"),
                           "--runs", "10", "--warmup", "1", "--json", str(out)], capture_output=True, text=True,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert len(res["models"]) == 2
    assert all(m["p50_ms"] > 0 for m in res["models"].values())


def test_int8_float_ops(run_dir, capsys):
    """--int8-float-ops LOGISTIC: the output sigmoid in float (float I/O), recorded in the sidecar; a misspelt op
    is a usage error with a suggestion."""
    from ai_edge_litert.interpreter import Interpreter

    out = run_dir / "exp_float_ops"
    code = main(["export", str(run_dir), "--format", "tflite-int8", "--data", str(run_dir / "data.npz"),
                 "--calibration-examples", "200", "--out", str(out), "--name", "cxr", "--int8-float-ops", "logistic",
                 "--gate", "int8=0.5"])
    assert code == 0, capsys.readouterr()
    meta = json.loads((out / "cxr_int8.tflite.json").read_text())
    assert meta["quantization"]["float_ops"] == ["LOGISTIC"]
    it = Interpreter(model_path=str(out / "cxr_int8.tflite"))
    tensors = it.get_tensor_details()
    kinds = {d["op_name"]: np.dtype(tensors[d["outputs"][0]]["dtype"]).name for d in it._get_ops_details()}
    assert kinds["LOGISTIC"] == "float32" and kinds["CONV_2D"] == "int8"
    report = json.loads((out / "parity.json").read_text())
    assert report["exports"]["tflite-int8"]["max_abs_dprob"] < 0.05
    assert main(["export", str(run_dir), "--format", "tflite-int8", "--int8-float-ops", "LOGISTC"]) == 2
    assert "did you mean LOGISTIC" in capsys.readouterr().err
