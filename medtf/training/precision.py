"""The one place that decides the Keras dtype policy.

float32 on CPU unless asked otherwise; mixed_float16 when a GPU is visible; bfloat16 variants on request.
"""

from __future__ import annotations

import warnings

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16", "bfloat16", "float16")
_ALIASES = {None: "auto", "": "auto", "auto": "auto", "fp32": "float32", "fp16": "mixed_float16",
            "mixed": "mixed_float16", "bf16": "mixed_bfloat16"}


def gpu_available() -> bool:
    """True when TensorFlow sees at least one GPU."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def select_policy(requested: str | None = None, *, gpu: bool | None = None) -> str:
    """Choose the Keras dtype policy name.

    Args:
        requested: None / "auto" (hardware decides), or one of :data:`POLICIES` (aliases fp32, fp16,
            bf16, mixed accepted).
        gpu: override GPU detection (tests); None detects with TensorFlow.

    Returns:
        A policy name accepted by ``keras.mixed_precision.set_global_policy``: "float32" on CPU,
        "mixed_float16" on GPU when not requested otherwise, or the requested policy.

    Raises:
        ValueError: unknown policy name.
    """
    key = requested.strip().lower() if isinstance(requested, str) else requested
    name = _ALIASES.get(key, key)
    if name != "auto" and name not in POLICIES:
        raise ValueError(f"precision must be 'auto' or one of {POLICIES}. Received: {requested!r}")
    if gpu is None:
        gpu = gpu_available()
    if name == "auto":
        return "mixed_float16" if gpu else "float32"
    if name in ("mixed_float16", "float16") and not gpu:
        warnings.warn(
            f"precision {name!r} requested but no GPU is visible: float16 on CPU is slow and may lose "
            "accuracy; use 'float32' (or 'mixed_bfloat16' on CPUs with bf16 support).",
            RuntimeWarning,
            stacklevel=2,
        )
    return name


def apply_policy(name: str) -> str:
    """Set the global Keras dtype policy; returns the name. Call :func:`select_policy` first."""
    import keras

    if name not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}. Received: {name!r}")
    keras.mixed_precision.set_global_policy(name)
    return name
