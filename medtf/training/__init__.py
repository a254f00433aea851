"""④ Training: config (YAML → dataclasses), losses, precision policy, schedules, callbacks, trainer, K-fold.

Cheap to import: ``medtf.training.run`` / ``.config`` / ``.precision`` load without TensorFlow, and the
names below are resolved lazily (PEP 562).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "RunInfo": "medtf.training.run",
    "load_model": "medtf.training.run",
    "TrainConfig": "medtf.training.config",
    "ModelConfig": "medtf.training.config",
    "LossConfig": "medtf.training.config",
    "OptimizerConfig": "medtf.training.config",
    "ScheduleConfig": "medtf.training.config",
    "load_config": "medtf.training.config",
    "select_policy": "medtf.training.precision",
    "apply_policy": "medtf.training.precision",
    "get_loss": "medtf.training.losses",
    "train": "medtf.training.trainer",
    "train_folds": "medtf.training.folds",
    "DistillConfig": "medtf.training.config",
    "distill": "medtf.training.distill",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'medtf.training' has no attribute {name!r}")
