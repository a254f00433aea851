"""③ tf.data pipelines. ``medtf.data.config`` is importable without TensorFlow
(edge runtime, CLI); everything else loads lazily on first attribute access (PEP 562).

Public API:
    DataConfig, AugmentConfig, OpConfig, PatchConfig   (medtf.data.config, TF-free)
    (the preprocessing spec lives in ``medtf.preprocess``)
    build_dataset, build_examples, steps_per_epoch     (medtf.data.pipeline)
    read_manifest                                      (medtf.data.parse)
    sliding_window_inference                           (medtf.data.sliding_window, NumPy)
    submodules: transforms, augment, sampling, parse, sliding_window, preview
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DataConfig": "config",
    "AugmentConfig": "config",
    "OpConfig": "config",
    "PatchConfig": "config",
    "build_dataset": "pipeline",
    "build_examples": "pipeline",
    "steps_per_epoch": "pipeline",
    "read_manifest": "parse",
    "sliding_window_inference": "sliding_window",
}
_SUBMODULES = ("config", "transforms", "augment", "sampling", "parse", "pipeline", "sliding_window", "preview")

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"medtf.data.{_EXPORTS[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"medtf.data.{name}")
    raise AttributeError(f"module 'medtf.data' has no attribute {name!r}")


def __dir__():
    return __all__
