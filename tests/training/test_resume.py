"""Kill training mid-epoch (a test hook calls ``os._exit(137)``, like SIGKILL), ``--resume``, and end with
the same model and validation metrics as an uninterrupted run.

Tolerance: weights and every validation metric within 1e-6 absolute (CPU, deterministic ops). The
training-set averages of the interrupted epoch are not compared: after a resume Keras averages only the
batches run after the restart.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from training_helpers import make_records, tiny_config_dict

pytestmark = pytest.mark.filterwarnings("ignore")


def _medtf(args, env_extra=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "medtf.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def _history(run):
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("ema", [None, 0.9], ids=["raw", "ema"])
def test_kill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, ema):
    import keras

    records = make_records(tmp_path / "records", n_train=48, n_val=16, n_test=0)
    cfg = tiny_config_dict(records, tmp_path / "runs", epochs=3, backup_every_steps=2, deterministic_ops=True)
    if ema:  # the weight averages travel in the backup and fit() must not overwrite the weights between phases
        cfg["optimizer"]["ema_momentum"] = ema
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    conf = str(tmp_path / "train.yaml")

    full = _medtf(["train", conf, "--set", "run_name=full"])
    assert full.returncode == 0, full.stderr[-3000:]

    # 48 examples / batch 8 = 6 steps per epoch; die after 9 batches: mid-epoch 2, last backup after batch 8
    killed = _medtf(["train", conf, "--set", "run_name=resumed"], {"MEDTF_TEST_INTERRUPT_AFTER_BATCHES": "9"})
    assert killed.returncode == 137, killed.stderr[-3000:]
    run = tmp_path / "runs" / "resumed"
    assert (run / "checkpoints" / "backup" / "state.json").exists()
    assert not (run / "model.json").exists()
    assert len(_history(run)) == 1  # one epoch finished before the kill

    # without --resume the interrupted run is protected
    again = _medtf(["train", conf, "--set", "run_name=resumed"])
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = _medtf(["train", conf, "--set", "run_name=resumed", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming resumed at epoch 2, batch 2" in resumed.stderr
    assert not (run / "checkpoints" / "backup").exists()

    h_full, h_res = _history(tmp_path / "runs" / "full"), _history(run)
    assert [r["epoch"] for r in h_res] == ["0", "1", "2"]
    for a, b in zip(h_full, h_res):
        for k in a:
            if k.startswith("val_"):
                assert float(b[k]) == pytest.approx(float(a[k]), abs=1e-6), (a["epoch"], k)
    assert float(h_res[0]["loss"]) == pytest.approx(float(h_full[0]["loss"]), abs=1e-6)  # before the kill
    assert float(h_res[2]["loss"]) == pytest.approx(float(h_full[2]["loss"]), abs=1e-6)  # whole epoch after

    w_full = keras.saving.load_model(str(tmp_path / "runs" / "full" / "model.keras"), compile=False).get_weights()
    w_res = keras.saving.load_model(str(run / "model.keras"), compile=False).get_weights()
    for a, b in zip(w_full, w_res):
        np.testing.assert_allclose(b, a, atol=1e-6, rtol=0)
