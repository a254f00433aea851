"""``tfrecord-convert --runner beam``: Apache Beam's DirectRunner in multi-process mode (2 worker processes)
gives the local converter's output — examples, splits, pseudonyms, manifest entries — on generated DICOM and
PNG files with good and bad ones; the key reaches the workers as a file only; re-running with ``--resume``
re-uses converted units and skips finished shards; CLI exit codes."""

from __future__ import annotations

import json
import os
import pathlib

import cv2
import numpy as np
import pytest

import records_dicom_factory as fac

if os.environ.get("CI") == "true":  # CI installs medtf[all], which includes the beam extra: run, never skip
    import apache_beam  # noqa: F401
else:
    pytest.importorskip("apache_beam", reason="Apache Beam is not installed (pip install medtf[beam])")

from medtf.io import Pseudonymizer  # noqa: E402
from medtf.records.beam import convert_beam, prepare_job  # noqa: E402
from medtf.records.convert import ConvertConfig, ConvertError, convert  # noqa: E402

KEY = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978"


def _dataset(root: pathlib.Path) -> dict:
    """Series, single images (several per patient), PNGs (uint8: re-encoded to the dataset's int16), bad files,
    one file missing from the labels CSV. Returns {relative path: patient ID} of the DICOM files."""
    inp = root / "in"
    patients, rows = {}, ["path,label"]
    for p in range(3):
        _, paths = fac.write_series(inp / f"series{p}", f"PID-S{p}", n_slices=2, seed=p)
        patients.update({f"series{p}/{q.name}": f"PID-S{p}" for q in paths})
        rows.append(f"series{p},{p % 2}")
    for i in range(8):
        name = f"single{i}.dcm"
        fac.write_single(inp / name, f"PID-{i % 4}", seed=10 + i)
        patients[name] = f"PID-{i % 4}"
        rows.append(f"{name},{i % 2}")
    for i in range(2):
        cv2.imwrite(str(inp / f"photo{i}.png"), np.random.default_rng(i).integers(0, 255, (16, 16), dtype=np.uint8))
        rows.append(f"photo{i}.png,1")
    fac.write_single(inp / "unlisted.dcm", "PID-9", seed=99)
    (inp / "empty.dcm").write_bytes(b"")
    (inp / "noise.dcm").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    fac.write_single(inp / "truncated.dcm", "PID-8", seed=98)
    rows.append("truncated.dcm,0")
    good = (inp / "truncated.dcm").read_bytes()
    (inp / "truncated.dcm").write_bytes(good[: len(good) - 300])
    (inp / "notes.txt").write_text("not an image\n")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "site.key").write_text(KEY + "\n")
    return patients


def _config(root, out, **kw) -> ConvertConfig:
    args = dict(inputs=(str(root / "in"),), output=str(out), labels=str(root / "labels.csv"), mode="slice",
                workers=2, key_file=str(root / "site.key"), shard_mb=0.002, progress=False, keep_paths=True)
    args.update(kw)
    return ConvertConfig(**args)


def _outputs(out: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != "convert_stats.json"}


def _parsed(out: pathlib.Path) -> dict[str, dict]:
    """Every record, parsed by the public reader, keyed by its source key."""
    from medtf.records import load, read_manifest

    rows = {}
    for split in read_manifest(out)["splits"]:
        for r in load(out, split):
            key = r["source"].numpy().decode()
            assert key not in rows
            rows[key] = {"split": split, **{k: np.asarray(v.numpy()).tolist() for k, v in r.items()}}
    return sorted(rows.items())


