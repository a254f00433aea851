"""⑦ Evaluation: clinical metrics with confidence intervals, reports (JSON/PNG/HTML), Grad-CAM.

``medtf.evaluation.metrics`` is NumPy/SciPy only; ``evaluate_run``/``grad_cam`` import TensorFlow
when called. Importing this package is cheap (PEP 562 lazy re-exports).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "evaluate_predictions": "medtf.evaluation.evaluate",
    "evaluate_segmentation": "medtf.evaluation.evaluate",
    "evaluate_run": "medtf.evaluation.evaluate",
    "write_report": "medtf.evaluation.report",
    "grad_cam": "medtf.evaluation.explain",
    "find_target_layer": "medtf.evaluation.explain",
    "save_overlay": "medtf.evaluation.explain",
    "explain_images": "medtf.evaluation.explain",
    "explain_run": "medtf.evaluation.explain",
}

__all__ = ["metrics", *_LAZY]


def __getattr__(name):
    if name == "metrics":
        return importlib.import_module("medtf.evaluation.metrics")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medtf.evaluation' has no attribute {name!r}")
