"""④ Keras functional model builders and the name registry recipes use.

Builders live in private modules (`_unet.py`...) so that the public names `medtf.models.unet` etc. are the
builder functions, not modules.

``medtf.models.build(name, **kwargs)`` / ``get_builder(name)`` / ``available()`` / ``@register(name)``.
Importing this package does not import TensorFlow; builders load on first use (PEP 562).
"""

from __future__ import annotations

import importlib

from medtf.models.registry import available, build, get_builder, register

_LAZY = {
    "apply_head": "medtf.models.heads",
    "TASKS": "medtf.models.heads",
    "set_batchnorm_momentum": "medtf.models._common",
    "efficientnet": "medtf.models._efficientnet",
    "EFFICIENTNET_VARIANTS": "medtf.models._efficientnet",
    "densenet3d_cbam": "medtf.models._densenet3d",
    "xception_multiscale": "medtf.models._xception",
    "unet": "medtf.models._unet",
    "resnet3d": "medtf.models._resnet3d",
    "attention_mil": "medtf.models._mil",
    "restoration_unet": "medtf.models._restoration",
    "simple_cnn": "medtf.models._simple",
}

__all__ = ["available", "build", "get_builder", "register", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medtf.models' has no attribute {name!r}")
