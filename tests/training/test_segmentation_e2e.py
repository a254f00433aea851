"""End to end for segmentation: records with masks → ``medtf train`` (U-Net, Dice + CE) → ``evaluate_run``.

The images hold bright squares on noise and the mask is the square, so a 2-level U-Net learns it in a few
dozen steps; the test checks the whole path (mask records, one-hot masks, the segmentation metrics and
the run folder) and that the Dice reported by ``evaluate_run`` is the Dice of the saved model's
predictions (NumPy, tolerance 1e-6).
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

# tests/data/_records.py under its own name: a bare ``_records`` on sys.path would shadow data_tools/_records.py
_spec = importlib.util.spec_from_file_location("medtf_test_data_records",
                                               pathlib.Path(__file__).resolve().parents[1] / "data" / "_records.py")
_records = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_records)
write_records = _records.write_records
square_masks = _records.square_masks

pytestmark = pytest.mark.filterwarnings("ignore")


def test_train_and_evaluate_a_segmentation_run(tmp_path):
    from medtf.evaluation.evaluate import evaluate_run
    from medtf.training.config import TrainConfig
    from medtf.training.run import RunInfo, load_model
    from medtf.training.trainer import train

    splits = {"train": square_masks(48, seed=0, squares=2), "val": square_masks(8, seed=1, squares=2),
              "test": square_masks(8, seed=2, squares=2)}
    rec = write_records(tmp_path / "rec", splits, label_names=["background", "square"])
    cfg = TrainConfig.from_dict({
        "records": str(rec), "task": "segmentation",
        "model": {"name": "unet", "bn_momentum": 0.5,
                  "kwargs": {"input_shape": [None, None, 1], "num_classes": 2, "depth": 2, "base_filters": 8}},
        "data": {"batch_size": 8, "num_classes": 2, "label_mode": "mask",
                 "preprocessing": {"intensity": "scale", "scale": 255.0}},
        "loss": {"name": "dice_ce"}, "optimizer": {"learning_rate": 0.01}, "epochs": 6, "seed": 0,
        "monitor": "val_loss", "output_dir": str(tmp_path / "runs"), "run_name": "seg", "tensorboard": False,
        "verbose": 0})
    run = pathlib.Path(train(cfg))
    info = RunInfo.load(run)
    assert info.task == "segmentation" and {"model.keras", "model.json", "history.csv"} <= {p.name for p in run.iterdir()}

    rep = evaluate_run(run, "test", out_dir=tmp_path / "report", progress=False)
    assert rep["n"] == 8 and (tmp_path / "report" / "report.html").exists()
    dice = rep["metrics"]["per_class"]["square"]["dice"]["mean"]
    assert dice > 0.7  # a learnt model, not a constant map (an all-background prediction scores 0)

    model = load_model(run)
    per_case = []
    for img, _, mask in square_masks(8, seed=2, squares=2):
        pred = np.asarray(model.predict_on_batch(img[None].astype(np.float32) / 255.0))[0].argmax(-1)
        inter = float(((pred == 1) & (mask == 1)).sum())
        per_case.append(2 * inter / float((pred == 1).sum() + (mask == 1).sum()))
    assert dice == pytest.approx(np.mean(per_case), abs=1e-6)  # mean of per-case Dice
