"""⑥ Export: TF-Serving SavedModel, LiteRT/TFLite (fp32, fp16, dynamic, int8, QAT, pruning), ONNX, parity, edge.

Importing this package is cheap; submodules load on first use. ``medtf.export.edge`` and
``medtf.export.metadata`` never import TensorFlow or Keras (the edge runtime runs without them).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "export_saved_model": "medtf.export.saved_model",
    "convert": "medtf.export.litert",
    "export_tflite": "medtf.export.litert",
    "float32_model": "medtf.export.litert",
    "FORMATS": "medtf.export.litert",
    "TARGETS": "medtf.export.litert",
    "ExportError": "medtf.export.litert",
    "parity_report": "medtf.export.parity",
    "format_table": "medtf.export.parity",
    "DEFAULT_GATES": "medtf.export.parity",
    "EdgeModel": "medtf.export.edge",
    "predict_files": "medtf.export.edge",
    "benchmark": "medtf.export.edge",
    "load_metadata": "medtf.export.metadata",
    "quantization_aware_int8": "medtf.export.qat",
    "export_onnx": "medtf.export.onnx",
    "OnnxModel": "medtf.export.onnx",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'medtf.export' has no attribute {name!r}")
