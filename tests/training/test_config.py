"""TrainConfig YAML round trip, --set overrides, unknown keys; schedule and threshold helpers."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from medtf.training.config import TrainConfig, apply_overrides, load_config, parse_overrides
from medtf.training.schedules import make_schedule
from medtf.training.thresholds import choose_threshold

YAML = """
records: data/records
task: multiclass
model: {name: simple_cnn, kwargs: {filters: [8, 16]}}
data: {batch_size: 16, label_mode: onehot, preprocessing: {intensity: window, windows: [[400, 40]]}}
loss: {name: focal, class_weights: [1, 2, 3], kwargs: {gamma: 1.5}}
optimizer: {learning_rate: 0.001, clipnorm: 0.5}
schedule: {warmup_epochs: 2}
epochs: 7
monitor: val_accuracy
"""


def test_yaml_round_trip_and_relative_paths(tmp_path):
    (tmp_path / "train.yaml").write_text(YAML)
    c = load_config(tmp_path / "train.yaml")
    assert c.records == str((tmp_path / "data" / "records").resolve())
    assert c.data.batch_size == 16 and c.data.preprocessing.windows == ((400.0, 40.0),)
    assert c.loss.class_weights == (1.0, 2.0, 3.0) and c.loss.kwargs == {"gamma": 1.5}
    assert c.model.kwargs == {"filters": [8, 16]}
    again = TrainConfig.from_yaml(c.to_yaml())
    assert again == c
    assert yaml.safe_load(c.to_yaml())["optimizer"]["clipnorm"] == 0.5


def test_set_overrides_are_yaml_typed(tmp_path):
    (tmp_path / "train.yaml").write_text(YAML)
    c = load_config(tmp_path / "train.yaml", ["optimizer.learning_rate=3e-4", "epochs=2", "data.batch_size=4",
                                              "loss.class_weights=[1, 1, 1]", "early_stopping_patience=null",
                                              "model.kwargs.dropout=0.25", "precision=mixed_bfloat16"])
    assert c.optimizer.learning_rate == pytest.approx(3e-4)
    assert c.epochs == 2 and c.data.batch_size == 4
    assert c.loss.class_weights == (1.0, 1.0, 1.0)
    assert c.early_stopping_patience is None
    assert c.model.kwargs == {"filters": [8, 16], "dropout": 0.25}
    assert c.precision == "mixed_bfloat16"
    assert parse_overrides(["a.b=true"]) == [(["a", "b"], True)]
    assert apply_overrides({"a": {"b": 1}}, ["a.c=x"]) == {"a": {"b": 1, "c": "x"}}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["epochs"])


@pytest.mark.parametrize(
    "bad, key",
    [({"epoch": 3}, "'epoch'"), ({"optimizer": {"lr": 1}}, "'optimizer.lr'"), ({"model": {"nme": "x"}}, "'model.nme'"),
     ({"data": {"batchsize": 3}}, "batchsize"), ({"schedule": {"warmup": 1}}, "'schedule.warmup'")],
)
def test_unknown_keys_are_named(bad, key):
    with pytest.raises(ValueError, match=key):
        TrainConfig.from_dict(bad)


def test_invalid_values():
    with pytest.raises(ValueError, match="task"):
        TrainConfig(task="regression")
    with pytest.raises(ValueError, match="threshold"):
        TrainConfig(threshold="f1")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_dict({"optimizer": {"learning_rate": 0}})
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_config("nowhere.yaml")
    with pytest.raises(ValueError, match="ema_momentum"):
        TrainConfig.from_dict({"optimizer": {"ema_momentum": 1.0}})
    with pytest.raises(ValueError, match="bn_momentum"):
        TrainConfig.from_dict({"model": {"bn_momentum": 1.5}})


def test_model_bn_momentum_reaches_every_batchnorm_and_round_trips():
    import keras

    from medtf.training.trainer import build_model

    cfg = TrainConfig.from_dict({"task": "binary", "data": {"num_classes": 2},
                                 "model": {"name": "densenet3d_cbam", "bn_momentum": 0.9,
                                           "kwargs": {"growth_rate": 4, "block_config": [1, 1]}}})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    model = build_model(cfg, (16, 16, 16, 1))
    bns = [la for la in model._flatten_layers() if isinstance(la, keras.layers.BatchNormalization)]
    assert len(bns) > 3 and {la.momentum for la in bns} == {0.9}
    rebuilt = keras.Model.from_config(model.get_config())
    assert {la.momentum for la in rebuilt._flatten_layers() if isinstance(la, keras.layers.BatchNormalization)} == {0.9}


def test_ema_checkpoint_saves_the_averaged_weights(tmp_path):
    """With ``optimizer.ema_momentum`` the best checkpoint holds the optimizer's moving averages (Keras'
    ``use_ema``) while training goes on with the raw weights; ``ema_weights`` swaps them in and back."""
    import keras

    from medtf.training import callbacks as cb
    from medtf.training.schedules import make_optimizer

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    opt_cfg = TrainConfig.from_dict({"optimizer": {"ema_momentum": 0.5}}).optimizer
    model.compile(make_optimizer(opt_cfg, 0.1), "mse")
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == 0.5
    assert cb.defer_ema_finalize(model)
    x = np.random.default_rng(0).uniform(size=(32, 4)).astype("float32")
    check = cb.ResumableModelCheckpoint(str(tmp_path / "m.keras"), tmp_path / "h.csv", "min", monitor="loss")
    model.fit(x, x.sum(1, keepdims=True), epochs=1, batch_size=8, verbose=0, callbacks=[check])
    raw = model.get_weights()
    avg = [np.asarray(v) for v in model.optimizer._model_variables_moving_average]
    saved = keras.saving.load_model(str(tmp_path / "m.keras"), compile=False).get_weights()
    for s, a, r in zip(saved, avg, raw):
        np.testing.assert_allclose(s, a, rtol=0, atol=0)
        assert not np.allclose(s, r)
    with cb.ema_weights(model):
        for w, a in zip(model.get_weights(), avg):
            np.testing.assert_array_equal(w, a)
    for w, r in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(w, r)


def test_warmup_cosine_schedule_values():
    c = TrainConfig.from_dict({"schedule": {"warmup_epochs": 1, "alpha": 0.1}}).schedule
    s = make_schedule(c, 1e-2, steps_per_epoch=10, epochs=5)
    lr = np.array([float(s(i)) for i in range(51)])
    np.testing.assert_allclose(lr[:11], np.linspace(0, 1e-2, 11), rtol=1e-5, atol=1e-9)  # linear warmup
    t = np.arange(10, 51) - 10
    ref = 1e-2 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t / 40)))
    np.testing.assert_allclose(lr[10:], ref, rtol=1e-5)
    const = make_schedule(TrainConfig.from_dict({"schedule": {"name": "constant"}}).schedule, 1e-3,
                          steps_per_epoch=10, epochs=2)
    assert const == pytest.approx(1e-3)


def test_choose_threshold_youden_and_sensitivity():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    thr = choose_threshold(y, s)
    fpr, tpr, t = roc_curve(y, s)
    j = tpr - fpr
    pred = s >= thr
    sens, spec = pred[y == 1].mean(), (~pred[y == 0]).mean()
    assert sens + spec - 1 == pytest.approx(j.max())
    t90 = choose_threshold(y, s, "sensitivity:0.9")
    assert (s[y == 1] >= t90).mean() >= 0.9
    assert (s[y == 1] >= t90 + 1e-9).mean() < 0.9 or t90 == s.max()  # the highest such threshold
    assert choose_threshold(np.ones(5), np.linspace(0, 1, 5)) == 0.5


def test_train_rejects_unknown_monitor_and_missing_records(tiny_records, tmp_path):
    from training_helpers import tiny_config_dict
    from medtf.training.trainer import train

    bad = TrainConfig.from_dict(tiny_config_dict(tiny_records, tmp_path / "runs", monitor="val_dice"))
    with pytest.raises(ValueError, match="val_dice.*val_auc"):
        train(bad)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        train(TrainConfig.from_dict(tiny_config_dict(tmp_path / "nowhere", tmp_path / "runs")))
