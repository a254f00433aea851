"""Shared building blocks (internal): ``apply_*(x, ..., name=)`` helpers used by several builders."""

from __future__ import annotations

import keras

_CONV = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
CONV_T = {2: keras.layers.Conv2DTranspose, 3: keras.layers.Conv3DTranspose}
_UPSAMPLE = {2: keras.layers.UpSampling2D, 3: keras.layers.UpSampling3D}


def conv_layer(spatial_dims: int, filters: int, kernel_size, strides=1, *, name: str, use_bias: bool = False,
               padding: str = "same", **kwargs):
    """A ``Conv{1,2,3}D`` layer with He-normal init and ``same`` padding by default."""
    return _CONV[spatial_dims](filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
                               kernel_initializer=kwargs.pop("kernel_initializer", "he_normal"), name=name, **kwargs)


def apply_conv_bn_relu(x, filters: int, kernel_size=3, strides=1, *, name: str, batch_norm: bool = True,
                       activation: bool = True):
    """Conv (no bias when followed by BN) → BatchNorm → ReLU; names ``{name}_conv|_bn|_relu``."""
    n = len(x.shape) - 2
    x = conv_layer(n, filters, kernel_size, strides, use_bias=not batch_norm, name=f"{name}_conv")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def apply_bn_relu(x, *, name: str):
    """BatchNorm → ReLU (pre-activation), names ``{name}_bn`` / ``{name}_relu``."""
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def apply_upsample(x, factor: int, *, name: str, interpolation: str = "auto"):
    """Parameter-free upsampling: bilinear in 2D, nearest (repeat) in 3D (``auto``), or as requested."""
    n = len(x.shape) - 2
    if factor == 1:
        return x
    if n == 2:
        interp = "bilinear" if interpolation == "auto" else interpolation
        return keras.layers.UpSampling2D(factor, interpolation=interp, name=name)(x)
    if interpolation not in ("auto", "nearest"):
        raise ValueError(f"3D upsampling supports only nearest interpolation, got {interpolation!r}")
    return keras.layers.UpSampling3D(factor, name=name)(x)
