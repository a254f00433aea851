"""The first hour as a new user: every everyday mistake gets one clear line and the documented exit code
(0 ok; 1 done but some inputs rejected or a gate failed; 2 usage; 3 nothing done), never a traceback.

Item numbers refer to the issue's list; item 1 (labels path) and 4 (a model worth looking at) are covered by
tests/test_readme.py, which runs the README path as written.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np
import pytest
import yaml

from medtf.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "training"))
from training_helpers import make_records, tiny_config_dict  # noqa: E402


def _one_line(err: str, *needles: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err, err
    hit = [line for line in lines if all(n in line for n in needles)]
    assert hit, f"no line with {needles} in:\n{err}"
    return hit[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished run on 48 training records (fewer than int8 calibration needs)."""
    from medtf.training.config import TrainConfig
    from medtf.training.trainer import train

    root = tmp_path_factory.mktemp("run")
    rec = make_records(root / "rec")
    d = tiny_config_dict(rec, root / "runs", epochs=1)
    d["data"]["preprocessing"]["size"] = [16, 16]  # raw images of any size are resized like the records
    cfg = TrainConfig.from_dict(d)
    return pathlib.Path(train(cfg)), rec


# ------------------------------------------------------------------------------------------ item 2
def test_set_paths_resolve_against_the_current_directory(tmp_path, monkeypatch):
    from medtf.training.config import load_config

    conf_dir = tmp_path / "recipes" / "x"
    conf_dir.mkdir(parents=True)
    (conf_dir / "c.yaml").write_text(yaml.safe_dump({"records": "../../data/rec", "task": "binary"}))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = load_config(conf_dir / "c.yaml")
    assert pathlib.Path(cfg.records) == (tmp_path / "data" / "rec").resolve()  # file paths: the file's folder
    cfg = load_config(conf_dir / "c.yaml", ["records=records/", "output_dir=out"])
    assert pathlib.Path(cfg.records) == (work / "records").resolve()  # --set paths: where the user typed them
    assert pathlib.Path(cfg.output_dir) == (work / "out").resolve()


# ------------------------------------------------------------------------------------------ item 3
def test_export_all_exports_what_it_can_and_names_the_rest(finished_run, capsys):
    run, _ = finished_run
    code = main(["export", str(run), "--format", "all", "--out", str(run / "export-all"), "--raw-max", "4"])
    err = capsys.readouterr().err
    assert code == 1
    line = _one_line(err, "tflite-int8", "NOT exported")
    assert "int8 needs >= 200 calibration examples; the train split has 48" in line
    assert "--calibration-split" in line
    parity = json.loads((run / "export-all" / "parity.json").read_text())
    assert {"savedmodel", "tflite-fp32", "tflite-fp16", "tflite-dynamic"} <= set(parity["exports"])
    assert parity["not_exported"]["tflite-int8"].startswith("int8 needs")


# ------------------------------------------------------------------------------------------ item 5
def test_edge_predict_with_a_non_model_and_a_mixed_batch(finished_run, tmp_path, capsys):
    import cv2

    from medtf.export import litert
    from medtf.training.run import RunInfo, load_model

    run, _ = finished_run
    png = tmp_path / "preview.png"
    cv2.imwrite(str(png), np.zeros((16, 16), np.uint8))
    code = main(["edge", "predict", str(png), str(png)])
    assert code == 2
    assert "not a .tflite model" in _one_line(capsys.readouterr().err, "preview.png")
    # a grey model, one RGB input among grey ones: the grey ones are predicted, the RGB one rejected, exit 1
    info = RunInfo.load(run)
    path = tmp_path / "m.tflite"
    litert.export_tflite(load_model(run), path, "tflite-fp32", preprocessing=info.preprocessing.to_dict(),
                         conversion=info.conversion.to_dict(), task=info.task, class_names=list(info.class_names),
                         threshold=info.threshold)
    grey = [tmp_path / f"g{i}.png" for i in range(2)]
    for i, g in enumerate(grey):
        cv2.imwrite(str(g), np.full((16, 16), 40 * i, np.uint8))
    rgb = tmp_path / "rgb.png"
    cv2.imwrite(str(rgb), np.zeros((16, 16, 3), np.uint8))
    out = tmp_path / "res.json"
    code = main(["edge", "predict", str(path), str(grey[0]), str(rgb), str(grey[1]), "--output", str(out)])
    res = json.loads(out.read_text())
    assert code == 1 and [("error" in r) for r in res] == [False, True, False]
    assert "rgb.png" in _one_line(capsys.readouterr().err, "rejected")