def _job_graph_bytes(pipeline) -> bytes:
    """The job graph as a runner receives it, with every pickled function and DoFn decompressed."""
    import base64
    import bz2
    import zlib

    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    proto = pipeline.to_runner_api()
    blobs = [proto.SerializeToString()]
    for transform in proto.components.transforms.values():
        if transform.spec.urn == common_urns.primitives.PAR_DO.urn:
            packed = base64.b64decode(beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).do_fn.payload)
            blobs.append(zlib.decompress(packed) if packed[:1] == b"x" else bz2.decompress(packed))
    return b"".join(blobs)


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("MEDTF_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("MEDTF_PSEUDONYM_KEY_FILE", raising=False)


def test_direct_runner_two_processes_gives_the_local_output(tmp_path):
    patients = _dataset(tmp_path)
    local = convert(_config(tmp_path, tmp_path / "local"))
    beam = convert_beam(_config(tmp_path, tmp_path / "beam", keep_work=True))
    assert local.exit_code == beam.exit_code == 1  # some inputs rejected, the run finished

    # the same examples, compared parsed and sorted by source key (image, label, patient, geometry, ...)
    ours, theirs = _parsed(tmp_path / "local"), _parsed(tmp_path / "beam")
    assert [k for k, _ in ours] == [k for k, _ in theirs] and len(ours) == 3 * 2 + 8 + 2
    assert ours == theirs
    # the same splits, patient-grouped; pseudonyms keyed with the key file's secret
    m_local, m_beam = local.manifest, beam.manifest
    assert m_beam["splits"] == m_local["splits"] and set(m_beam["splits"]) == {"train", "val", "test"}
    key = Pseudonymizer.from_key_file(tmp_path / "site.key")
    split_of_patient = {}
    for src, row in theirs:
        split_of_patient.setdefault(row["patient"], set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of_patient.values())
    converted = {f["path"]: f for f in m_beam["files"] if f["outcome"] == "converted"}
    by_key = dict(theirs)
    for path, pid in patients.items():
        assert by_key[converted[path]["key"]]["patient"] == key.patient(pid).encode()
    # the same manifest entries: converted (split, key) and rejected with reasons; PNGs stored as int16
    assert m_beam["files"] == m_local["files"]
    reasons = {f["path"]: f["reason"] for f in m_beam["files"] if f["outcome"] == "rejected"}
    assert set(reasons) == {"unlisted.dcm", "empty.dcm", "noise.dcm", "truncated.dcm", "notes.txt"}
    assert reasons["unlisted.dcm"] == "not listed in the labels CSV" and reasons["empty.dcm"] == "empty file"
    assert m_beam["image_dtype"] == "int16"  # the uint8 PNGs were re-encoded by the workers, values exact
    png = cv2.imread(str(tmp_path / "in" / "photo0.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(np.asarray(by_key[converted["photo0.png"]["key"]]["image"])[..., 0], png)
    # ... which makes the whole output byte-identical (shards, manifest)
    assert _outputs(tmp_path / "beam") == _outputs(tmp_path / "local")
    assert json.loads((tmp_path / "beam" / "convert_stats.json").read_text())["runner"] == "beam"

    # the units ran in two worker processes, not in this one
    pids = {int(p.name.split("-")[1]) for p in (tmp_path / "beam" / ".work").glob("journal-*.jsonl")}
    assert len(pids) >= 2 and os.getpid() not in pids
    # the secret is in no staged or written file, and not in the job graph: only the key file's path is
    secret = [KEY.encode(), bytes.fromhex(KEY)]
    for f in (tmp_path / "beam").rglob("*"):
        if f.is_file():
            assert not any(s in f.read_bytes() for s in secret), f
    pipeline, plan, key_file = prepare_job(_config(tmp_path, tmp_path / "graph"))
    graph = _job_graph_bytes(pipeline)
    assert key_file.encode() in graph and not any(s in graph for s in secret)


def test_rerun_with_resume_reuses_units_and_skips_finished_shards(tmp_path):
    _dataset(tmp_path)
    out = tmp_path / "out"
    first = convert_beam(_config(tmp_path, out, keep_work=True, labels=None, split="0.5,0.5"))
    shards = sorted(p for p in out.glob("*.tfrecord"))
    assert first.exit_code == 1 and len(shards) >= 4
    reference = _outputs(out)
    # the job "died" after writing some shards: the manifest is not there yet, one shard is missing
    (out / "manifest.json").unlink()
    shards[1].unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in shards if p.exists()}
    journals = sorted(p.name for p in (out / ".work").glob("journal-*"))
    with pytest.raises(ConvertError, match="--resume"):  # the folder holds a run: not without --resume
        convert_beam(_config(tmp_path, out, labels=None, split="0.5,0.5"))
    again = convert_beam(_config(tmp_path, out, resume=True, keep_work=True, labels=None, split="0.5,0.5"))
    assert again.exit_code == 1 and _outputs(out) == reference
    assert sorted(p.name for p in (out / ".work").glob("journal-*")) == journals  # no unit converted again
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept  # finished shards not rewritten
    assert shards[1].exists()


def test_cli_runner_beam_exit_codes(tmp_path, monkeypatch, capsys):
    from medtf.cli import tfrecord_convert

    _dataset(tmp_path)
    base = [str(tmp_path / "in"), "--labels", str(tmp_path / "labels.csv"), "--mode", "slice", "--no-progress"]
    key = ["--key-file", str(tmp_path / "site.key")]
    assert tfrecord_convert.main(base + ["-o", str(tmp_path / "o1"), "--runner", "beam", "--workers", "2"] + key) == 1
    assert "files: 21 (16 converted, 5 rejected)" in capsys.readouterr().out
    # usage errors (2), no traceback: a malformed option, an option without the runner, a secret only in the env
    assert tfrecord_convert.main(base + ["-o", str(tmp_path / "o2"), "--runner", "beam", "--beam-option", "x"]
                                 + key) == 2
    assert "--beam-option must be KEY=VALUE" in capsys.readouterr().err
    assert tfrecord_convert.main(base + ["-o", str(tmp_path / "o3"), "--beam-option", "runner=FlinkRunner"]) == 2
    assert "needs --runner beam" in capsys.readouterr().err
    monkeypatch.setenv("MEDTF_PSEUDONYM_KEY", KEY)
    assert tfrecord_convert.main(base + ["-o", str(tmp_path / "o4"), "--runner", "beam"]) == 2
    err = capsys.readouterr().err
    assert "--key-file" in err and "Traceback" not in err and KEY not in err
    assert not (tmp_path / "o4").exists() and not (tmp_path / "o2").exists()
