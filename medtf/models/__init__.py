"""④ Keras functional model builders and the name registry recipes use.

``medtf.models.build(name, **kwargs)`` / ``get_builder(name)`` / ``available()`` / ``@register(name)``.
Importing this package does not import TensorFlow; builders load on first use (PEP 562).
"""

from __future__ import annotations

import importlib

from medtf.models.registry import available, build, get_builder, register

_LAZY = {
    "apply_head": "medtf.models.heads",
    "TASKS": "medtf.models.heads",
    "efficientnet": "medtf.models.efficientnet",
    "EFFICIENTNET_VARIANTS": "medtf.models.efficientnet",
    "densenet3d_cbam": "medtf.models.densenet3d",
    "xception_multiscale": "medtf.models.xception",
    "unet": "medtf.models.unet",
    "resnet3d": "medtf.models.resnet3d",
    "attention_mil": "medtf.models.mil",
    "restoration_unet": "medtf.models.restoration",
    "simple_cnn": "medtf.models.simple",
}

__all__ = ["available", "build", "get_builder", "register", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medtf.models' has no attribute {name!r}")