# ------------------------------------------------------------------------------------------ item 6
def test_train_refuses_to_overwrite_a_finished_run(finished_run, tmp_path, capsys):
    run, rec = finished_run
    conf = tmp_path / "c.yaml"
    d = tiny_config_dict(rec, run.parent, epochs=1)
    d["data"]["preprocessing"]["size"] = [16, 16]
    conf.write_text(yaml.safe_dump(d))
    (run / "eval-test").mkdir(exist_ok=True)
    assert main(["train", str(conf)]) == 2
    assert "--overwrite" in _one_line(capsys.readouterr().err, "holds a finished run")
    assert main(["train", str(conf), "--overwrite"]) == 0
    assert not (run / "eval-test").exists() and not (run / "export-all").exists()  # one training per folder
    assert (run / "model.json").exists()


# ------------------------------------------------------------------------------------------ item 7
@pytest.mark.parametrize("override,needles", [
    ("model.name=simple_cnnn", ("model.name", "did you mean 'simple_cnn'")),
    ("model.kwargs.filterz=[4]", ("model.kwargs.filterz", "did you mean 'filters'")),
    ("data.preprocessing.intensty=scale", ("data.preprocessing.intensty", "did you mean 'intensity'")),
    ("epochs=abc", ("epochs must be an integer", "'abc'")),
    ("data.batch_sise=4", ("data.batch_sise", "did you mean 'batch_size'")),
])
def test_config_mistakes_are_one_line_naming_the_dotted_key(tmp_path, capsys, override, needles):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "no-records-needed", tmp_path / "runs")))
    assert main(["train", str(conf), "--set", override]) == 2  # before any work: the records do not even exist
    _one_line(capsys.readouterr().err, *needles)


# ------------------------------------------------------------------------------------------ item 8
def test_nothing_readable_is_exit_3_everywhere(finished_run, tmp_path, capsys):
    from medtf.cli.tfrecord_convert import main as convert_main

    run, _ = finished_run
    empty = tmp_path / "empty"
    empty.mkdir()
    assert convert_main([str(empty), "--output", str(tmp_path / "rec"), "--no-progress"]) == 3
    assert "the input folder is empty" in _one_line(capsys.readouterr().err, "no readable input")
    assert main(["predict", str(run), str(empty), "--out", str(tmp_path / "p.csv")]) == 3
    _one_line(capsys.readouterr().err, "no readable input")
    assert main(["explain", str(run), str(empty), "--out", str(tmp_path / "cams")]) == 3
    _one_line(capsys.readouterr().err, "no readable image")


def test_demo_exits_1_when_its_parity_gate_fails(monkeypatch, capsys):
    from medtf.cli import demo

    summary = {"test": {"n": 1, "auc": 0.5, "accuracy": 0.5}, "timings_s": {"total_s": 1.0}, "report": "r",
               "int8_parity": {"size_kb": 1, "int8_auc": 0.4, "keras_auc": 0.5, "delta_auc": 0.1, "agreement": 0.5,
                               "passed_gate": False, "raw_parity_passed": True},
               "tflite_int8": "m.tflite", "out": ".",
               "edge_prediction": {"file": "f", "probability": 0.5, "prediction": 1, "truth": 1}}
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: summary)
    args = type("A", (), {"out": ".", "quick": True, "patients": None, "epochs": None, "seed": 0})()
    assert demo.main(args) == 1
    _one_line(capsys.readouterr().err, "parity gate failed")


