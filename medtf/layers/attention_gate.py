"""Additive attention gate of Attention U-Net (Oktay et al., MIDL 2018), 2D or 3D.

Inputs ``x`` (skip features, ``(batch, *S, Cx)``) and ``g`` (gating signal from the coarser decoder level,
``(batch, *S/s, Cg)``, ``s`` = ``strides``, 1 when both have the same resolution)::

    q     = relu(θ(x) + φ(g))          θ: conv, kernel = stride = s, no bias, F_int filters
                                       φ: 1×1 conv with bias, F_int filters
    α     = σ(ψ(q))                    ψ: 1×1 conv with bias, 1 filter     → (batch, *S/s, 1)
    out   = x ⊙ upsample_nearest(α, s)

Only convolutions, add, ReLU, sigmoid, mul and nearest repetition: it converts to TFLite in 2D and 3D.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["AttentionGate"]


def _as_tuple(value, n, what):
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"AttentionGate: {what} must be an int or {n} ints, got {value}")
    return value


@keras.saving.register_keras_serializable(package="medtf")
class AttentionGate(keras.layers.Layer):
    """Gate skip features ``x`` with a coarser gating signal ``g`` (see module docstring).

    Args:
        inter_channels: ``F_int``, width of the intermediate representation.
        strides: resolution ratio between ``x`` and ``g`` (int or per-axis ints); ``None`` infers it from the
            static shapes at build time.
        return_attention: if True the layer returns ``[gated_x, alpha]`` with ``alpha`` upsampled to ``x``'s
            grid ``(batch, *S, 1)``.
        **kwargs: ``keras.layers.Layer`` arguments.

    Call args:
        inputs: ``[x, g]``.

    Returns:
        ``x ⊙ α`` (shape of ``x``), or ``[x ⊙ α, α]`` when ``return_attention``.

    Raises:
        ValueError: rank mismatch, non-integer resolution ratio, or unknown sizes with ``strides=None``.
    """

    def __init__(self, inter_channels: int, strides=None, return_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        if int(inter_channels) < 1:
            raise ValueError(f"AttentionGate: inter_channels must be >= 1, got {inter_channels}")
        self.inter_channels = int(inter_channels)
        self.strides = strides if strides is None or isinstance(strides, int) else tuple(int(s) for s in strides)
        self.return_attention = bool(return_attention)

    def _resolve_strides(self, x_shape, g_shape):
        n = len(x_shape) - 2
        if self.strides is not None:
            return _as_tuple(self.strides, n, "strides")
        out = []
        for xs, gs in zip(x_shape[1:-1], g_shape[1:-1]):
            if xs is None or gs is None:
                raise ValueError(f"AttentionGate {self.name!r}: spatial sizes unknown ({tuple(x_shape)} vs "
                                 f"{tuple(g_shape)}); pass strides= explicitly")
            if xs % gs:
                raise ValueError(f"AttentionGate {self.name!r}: x spatial size must be an integer multiple of g's, "
                                 f"got x {tuple(x_shape)} and g {tuple(g_shape)}")
            out.append(xs // gs)
        return tuple(out)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(f"AttentionGate {self.name!r}: expected inputs [x, g], got shapes {input_shape}")
        x_shape, g_shape = (tuple(s) for s in input_shape)
        if len(x_shape) != len(g_shape) or len(x_shape) not in (4, 5):
            raise ValueError(f"AttentionGate {self.name!r}: x and g must both be 2D or 3D feature maps "
                             f"(batch, *spatial, channels), got {x_shape} and {g_shape}")
        n = len(x_shape) - 2
        self._strides = self._resolve_strides(x_shape, g_shape)
        conv = keras.layers.Conv2D if n == 2 else keras.layers.Conv3D
        self.theta = conv(self.inter_channels, self._strides, strides=self._strides, padding="valid", use_bias=False,
                          dtype=self.dtype_policy, name="theta_x")
        self.phi = conv(self.inter_channels, 1, use_bias=True, dtype=self.dtype_policy, name="phi_g")
        self.psi = conv(1, 1, use_bias=True, dtype=self.dtype_policy, name="psi")
        self.theta.build(x_shape)
        self.phi.build(g_shape)
        self.psi.build(g_shape[:-1] + (self.inter_channels,))

    def call(self, inputs):
        x, g = inputs
        alpha = ops.sigmoid(self.psi(ops.relu(self.theta(x) + self.phi(g))))
        for axis, s in enumerate(self._strides, start=1):
            if s > 1:
                alpha = ops.repeat(alpha, s, axis=axis)
        gated = x * alpha
        return [gated, alpha] if self.return_attention else gated

    def compute_output_shape(self, input_shape):
        x_shape = tuple(input_shape[0])
        return [x_shape, x_shape[:-1] + (1,)] if self.return_attention else x_shape

    def get_config(self):
        config = super().get_config()
        config.update(inter_channels=self.inter_channels, strides=self.strides,
                      return_attention=self.return_attention)
        return config
