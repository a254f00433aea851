"""Knowledge distillation (``medtf distill``, ``medtf.training.distill``).

* The soft term equals SciPy's KL divergence (``scipy.stats.entropy``) of the temperature-softened distributions
  times T², for softmax and Bernoulli (sigmoid) heads (tolerance 1e-5).
* A generated, seeded task where distillation has to help: bar orientation (horizontal vs vertical bars at random
  places on noise) with 30 % of the training labels flipped. The teacher learns the clean rule from 1,200 noisy
  examples; two identical students train on the first 64 of them (same batches, same augmentation), one on the
  labels alone and one distilled (T = 4, alpha = 0.1). Test AUC on 300 clean-labelled images (scikit-learn's
  ``roc_auc_score``): the distilled student must win by >= 0.08. Measured while designing the test (seeds 0-4 of
  the generator and the runs): plain 0.55 / 0.81 / 0.59 / 0.81 / 0.76, distilled 0.78 / 0.97 / 0.81 / 0.94 /
  0.92, margins 0.13-0.23; the test runs seed 0 (margin 0.23).
* Segmentation distillation (U-Net teacher → smaller U-Net student) runs an epoch and writes a normal run.
* Config and CLI errors: dotted keys with "did you mean", ranges, no teacher (exit 2, one line).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("medtf_test_data_records",
                                               pathlib.Path(__file__).resolve().parents[1] / "data" / "_records.py")
_records = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_records)
write_records = _records.write_records
square_masks = _records.square_masks

pytestmark = pytest.mark.filterwarnings("ignore")


# ------------------------------------------------------------------------------------------------ the loss
def test_soft_term_matches_scipy_kl():
    import tensorflow as tf
    from scipy.special import softmax
    from scipy.stats import entropy

    from medtf.training.distill import distillation_loss

    rng = np.random.default_rng(0)
    for T in (1.0, 2.5, 4.0):
        zt, zs = rng.normal(0, 3, (5, 4)), rng.normal(0, 3, (5, 4))  # logits; the heads give probabilities
        got = distillation_loss(tf.constant(softmax(zt, -1), tf.float32), tf.constant(softmax(zs, -1), tf.float32),
                                temperature=T, activation="softmax").numpy()
        want = [T * T * entropy(softmax(a / T), softmax(b / T)) for a, b in zip(zt, zs)]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        # sigmoid heads: Bernoulli KL per unit, averaged over the units
        sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
        got = distillation_loss(tf.constant(sig(zt), tf.float32), tf.constant(sig(zs), tf.float32),
                                temperature=T, activation="sigmoid").numpy()
        want = [T * T * np.mean([entropy([sig(a / T), 1 - sig(a / T)], [sig(b / T), 1 - sig(b / T)])
                                 for a, b in zip(ra, rb)]) for ra, rb in zip(zt, zs)]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    same = softmax(rng.normal(0, 2, (3, 2, 2, 5)), -1).astype("float32")  # per pixel; identical → 0
    np.testing.assert_allclose(distillation_loss(same, same, temperature=3.0, activation="softmax"), 0.0, atol=1e-5)


# ------------------------------------------------------------------------------- student beats plain student
def _bars(n, seed, noise=0.0, size=16):
    """(image, label, None) items: one bright 2×L bar on noise, label 1 = horizontal; ``noise`` of the labels
    flipped. Returns the items and the clean labels."""
    rng = np.random.default_rng(seed)
    items, clean = [], []
    for _ in range(n):
        y = int(rng.integers(0, 2))
        img = rng.integers(0, 90, (size, size, 1)).astype(np.uint8)
        length = int(rng.integers(5, 9))
        h, w = (2, length) if y else (length, 2)
        r, c = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        img[r:r + h, c:c + w, 0] = rng.integers(120, 200)
        items.append((img, 1 - y if rng.random() < noise else y, None))
        clean.append(y)
    return items, np.array(clean)


def _config(records, out, name, **over):
    d = {"records": str(records), "task": "binary",
         "model": {"name": "simple_cnn", "kwargs": {"filters": [8, 16]}},
         "data": {"batch_size": 16, "preprocessing": {"intensity": "scale", "scale": 255.0},
                  "augment": {"ops": [{"name": "flip", "p": 0.5}]}},
         "optimizer": {"learning_rate": 0.01}, "schedule": {"name": "cosine"}, "epochs": 40, "seed": 0,
         "monitor": "loss", "output_dir": str(out), "run_name": name, "tensorboard": False, "verbose": 0,
         "jit_compile": False}
    d.update(over)
    return d


def test_distilled_student_beats_the_same_student_without_teacher(tmp_path):
    from sklearn.metrics import roc_auc_score

    from medtf.training.config import TrainConfig
    from medtf.training.distill import distill
    from medtf.training.run import RunInfo, load_model
    from medtf.training.trainer import train

    big, _ = _bars(1200, 1000, noise=0.3)
    test, y_test = _bars(300, 5000)
    big_rec = write_records(tmp_path / "big", {"train": big, "test": test}, label_names=["vertical", "horizontal"])
    small_rec = write_records(tmp_path / "small", {"train": big[:64], "test": test},
                              label_names=["vertical", "horizontal"])
    runs = tmp_path / "runs"
    teacher = train(TrainConfig.from_dict(_config(big_rec, runs, "teacher", epochs=4,
                                                  model={"name": "simple_cnn", "kwargs": {"filters": [16, 32]}})))
    plain = train(TrainConfig.from_dict(_config(small_rec, runs, "plain")))
    student = distill(TrainConfig.from_dict(_config(small_rec, runs, "student",
                                                    distill={"temperature": 4.0, "alpha": 0.1})), teacher)
    x = np.stack([item[0] for item in test]).astype("float32") / 255.0

    def auc(run):
        return roc_auc_score(y_test, np.asarray(load_model(run)(x, training=False))[:, 0])

    a_teacher, a_plain, a_student = auc(teacher), auc(plain), auc(student)
    print(f"test AUC: teacher {a_teacher:.3f}, plain student {a_plain:.3f}, distilled student {a_student:.3f}")
    assert a_teacher >= 0.95, a_teacher
    assert a_student - a_plain >= 0.08, (a_plain, a_student)
    info = RunInfo.load(student)
    assert info.extra["distill"] == {"teacher": str(pathlib.Path(teacher).resolve()), "teacher_model": "simple_cnn",
                                     "teacher_input_shape": [16, 16, 1], "temperature": 4.0, "alpha": 0.1}
    assert type(load_model(student)).__name__ == "Functional"  # a plain model: evaluate / export as any run


# ------------------------------------------------------------------------------------------- segmentation
def test_segmentation_distillation_runs_an_epoch_through_the_cli(tmp_path):
    import yaml

    from medtf.cli.main import main
    from medtf.evaluation.evaluate import evaluate_run
    from medtf.training.config import TrainConfig
    from medtf.training.run import RunInfo
    from medtf.training.trainer import train

    rec = write_records(tmp_path / "rec", {"train": square_masks(32, seed=0), "val": square_masks(8, seed=1),
                                           "test": square_masks(8, seed=2)}, label_names=["background", "square"])
    teacher = train(TrainConfig.from_dict({
        "records": str(rec), "task": "segmentation",
        "model": {"name": "unet", "bn_momentum": 0.5, "kwargs": {"input_shape": [None, None, 1], "num_classes": 2,
                                                                 "depth": 2, "base_filters": 8}},
        "data": {"batch_size": 8, "num_classes": 2, "label_mode": "mask",
                 "preprocessing": {"intensity": "scale", "scale": 255.0}},
        "loss": {"name": "dice_ce"}, "optimizer": {"learning_rate": 0.01}, "epochs": 2, "seed": 0,
        "output_dir": str(tmp_path / "runs"), "run_name": "teacher", "tensorboard": False, "verbose": 0,
        "jit_compile": False}))
    # the student config names only what differs: records, task and data come from the teacher's model.json
    cfg = tmp_path / "student.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": "unet", "kwargs": {"input_shape": [None, None, 1], "num_classes": 2, "depth": 2,
                                             "base_filters": 4}},
        "loss": {"name": "dice_ce"}, "epochs": 1, "output_dir": "runs", "run_name": "student",
        "tensorboard": False, "verbose": 0, "jit_compile": False, "distill": {"temperature": 2.0, "alpha": 0.5}}))
    assert main(["distill", str(teacher), str(cfg)]) == 0
    run = tmp_path / "runs" / "student"
    info = RunInfo.load(run)
    assert info.task == "segmentation" and info.records == str(rec)
    assert info.extra["distill"]["temperature"] == 2.0
    assert info.extra["distill"]["teacher"] == str(pathlib.Path(teacher).resolve())
    hist = (run / "history.csv").read_text().splitlines()
    assert len(hist) == 2 and np.isfinite(float(hist[1].split(",")[hist[0].split(",").index("loss")]))
    rep = evaluate_run(run, "test", write=False, progress=False)  # medtf evaluate works on the student's run
    assert rep["task"] == "segmentation" and rep["n"] == 8 and 0.0 <= rep["metrics"]["mean_dice"] <= 1.0


# ------------------------------------------------------------------------------------------------ errors
def test_distill_config_is_validated_with_dotted_keys(tmp_path, capsys):
    import yaml

    from medtf.cli.main import main
    from medtf.training.config import TrainConfig, load_config

    with pytest.raises(ValueError, match=r"unknown config key 'distill.temprature' \(did you mean 'temperature'"):
        TrainConfig.from_dict({"distill": {"temprature": 2}})
    with pytest.raises(ValueError, match=r"distill.alpha must be in \[0, 1\]. Received: 1.5"):
        TrainConfig.from_dict({"distill": {"alpha": 1.5}})
    with pytest.raises(ValueError, match="distill.temperature must be > 0"):
        TrainConfig.from_dict({"distill": {"temperature": 0}})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"distill": {"temperature": 3, "teacher": "teachers/a"}}))
    c = load_config(cfg)  # a relative teacher path resolves against the file's folder; round trip through YAML
    assert c.distill.teacher == str((tmp_path / "teachers" / "a").resolve())
    assert TrainConfig.from_yaml(c.to_yaml()) == c

    cfg.write_text(yaml.safe_dump({"distill": {"alpha": 2}}))
    assert main(["distill", str(tmp_path / "no_teacher"), str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "distill.alpha must be in [0, 1]" in err and str(cfg) in err
    cfg.write_text(yaml.safe_dump({"epochs": 1}))
    assert main(["distill", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no teacher run" in err
    assert main(["distill", str(tmp_path / "no_teacher"), str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no model.json" in err and "no_teacher" in err
