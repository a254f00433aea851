"""End-to-end conversion on small generated DICOMs: volumes, labels, splits, load round trip,
workers/resume determinism, malformed inputs."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import records_dicom_factory as fac
from medtf.records.convert import ConvertConfig, ConvertError, convert

KEY = "00112233445566778899aabbccddeeff"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("MEDTF_PSEUDONYM_KEY", KEY)


def _dataset(root: pathlib.Path, n_patients=6, n_slices=3):
    """n patients, each with one series (a folder); labels CSV by folder; returns {folder: HU volume}."""
    vols = {}
    rows = ["path,label"]
    for p in range(n_patients):
        folder = f"case{p:02d}"
        vols[folder], _ = fac.write_series(root / folder, f"PID-{p:04d}", n_slices=n_slices, seed=p)
        rows.append(f"{folder},{'nodule' if p % 2 else 'normal'}")
    (root.parent / "labels.csv").write_text("\n".join(rows) + "\n")
    return vols


def _outputs(out: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != "convert_stats.json"}


def _records(out, split):
    from medtf.records import load

    return {r["source"].numpy().decode(): r for r in load(out, split)}


def test_volumes_labels_patient_split_and_load_round_trip(tmp_path):
    vols = _dataset(tmp_path / "in")
    res = convert(ConvertConfig(keep_paths=True, inputs=(str(tmp_path / "in"),), output=str(tmp_path / "out"),
                                labels=str(tmp_path / "labels.csv"), split="0.5,0.25,0.25", progress=False))
    m = res.manifest
    assert res.exit_code == 0
    assert m["mode"] == "volume" and m["spatial_dims"] == 3 and m["image_dtype"] == "int16"
    assert m["label_names"] == ["nodule", "normal"] and m["preprocessing"]["intensity"] == "none" and m["preprocessing"]["pad"] == "min"
    assert sum(s["examples"] for s in m["splits"].values()) == 6
    assert all(f["outcome"] == "converted" for f in m["files"]) and len(m["files"]) == 18
    # patient-grouped, both labels in train (stratified)
    seen = {}
    for split in m["splits"]:
        for src, r in _records(tmp_path / "out", split).items():
            assert r["patient"].numpy().decode() not in seen
            seen[r["patient"].numpy().decode()] = split
    assert set(m["splits"]["train"]["labels"]) == {"0", "1"}
    # every file entry's key is a source the reader returns; image equals the HU volume in z order
    by_folder = {}
    for f in m["files"]:
        by_folder.setdefault(f["path"].split("/")[0], set()).add((f["key"], f["split"]))
    for folder, entries in by_folder.items():
        assert len(entries) == 1  # all slices of a series → one record
        key, split = entries.pop()
        rec = _records(tmp_path / "out", split)[key]
        np.testing.assert_array_equal(rec["image"].numpy()[..., 0], vols[folder])
        np.testing.assert_allclose(rec["spacing"].numpy(), [2.5, 0.75, 0.8], rtol=1e-6)
        assert rec["label"].numpy().tolist() == [0 if int(folder[-2:]) % 2 else 1]
        np.testing.assert_allclose(rec["origin"].numpy(), [-12.0, -8.0, 10.0])
    # no raw IDs anywhere
    blob = b"".join(_outputs(tmp_path / "out").values())
    assert b"PID-0" not in blob


def test_slice_mode_and_window_channels(tmp_path):
    _dataset(tmp_path / "in", n_patients=2, n_slices=2)
    res = convert(ConvertConfig(keep_paths=True, inputs=(str(tmp_path / "in"),), output=str(tmp_path / "out"), mode="slice",
                                process=__import__("medtf.records.process", fromlist=["x"]).ProcessOptions(
                                    intensity="window", windows=("lung", "mediastinum")),
                                split="train=1.0", progress=False))
    m = res.manifest
    assert res.exit_code == 0 and m["mode"] == "slice" and m["channels"] == 2 and m["image_dtype"] == "float32"
    assert m["preprocessing"]["intensity"] == "window"
    assert m["preprocessing"]["windows"] == [[1500.0, -600.0], [350.0, 50.0]]
    assert m["splits"]["train"]["examples"] == 4
    recs = _records(tmp_path / "out", "train")
    for r in recs.values():
        img = r["image"].numpy()
        assert img.shape == (16, 16, 2) and img.min() >= 0 and img.max() <= 1


def test_two_workers_byte_identical_to_one(tmp_path):
    _dataset(tmp_path / "in", n_patients=5, n_slices=2)
    outs = []
    for w in (1, 2):
        out = tmp_path / f"out{w}"
        convert(ConvertConfig(keep_paths=True, inputs=(str(tmp_path / "in"),), output=str(out), mode="slice", workers=w,
                              labels=str(tmp_path / "labels.csv"), progress=False, shard_mb=0.002))
        outs.append(_outputs(out))
    assert outs[0] == outs[1]
    assert sum(1 for n in outs[0] if n.endswith(".tfrecord")) > 3  # several shards per split


def test_kill_9_then_resume_is_byte_identical(tmp_path):
    """A real SIGKILL in the middle of a run, then --resume, equals an uninterrupted run."""
    for p in range(30):
        fac.write_single(tmp_path / "in" / f"p{p:02d}.dcm", f"PID-{p}", seed=p, shape=(160, 160))
    ref = tmp_path / "ref"
    convert(ConvertConfig(inputs=(str(tmp_path / "in"),), output=str(ref), progress=False))
    out = tmp_path / "out"
    env = dict(os.environ, MEDTF_PSEUDONYM_KEY=KEY)
    cmd = [sys.executable, "-m", "medtf.cli.tfrecord_convert", str(tmp_path / "in"), "--output", str(out),
           "--no-progress", "--shard-mb", "256"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    units = out / ".work"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if units.is_dir() and sum(p.read_bytes().count(b"\n") for p in units.glob("*.jsonl")) >= 5:
            break
        time.sleep(0.005)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if killed:
        assert not (out / "manifest.json").exists()
    rc = subprocess.run(cmd + ["--resume"], env=env, capture_output=True).returncode
    assert rc == 0
    assert _outputs(out) == _outputs(ref)
    assert not (out / ".work").exists()
    # without --resume an existing dataset is refused (usage error)
    with pytest.raises(ConvertError, match="--resume"):
        convert(ConvertConfig(keep_paths=True, inputs=(str(tmp_path / "in"),), output=str(out), progress=False))


def test_malformed_inputs_rejected_with_reasons_good_ones_convert(tmp_path):
    inp = tmp_path / "in"
    for p in range(3):
        fac.write_single(inp / f"good{p}.dcm", f"PID-{p}", seed=p)
    (inp / "empty.dcm").write_bytes(b"")
    (inp / "random.dcm").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    fac.write_single(inp / "truncated.dcm", "PID-9", seed=9)  # its own series, then cut short
    good = (inp / "truncated.dcm").read_bytes()
    (inp / "truncated.dcm").write_bytes(good[: len(good) - 300])
    nopix = fac.ct_slice(np.zeros((4, 4), np.uint16), patient_id="X", series_uid="1.2.3", z=0)
    del nopix.PixelData
    fac.save(nopix, inp / "nopixels.dcm")
    huge = fac.ct_slice(np.zeros((4, 4), np.uint16), patient_id="X", series_uid="1.2.4", z=0)
    huge.Rows, huge.Columns, huge.NumberOfFrames = 65535, 65535, 9999
    fac.save(huge, inp / "absurd.dcm")
    (inp / "notes.txt").write_text("not an image\n")
    res = convert(ConvertConfig(keep_paths=True, inputs=(str(inp),), output=str(tmp_path / "out"), split="train=1.0",
                                progress=False))
    assert res.exit_code == 1
    files = {f["path"]: f for f in res.manifest["files"]}
    assert {p for p, f in files.items() if f["outcome"] == "converted"} == {"good0.dcm", "good1.dcm", "good2.dcm"}
    for bad in ("empty.dcm", "random.dcm", "truncated.dcm", "nopixels.dcm", "absurd.dcm", "notes.txt"):
        assert files[bad]["outcome"] == "rejected" and len(files[bad]["reason"]) > 5, files[bad]
    assert res.manifest["splits"]["train"]["examples"] == 3


def test_nothing_converted_is_exit_3_and_bad_options_raise(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x")
    res = convert(ConvertConfig(keep_paths=True, inputs=(str(tmp_path / "in"),), output=str(tmp_path / "out"), progress=False))
    assert res.exit_code == 3 and res.manifest["counts"]["rejected_files"] == 1
    with pytest.raises(ConvertError, match="--split"):
        ConvertConfig(keep_paths=True, inputs=("x",), output="y", split="0.5,0.6")
    with pytest.raises(ConvertError, match="no such file"):
        convert(ConvertConfig(keep_paths=True, inputs=(str(tmp_path / "missing"),), output=str(tmp_path / "o2"), progress=False))


def test_labels_csv_missing_entry_rejects_that_file(tmp_path):
    inp = tmp_path / "in"
    for p in range(3):
        fac.write_single(inp / f"s{p}.dcm", f"PID-{p}", seed=p)
    (tmp_path / "l.csv").write_text("path,effusion,nodule,split\ns0.dcm,1,0,train\ns1.dcm,1,1,test\n")
    res = convert(ConvertConfig(keep_paths=True, inputs=(str(inp),), output=str(tmp_path / "out"), labels=str(tmp_path / "l.csv"),
                                progress=False))
    files = {f["path"]: f for f in res.manifest["files"]}
    assert files["s2.dcm"] == {"path": "s2.dcm", "outcome": "rejected", "reason": "not listed in the labels CSV",
                               "unit": "s2.dcm"}
    assert res.exit_code == 1 and res.manifest["multilabel"] and res.manifest["label_names"] == ["effusion", "nodule"]
    assert files["s0.dcm"]["split"] == "train" and files["s1.dcm"]["split"] == "test"  # CSV split column
    rec = _records(tmp_path / "out", "test")["s1.dcm"]
    assert rec["label"].numpy().tolist() == [1, 1]
    assert res.manifest["splits"]["test"]["labels"] == {"0": 1, "1": 1}
