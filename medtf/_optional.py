"""Lazy import of optional dependencies with an install hint naming the extra."""

from __future__ import annotations

import importlib

_HINTS = {
    "ai_edge_litert": "edge",
    "tflite_runtime": "edge",
    "tf_keras": "optimize",
    "tensorflow_model_optimization": "optimize",
    "tensorflow_serving": "serving",
    "fastapi": "serving",
    "uvicorn": "serving",
    "apache_beam": "beam",
}


def require(module: str, extra: str | None = None):
    """Import ``module`` or raise ImportError telling which ``pip install medtf[extra]`` provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - message path
        extra = extra or _HINTS.get(module.split(".")[0], "all")
        raise ImportError(
            f"{module} is required for this feature; install it with `pip install medtf[{extra}]`."
        ) from exc
