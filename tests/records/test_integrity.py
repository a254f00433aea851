"""Converter integrity: every input accounted for (symlinks, loops, unreadable folders, non-UTF-8 names),
sane values (NaN/Inf), labels CSV mistakes as usage errors with the line number."""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from records_dicom_factory import write_single  # noqa: E402

from medtf.cli.tfrecord_convert import main as convert_main  # noqa: E402


def _manifest(out):
    m = json.loads((pathlib.Path(out) / "manifest.json").read_text())
    return {f["path"]: f for f in m["files"]}, m


def test_symlinks_loops_and_unreadable_folders_are_reported(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    write_single(src / "a" / "one.dcm", "P1", seed=1)
    write_single(src / "b" / "two.dcm", "P2", seed=2)
    (src / "b" / "loop").symlink_to(src)  # a link back to an ancestor
    (src / "again").symlink_to(src / "a")  # a second way into a folder that is already an input
    (src / "alias.dcm").symlink_to(src / "b" / "two.dcm")  # the same file twice
    ext = tmp_path / "outside"
    ext.mkdir()
    write_single(ext / "three.dcm", "P3", seed=3)
    (src / "linked").symlink_to(ext)  # a symlinked folder: followed once
    locked = src / "locked"
    locked.mkdir()
    write_single(locked / "four.dcm", "P4", seed=4)
    os.chmod(locked, 0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running with permissions that read any folder (root without CAP_DAC_OVERRIDE limits)")
        code = convert_main([str(src), "--output", str(tmp_path / "rec"), "--no-progress", "--split", "1,0,0",
                             "--keep-paths"])
    finally:
        os.chmod(locked, 0o755)
    files, m = _manifest(tmp_path / "rec")
    assert code == 1
    assert files["linked/three.dcm"]["outcome"] == "converted"  # followed once, under the name the user gave
    reasons = {p: f.get("reason", "") for p, f in files.items() if f["outcome"] == "rejected"}
    assert any("symlink loop" in r for r in reasons.values()), reasons
    assert any("already among the inputs" in r for r in reasons.values()), reasons
    assert any("same file as" in r for r in reasons.values()), reasons
    assert any("folder not readable" in r for r in reasons.values()), reasons


def test_root_reads_every_folder_so_check_unreadable_with_the_walk_alone(tmp_path, monkeypatch):
    """Root can read a chmod-0 folder; the walk's report is checked with a folder that fails to list."""
    from medtf.io import sources

    src = tmp_path / "src"
    (src / "bad").mkdir(parents=True)
    real_scandir = os.scandir

    def scandir(path):
        if pathlib.Path(path).name == "bad":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    pairs, rejected = sources.walk_inputs([src])
    assert pairs == [] and rejected == [(str(src / "bad"), "folder not readable (Permission denied); "
                                                           "its files are not converted")]


def test_a_non_utf8_name_does_not_abort_the_run(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_single(src / "good.dcm", "P1", seed=1)
    bad = os.fsencode(str(src)) + b"/caf\xe9.dcm"  # Latin-1 bytes: not UTF-8
    write_single(pathlib.Path(os.fsdecode(bad)), "P2", seed=2)
    code = convert_main([str(src), "--output", str(tmp_path / "rec"), "--no-progress", "--split", "1,0,0",
                         "--keep-paths"])
    assert code == 0
    files, _ = _manifest(tmp_path / "rec")
    assert set(files) == {"good.dcm", "caf\\xe9.dcm"} and all(f["outcome"] == "converted" for f in files.values())


def test_nan_and_inf_are_rejected_with_the_count_or_replaced(tmp_path):
    import nibabel as nib

    src = tmp_path / "src"
    src.mkdir()
    vol = np.ones((4, 5, 6), np.float32)
    vol[0, 0, 0], vol[1, 1, 1], vol[2, 2, 2] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(vol, np.eye(4)), src / "bad.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6), np.float32), np.eye(4)), src / "good.nii.gz")
    assert convert_main([str(src), "--output", str(tmp_path / "r1"), "--no-progress", "--split", "1,0,0",
                         "--keep-paths"]) == 1
    files, _ = _manifest(tmp_path / "r1")
    assert files["bad.nii.gz"]["reason"].startswith("3 non-finite value(s) in the image (1 NaN, 2 Inf)")
    assert convert_main([str(src), "--output", str(tmp_path / "r2"), "--no-progress", "--split", "1,0,0",
                         "--nan-value", "0"]) == 0
    from medtf.records.reader import load

    images = [e["image"] for e in load(tmp_path / "r2", "train").as_numpy_iterator()]
    assert all(np.isfinite(i).all() for i in images) and min(i.min() for i in images) == 0.0


@pytest.mark.parametrize("text,needle", [
    ("path,label\na.dcm,1,extra\n", "line 2: 3 fields, but the header has 2"),
    ("path,label,split\na.dcm,1\n", "line 2: 2 field(s), but the header has 3"),
])
def test_ragged_labels_csv_is_a_usage_error_with_the_line(tmp_path, capsys, text, needle):
    src = tmp_path / "src"
    src.mkdir()
    write_single(src / "a.dcm", "P1")
    (tmp_path / "labels.csv").write_text(text)
    code = convert_main([str(src), "--output", str(tmp_path / "rec"), "--no-progress", "--labels",
                         str(tmp_path / "labels.csv")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ names are identifiers
CANARIES = ("DOE_JOHN_12345", "ROE_JANE_67890", "1.3.6.1.4.1.11129.5.5.1105", "1.2.840.113619.2.55.3.6046")


def _canary_tree(root: pathlib.Path) -> pathlib.Path:
    src = root / "export"
    rows = []
    for i, (folder, uid) in enumerate([("DOE_JOHN_12345", CANARIES[2]), ("ROE_JANE_67890", CANARIES[3])] * 6):
        rel = f"{folder}/study{i}/{uid}.{i}.dcm"
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        write_single(src / rel, f"PAT{i % 6}", seed=i)
        rows.append(f"{rel},{i % 2}")
    (root / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return src


def _no_canary(folder_or_bytes: dict) -> None:
    leaks = [(c, name) for name, data in folder_or_bytes.items() for c in CANARIES if c.encode() in data]
    assert not leaks, leaks[:5]


def _bytes_under(folder: pathlib.Path) -> dict:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_no_path_or_uid_reaches_records_manifest_logs_runs_or_predictions(tmp_path, monkeypatch):
    import subprocess

    from medtf.cli.main import main
    from medtf.export import litert
    from medtf.training.config import TrainConfig
    from medtf.training.run import RunInfo, load_model
    from medtf.training.trainer import train

    monkeypatch.setenv("MEDTF_PSEUDONYM_KEY", "00112233445566778899aabbccddeeff")
    monkeypatch.setenv("MEDTF_HOME", str(tmp_path / "home"))
    src = _canary_tree(tmp_path)
    rec = tmp_path / "rec"
    proc = subprocess.run([sys.executable, "-m", "medtf.cli.tfrecord_convert", str(src), "--output", str(rec),
                           "--labels", str(tmp_path / "labels.csv"), "--size", "16,16", "--split", "0.5,0.25,0.25"],
                          capture_output=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    _no_canary({"stdout": proc.stdout, "stderr": proc.stderr, **_bytes_under(rec)})
    cfg = TrainConfig.from_dict({"records": str(rec), "task": "binary", "model": {"name": "simple_cnn",
                                 "kwargs": {"filters": [4]}}, "data": {"batch_size": 4, "preprocessing":
                                 {"intensity": "range", "value_range": [-1024, 2000]}}, "epochs": 1,
                                 "output_dir": str(tmp_path / "runs"), "run_name": "r", "tensorboard": False,
                                 "verbose": 0, "monitor": "val_loss"})
    run = train(cfg)
    info = RunInfo.load(run)
    tfl = run / "m.tflite"
    litert.export_tflite(load_model(run), tfl, "tflite-fp32", preprocessing=info.preprocessing.to_dict(),
                         conversion=info.conversion.to_dict(), task=info.task, class_names=list(info.class_names))
    assert main(["predict", str(run), str(src), "--out", str(tmp_path / "pred.csv")]) == 0
    assert main(["edge", "predict", str(tfl), str(src), "--output", str(tmp_path / "edge.json")]) == 0
    outputs = {**_bytes_under(pathlib.Path(run)), "pred": (tmp_path / "pred.csv").read_bytes(),
               "edge": (tmp_path / "edge.json").read_bytes()}
    _no_canary(outputs)
    # the predictions name inputs exactly as the records do (same key): a key holder can map back
    import csv

    sources = {r["source"] for r in csv.DictReader(open(tmp_path / "pred.csv"))}
    manifest = json.loads((rec / "manifest.json").read_text())
    assert sources == {f["unit"] for f in manifest["files"]} and all(s.startswith("F-") for s in sources)
    lookup = subprocess.run([sys.executable, "-m", "medtf.cli.tfrecord_convert", str(src), "-o", str(tmp_path / "x"),
                             "--lookup"], capture_output=True, text=True, env=dict(os.environ))
    table = dict(line.split("\t") for line in lookup.stdout.strip().splitlines()[1:])
    assert set(sources) <= set(table) and any("DOE_JOHN_12345" in table[s] for s in sources)
    # --show-paths puts the typed paths in the user's own CSV, when asked
    assert main(["predict", str(run), str(src), "--out", str(tmp_path / "p2.csv"), "--show-paths"]) == 0
    assert b"DOE_JOHN_12345" in (tmp_path / "p2.csv").read_bytes()


# ------------------------------------------------------------------------------------------ resume is safe
def _records_by_source(rec):
    from medtf.records.reader import load

    return {e["source"].decode(): e["image"].tobytes() for split in ("train", "val", "test")
            for e in load(rec, split).as_numpy_iterator()}


def test_resume_reconverts_changed_inputs_and_refuses_changed_labels_or_options(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        write_single(src / f"s{i}.dcm", f"P{i}", seed=i)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"s{i}.dcm,{i % 2}\n" for i in range(6)))
    base = [str(src), "--output", str(tmp_path / "rec"), "--no-progress", "--labels", str(labels), "--keep-work"]
    assert convert_main(base) == 0
    before = _records_by_source(tmp_path / "rec")
    # (a) an input rewritten between runs: converted again, not kept with its old pixels
    write_single(src / "s3.dcm", "P3", seed=99)
    assert convert_main(base + ["--resume"]) == 0
    after = _records_by_source(tmp_path / "rec")
    changed = [k for k in after if after[k] != before[k]]
    assert len(changed) == 1
    assert convert_main([str(src), "--output", str(tmp_path / "fresh"), "--no-progress", "--labels",
                         str(labels)]) == 0
    assert _records_by_source(tmp_path / "fresh") == after  # the same as converting from scratch
    # (b) the labels CSV rewritten under the same name: --resume refuses, naming it
    labels.write_text("path,label\n" + "".join(f"s{i}.dcm,{1 - i % 2}\n" for i in range(6)))
    capsys.readouterr()
    assert convert_main(base + ["--resume"]) == 2
    assert "labels CSV's content changed since the interrupted run" in capsys.readouterr().err
    # (c) an option changed: refused too
    labels.write_text("path,label\n" + "".join(f"s{i}.dcm,{i % 2}\n" for i in range(6)))
    assert convert_main(base + ["--resume", "--size", "8,8"]) == 2
    assert "option 'process' changed" in capsys.readouterr().err


def test_a_second_writer_is_refused_and_unmatched_rows_are_listed(tmp_path, capsys):
    import subprocess

    src = tmp_path / "src"
    src.mkdir()
    write_single(src / "a.dcm", "P1")
    out = tmp_path / "rec"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{sleeper.pid}\n")
        assert convert_main([str(src), "--output", str(out), "--no-progress"]) == 2
        assert f"another tfrecord-convert (pid {sleeper.pid}) is writing here" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    # the writer is gone: its lock is stale and taken over; extra CSV rows are reported, not ignored
    (tmp_path / "labels.csv").write_text("path,label\na.dcm,1\nghost1.dcm,0\nghost2.dcm,1\n")
    assert convert_main([str(src), "--output", str(out), "--no-progress", "--labels",
                         str(tmp_path / "labels.csv"), "--split", "1,0,0"]) == 0
    assert "labels CSV: 2 row(s) match no input" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["labels_unmatched"]["count"] == 2 and not (out / ".lock").exists()
