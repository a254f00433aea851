"""``restoration_unet``: image restoration (denoising, super-resolution) U-Net, 2D/3D.

``y = up(x) + body(up(x))`` (residual learning, Zhang et al. 2017 / Kim et al. 2016): the network predicts the
correction to the (pre-upsampled) input. ``up`` is parameter-free bilinear (2D) / nearest (3D) upsampling by
``scale`` (layer ``input_upsample``; identity for denoising, ``scale=1``). The body is the U-Net of
:func:`medtf.models.unet` without batch normalisation by default (BN hurts intensity fidelity in restoration)
and a linear 1×1 output (``residual``, initialised small so the untrained model is close to the identity
while gradients still reach the body), added to the input in float32 → output ``"predictions"``.
Train with L1 + (1 − SSIM) (e.g. ``0.84·(1−SSIM) + 0.16·L1``, Zhao et al. 2017).
"""

from __future__ import annotations

from typing import Sequence

import keras

from medtf.models._blocks import apply_upsample, conv_layer
from medtf.models._common import check_divisible, check_input_shape
from medtf.models._unet import UPSAMPLING, apply_unet_body
from medtf.models.registry import register

__all__ = ["restoration_unet"]


@register("restoration_unet")
def restoration_unet(spatial_dims: int = 2, input_shape: Sequence[int | None] | None = None, depth: int = 3,
                     base_filters: int = 32, scale: int = 1, residual_learning: bool = True,
                     out_channels: int | None = None, output_activation: str | None = None,
                     batch_norm: bool = False, residual: bool = True, upsampling: str = "resize",
                     name: str | None = None) -> keras.Model:
    """Restoration U-Net (denoising for ``scale=1``, super-resolution for ``scale>1``).

    Args:
        spatial_dims: 2 or 3.
        input_shape: ``(H, W, C)`` / ``(D, H, W, C)`` of the degraded image; default 256²×1 (2D) / 64³×1 (3D).
            Known sizes × ``scale`` must be divisible by ``2**depth``.
        depth: U-Net depth.
        base_filters: filters at full resolution.
        scale: integer upsampling factor (super-resolution); 1 for denoising.
        residual_learning: add the (upsampled) input to the network output.
        out_channels: output channels (default: input channels; must equal them with ``residual_learning``).
        output_activation: ``None`` (linear, default) or e.g. ``"sigmoid"`` for targets in [0, 1].
        batch_norm: batch normalisation in the body.
        residual: residual conv blocks in the body.
        upsampling: decoder upsampling, ``"transpose"`` or ``"resize"``.
        name: model name.

    Returns:
        Functional ``keras.Model`` (input ``"image"``, output ``"predictions"`` float32 of shape
        ``(*(scale·spatial), out_channels)``).

    Raises:
        ValueError: invalid arguments.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims: expected 2 or 3, got {spatial_dims!r}")
    if input_shape is None:
        input_shape = (256, 256, 1) if spatial_dims == 2 else (64, 64, 64, 1)
    shape = check_input_shape(input_shape, spatial_dims=spatial_dims)
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale: expected an int >= 1, got {scale!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth: expected an int >= 1, got {depth!r}")
    if upsampling not in UPSAMPLING:
        raise ValueError(f"upsampling: expected one of {UPSAMPLING}, got {upsampling!r}")
    out_channels = shape[-1] if out_channels is None else int(out_channels)
    if residual_learning and out_channels != shape[-1]:
        raise ValueError(f"out_channels: residual learning needs out_channels == input channels ({shape[-1]}), "
                         f"got {out_channels}")
    up_shape = tuple(None if s is None else s * scale for s in shape[:-1]) + (shape[-1],)
    check_divisible(up_shape, 2 ** depth, what=f"a depth-{depth} U-Net after x{scale} upsampling")

    inputs = keras.Input(shape, name="image")
    x = apply_upsample(inputs, scale, name="input_upsample") if scale > 1 else inputs
    features, _ = apply_unet_body(x, depth=depth, base_filters=base_filters, attention_gates=False,
                                  residual=residual, upsampling=upsampling, batch_norm=batch_norm)
    correction = conv_layer(spatial_dims, out_channels, 1, name="residual" if residual_learning else "body_out",
                            use_bias=True, kernel_initializer=(keras.initializers.VarianceScaling(0.01) if residual_learning
                                                else "glorot_uniform"),
                            dtype="float32")(features)
    if residual_learning:
        correction = keras.layers.Add(dtype="float32", name="add_input")([keras.layers.Activation(
            "linear", dtype="float32", name="input_float32")(x), correction])
    outputs = keras.layers.Activation(output_activation or "linear", dtype="float32", name="predictions")(correction)
    task = "sr" if scale > 1 else "denoise"
    return keras.Model(inputs, outputs, name=name or f"restoration_unet{spatial_dims}d_{task}")
