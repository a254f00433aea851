"""Custom Keras layers, registered serializable under package ``medtf`` (``.keras`` files load them by name).

Importing this package is cheap; the layer modules (and Keras) load on first attribute access (PEP 562).

* :class:`ChannelAttention`, :class:`SpatialAttention`, :class:`CBAM` — convolutional block attention (2D/3D).
* :class:`AttentionGate` — additive attention gate of Attention U-Net (2D/3D).
* :class:`GatedAttentionPooling` — gated attention MIL pooling over a bag of instance embeddings.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ChannelAttention": "medtf.layers.cbam",
    "SpatialAttention": "medtf.layers.cbam",
    "CBAM": "medtf.layers.cbam",
    "AttentionGate": "medtf.layers.attention_gate",
    "GatedAttentionPooling": "medtf.layers.mil",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medtf.layers' has no attribute {name!r}")


def custom_objects() -> dict:
    """All medtf layers by class name (for ``keras.models.load_model(..., custom_objects=...)`` if needed)."""
    return {name: __getattr__(name) for name in _LAZY}
