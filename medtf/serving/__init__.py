"""⑦ ``medtf serve``: a DICOM-aware inference service — TF Serving's REST API, DICOM in (STOW-RS style),
DICOM-SEG / SR out (highdicom), and the DICOMweb round trip to a PACS (dicomweb-client).

Modules: ``models`` (SavedModel / .tflite / Keras run behind one interface), ``engine`` (raw files →
predictions, as ``medtf predict``), ``dicom_out`` (SEG / SR), ``dicomweb`` (WADO-RS / STOW-RS),
``tfserving`` (TF Serving's JSON request / response format), ``multipart``, ``app`` (FastAPI routes, token,
upload limit, timeouts), ``metrics`` (Prometheus), ``logs`` (JSON lines), ``server`` (uvicorn). See
docs/serve.md. Importing ``medtf.serving`` imports neither TensorFlow nor FastAPI.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ServeConfig": "medtf.serving.app",
    "create_app": "medtf.serving.app",
    "serve": "medtf.serving.server",
    "load_model": ("medtf.serving.models", "load"),
    "ServedModel": "medtf.serving.models",
    "KerasRunModel": "medtf.serving.models",
    "predict_paths": "medtf.serving.engine",
    "segmentation": "medtf.serving.dicom_out",
    "structured_report": "medtf.serving.dicom_out",
    "predict_study": "medtf.serving.dicomweb",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'medtf.serving' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__