def test_an_unexpected_error_is_one_line_unless_debugging(monkeypatch, capsys):
    from medtf.cli import evaluate

    def boom(args):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(evaluate, "run", boom)
    monkeypatch.delenv("MEDTF_DEBUG", raising=False)
    import medtf.cli.main as cli_main

    parser = cli_main.build_parser()
    monkeypatch.setattr(cli_main, "build_parser", lambda: parser)
    for action in parser._subparsers._group_actions[0].choices.values():
        if action.prog.endswith("evaluate"):
            action.set_defaults(func=boom)
    assert main(["evaluate", "somewhere"]) == 3
    line = _one_line(capsys.readouterr().err, "medtf evaluate: failed: disk on fire")
    assert "MEDTF_DEBUG=1" in line and "second line" not in line
    monkeypatch.setenv("MEDTF_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["evaluate", "somewhere"])


# ------------------------------------------------------------------------------------------ item 9
def test_quiet_tensorflow_on_cpu_only_machines(monkeypatch):
    from medtf.cli.main import quiet_tensorflow

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    quiet_tensorflow()
    import glob

    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == ("2" if glob.glob("/dev/nvidia[0-9]*") else "3")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"  # the user's choice wins


def test_a_tensorflow_command_prints_no_cuda_probe_lines(finished_run, tmp_path):
    import subprocess

    run, _ = finished_run
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-m", "medtf.cli.main", "evaluate", str(run), "--split", "test",
                           "--out", str(tmp_path / "ev")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for noise in ("cuInit", "cuda_drivers", "absl::InitializeLog", "oneDNN custom operations"):
        assert noise not in proc.stderr, proc.stderr[-2000:]


def test_reports_speak_the_users_language(tmp_path):
    from medtf.evaluation.evaluate import evaluate_predictions
    from medtf.evaluation.report import write_report

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.5 + 0.45 * (2 * y - 1) + rng.normal(0, 0.05, 300), 0, 1)  # separable but over-confident
    p = np.where(rng.random(300) < 0.3, 1 - p, p)  # 30% confidently wrong: badly calibrated
    report = evaluate_predictions(y, p, "binary", threshold=0.5, class_names=["normal", "opacity"])
    report["threshold"]["source"] = "model.json (validation split)"
    files = write_report(report, tmp_path)
    saved = json.loads(files["json"].read_text())
    assert saved["warnings"] and "calibrated" in saved["warnings"][0]
    text = files["html"].read_text()
    assert "What these numbers mean" in text and "of 100 images with opacity" in text
    assert "reliability diagram" in text and "model.json (validation split)" in text
    assert ">opacity<" in text  # the positive class by name, not "1"


def test_evaluate_csv_and_gradcam_use_class_names(finished_run, tmp_path):
    import csv

    import cv2

    from medtf.evaluation.evaluate import evaluate_run
    from medtf.evaluation.explain import explain_run

    run, _ = finished_run
    report = evaluate_run(run, "test", out_dir=tmp_path / "ev", progress=False)
    rows = list(csv.DictReader(open(report["files"]["predictions"])))
    assert {r["label_name"] for r in rows} <= {"other", "top_left"} and "prediction_name" in rows[0]
    img = tmp_path / "big.png"
    cv2.imwrite(str(img), (np.random.default_rng(0).random((48, 40)) * 255).astype(np.uint8))
    res = explain_run(run, [img], tmp_path / "cams")
    case = res["cases"][0]
    assert case["shown_shape"] == [48, 40]  # the overlay is drawn on the source image, not the 16x16 input
    assert "top_left" in case["title"] and "=" in case["title"]
