"""``medtf train --strategy multiworker``: two worker processes on 127.0.0.1 (free ports, one ``TF_CONFIG`` per
process) train a small CNN with ``MultiWorkerMirroredStrategy``. They end with identical weights and logs, the
global batch is split between them (the logged validation loss is the one-process loss of the final weights),
only the chief writes the run folder, and it loads with ``medtf evaluate`` like a single-worker run. Then a
worker is killed mid-epoch, the chief stops on the lost peer, every worker is restarted with ``--resume``, and
the job ends with the uninterrupted run's weights.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml

from training_helpers import make_records, tiny_config_dict

pytestmark = pytest.mark.filterwarnings("ignore")

# One worker process: the library call `medtf train` makes, plus a callback that saves what the test compares.
WORKER = r"""
import json, sys
import numpy as np, keras
from medtf.training.config import load_config
from medtf.training.trainer import load_cluster, train

conf, out, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "resume"
cluster = load_cluster(sys.argv[4]) if len(sys.argv) > 4 else None  # else $TF_CONFIG

class Record(keras.callbacks.Callback):
    logs = []
    def on_epoch_end(self, epoch, logs=None):
        self.logs.append({k: float(v) for k, v in (logs or {}).items()})
    def on_train_end(self, logs=None):
        np.savez(out + ".npz", *[np.asarray(w) for w in self.model.get_weights()])
        with open(out + ".json", "w") as f:
            json.dump({"logs": self.logs, "steps": int(self.model.optimizer.iterations.numpy())}, f)

