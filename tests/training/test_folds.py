"""Patient-grouped K-fold: no patient leaks across folds; folds.json statistics and the fold ensemble."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training_helpers import make_records, tiny_config_dict
from medtf.training.config import TrainConfig
from medtf.training.folds import patient_folds, read_keys, train_folds

pytestmark = pytest.mark.filterwarnings("ignore")


def test_patient_folds_group_patients_and_stratify():
    rng = np.random.default_rng(0)
    patients = [f"p{i // 3}" for i in range(90)]  # 30 patients, 3 images each
    labels = np.repeat(rng.integers(0, 2, 30), 3)
    assign = patient_folds(patients, labels, 5, seed=1)
    assert set(assign.tolist()) == set(range(5))
    for p in set(patients):
        assert len({assign[i] for i, q in enumerate(patients) if q == p}) == 1
    sizes = np.bincount(assign)
    assert sizes.min() >= 12 and sizes.max() <= 24
    assert np.array_equal(assign, patient_folds(patients, labels, 5, seed=1))  # seeded
    with pytest.raises(ValueError, match="at least 40 patients"):
        patient_folds(patients, labels, 40)


def test_train_folds_writes_folds_json_and_ensemble(tmp_path):
    import keras

    records = make_records(tmp_path / "records", n_train=24, n_val=12, n_test=12, per_patient=3)
    cfg = TrainConfig.from_dict(tiny_config_dict(records, tmp_path / "runs", epochs=1, run_name="cv"))
    path = train_folds(cfg.replace(folds=3))
    res = json.loads(path.read_text())
    run = path.parent
    assert res["k"] == 3 and len(res["folds"]) == 3
    # every train+val example in exactly one validation fold, no patient in two folds
    patients, _, _ = read_keys(records, ["train", "val"])
    seen = {}
    total = 0
    for f in range(3):
        fp, _, _ = read_keys(run / "folds" / f"fold{f}" / "records", ["val"])
        tp, _, _ = read_keys(run / "folds" / f"fold{f}" / "records", ["train"])
        assert not set(fp) & set(tp)
        assert len(fp) + len(tp) == 36
        for p in set(fp):
            assert p not in seen
            seen[p] = f
        total += len(fp)
        assert res["folds"][f]["val_examples"] == len(fp)
    assert total == 36 and set(seen) == set(patients)
    # mean ± sd are those of the per-fold values
    vals = [pf["metrics"]["val_auc"] for pf in res["folds"]]
    assert res["summary"]["val_auc"]["mean"] == pytest.approx(np.mean(vals))
    assert res["summary"]["val_auc"]["sd"] == pytest.approx(np.std(vals, ddof=1))
    # the ensemble is the mean of the fold models' test probabilities; AUC from sklearn
    npz = np.load(run / "test_predictions.npz")
    np.testing.assert_allclose(npz["ensemble"], npz["folds"].mean(0), atol=1e-7)
    assert npz["ensemble"].shape[0] == 12
    m0 = keras.saving.load_model(str(run / "folds" / "fold0" / "model.keras"), compile=False)
    assert m0 is not None
    y = npz["y_true"].reshape(12, -1)[:, 0]
    assert res["ensemble"]["metrics"]["auc"] == pytest.approx(roc_auc_score(y, npz["ensemble"][:, 0]))