train(load_config(conf), resume=resume, strategy="multiworker", cluster=cluster, callbacks=[Record()])
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _launch(tmp_path, tag: str, resume: bool = False, kill_worker_after: int | None = None):
    """Start worker 0 (the chief; cluster from a --cluster file) and worker 1 (cluster from $TF_CONFIG)."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    (tmp_path / "worker.py").write_text(WORKER)
    procs = []
    for i in range(2):
        spec = {"cluster": cluster, "task": {"type": "worker", "index": i}}
        tmp = tmp_path / f"tmp-{tag}-{i}"
        tmp.mkdir()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp))
        env.pop("TF_CONFIG", None)
        args = [sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "train.yaml"),
                str(tmp_path / f"{tag}-w{i}"), "resume" if resume else "fresh"]
        if i == 0:
            (tmp_path / f"cluster-{tag}.json").write_text(json.dumps(spec))
            args.append(str(tmp_path / f"cluster-{tag}.json"))
        else:
            env["TF_CONFIG"] = json.dumps(spec)
            if kill_worker_after:
                env["MEDTF_TEST_INTERRUPT_AFTER_BATCHES"] = str(kill_worker_after)
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _wait(procs, timeout=240):
    out = []
    for p in procs:
        try:
            text, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append((p.returncode, text))
    return out


def _weights(path):
    w = np.load(path)
    return [w[f"arr_{i}"] for i in range(len(w.files))]


def test_two_workers_train_in_step_and_resume_after_a_worker_is_killed(tmp_path):
    from medtf.evaluation.evaluate import evaluate_run

    records = make_records(tmp_path / "records", n_train=32, n_val=16, n_test=16)
    cfg = tiny_config_dict(records, tmp_path / "runs", epochs=2, backup_every_steps=1, deterministic_ops=True,
                           early_stopping_patience=None)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "runs" / "run"

    results = _wait(_launch(tmp_path, "full"))
    for rc, text in results:
        assert rc == 0, text[-4000:]
    w0, w1 = _weights(tmp_path / "full-w0.npz"), _weights(tmp_path / "full-w1.npz")
    assert all(np.array_equal(a, b) for a, b in zip(w0, w1))  # identical weights on both workers
    r0, r1 = (json.loads((tmp_path / f"full-w{i}.json").read_text()) for i in range(2))
    assert r0 == r1 and r0["steps"] == 2 * 4  # 32 examples / global batch 8 = 4 steps per epoch, on both
    assert set(r0["logs"][-1]) >= {"loss", "auc", "val_loss", "val_auc"}

    # only the chief wrote the run folder, complete; the worker's temporary folder is gone
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "model.keras", "model.json", "history.csv"}
    assert not (run / "checkpoints" / "backup").exists()
    assert list((tmp_path / "tmp-full-1").iterdir()) == []
    with open(run / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert len(history) == 2

    # the validation loss the workers logged (each on its part of every batch) is the one-process loss of the
    # final weights on the whole validation split: the data were split between workers, not duplicated
    import keras

    from medtf.data import build_dataset
    from medtf.training.config import load_config
    from medtf.training.trainer import resolve_config

    conf = resolve_config(load_config(tmp_path / "train.yaml"))
    model = keras.models.load_model(run / "model.keras", compile=False)
    model.set_weights(w0)
    ys, ps = [], []
    for x, y in build_dataset(conf.records, "val", conf.data, training=False, seed=conf.seed):
        ps.append(np.asarray(model(x, training=False), np.float64).reshape(-1))
        ys.append(np.asarray(y, np.float64).reshape(-1))
    y, p = np.concatenate(ys), np.clip(np.concatenate(ps), 1e-7, 1 - 1e-7)
    assert len(y) == 16
    bce = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    np.testing.assert_allclose(float(history[-1]["val_loss"]), bce, rtol=1e-4)
    np.testing.assert_allclose(r0["logs"][-1]["val_loss"], bce, rtol=1e-4)

    # the chief's run folder evaluates like a single-worker run
    report = evaluate_run(run, "test", n_boot=50, progress=False, write=False)
    assert 0.0 <= report["metrics"]["auc"]["value"] <= 1.0
    assert report["threshold"]["source"] == "model.json"  # the chief chose it on the validation split

    # kill worker 1 mid-epoch 2 (after 6 batches: 4 + 2); the chief notices the lost peer and stops with an error
    cfg["run_name"] = "killed"
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    chief, worker = _launch(tmp_path, "killed", kill_worker_after=6)
    assert worker.wait(timeout=240) == 137
    (rc, text), = _wait([chief], timeout=180)
    assert rc != 0 and "UnavailableError" in text, text[-3000:]
    state = json.loads((tmp_path / "runs" / "killed" / "checkpoints" / "backup" / "state.json").read_text())
    assert state["epoch"] == 1 and state["batch"] in (1, 2)  # mid-epoch 2: the chief's last backup
    assert not (tmp_path / "runs" / "killed" / "model.json").exists()
    # both restart with --resume from the chief's backup and end where the uninterrupted run ended
    results = _wait(_launch(tmp_path, "resumed", resume=True))
    for rc, text in results:
        assert rc == 0, text[-4000:]
    v0, v1 = _weights(tmp_path / "resumed-w0.npz"), _weights(tmp_path / "resumed-w1.npz")
    assert all(np.array_equal(a, b) for a, b in zip(v0, v1))
    for a, b in zip(v0, w0):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert (tmp_path / "runs" / "killed" / "model.json").exists()


def test_cli_strategy_usage_errors(tmp_path, monkeypatch, capsys):
    from medtf.cli.main import main

    records = make_records(tmp_path / "records", n_train=8, n_val=0, n_test=0)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(tiny_config_dict(records, tmp_path / "runs")))
    monkeypatch.delenv("TF_CONFIG", raising=False)
    conf = str(tmp_path / "train.yaml")
    assert main(["train", conf, "--strategy", "multiworker"]) == 2
    assert "TF_CONFIG" in capsys.readouterr().err
    (tmp_path / "c.json").write_text('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}')
    assert main(["train", conf, "--cluster", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert '"task" must name this process' in err and "Traceback" not in err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["train", conf, "--cluster", str(tmp_path / "bad.json")]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert main(["train", conf, "--strategy", "mirrored", "--cluster", str(tmp_path / "c.json")]) == 2
    assert main(["train", conf, "--strategy", "multiworker", "--folds", "3"]) == 2
    assert "--folds" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
