"""``unet``: 2D/3D U-Net (Ronneberger et al., 2015; Çiçek et al., 2016) with optional attention gates
(Oktay et al., 2018), residual blocks and deep supervision. TFLite-convertible in 2D and 3D.

Encoder level ``i`` (0…depth): conv block with ``min(base_filters·2^i, max_filters)`` filters (two 3×3(×3)
Conv-BN-ReLU; ``residual=True`` adds a (projected) shortcut). Downsampling between levels is a stride-2 3×3(×3)
convolution (no max-pool, which has no 3D TFLite kernel). Decoder level ``i``: upsample ×2 (``"transpose"``:
``Conv*DTranspose 2 /2``; ``"resize"``: bilinear (2D) / nearest (3D) upsampling + 3×3(×3) conv), optionally gate
the skip with :class:`medtf.layers.AttentionGate` (gating signal = the coarser decoder features), concatenate,
conv block. Output: 1×1 conv → softmax (``num_classes >= 2``) or sigmoid (``num_classes == 1``), float32, named
``"predictions"``. Deep supervision adds outputs ``"aux_1"`` (one level above the output) … ``"aux_{depth-1}"``,
each upsampled to the input size, so the same target fits every output.

Layer names: ``enc{i}_*``, ``down{i}_*``, ``dec{i}_up*``, ``dec{i}_gate``, ``dec{i}_concat``, ``dec{i}_*``,
``predictions``, ``aux_k``. Spatial sizes must be divisible by ``2**depth``.
"""

from __future__ import annotations

from typing import Sequence

import keras

from medtf.layers.attention_gate import AttentionGate
from medtf.models._blocks import CONV_T, apply_conv_bn_relu, apply_upsample, conv_layer
from medtf.models._common import check_divisible, check_input_shape
from medtf.models.registry import register

#: down-sampling convolution kernel size by name
DOWNSAMPLING = {"conv3": 3, "conv2": 2}

__all__ = ["unet", "apply_conv_block", "apply_unet_body"]

UPSAMPLING = ("transpose", "resize")


def apply_conv_block(x, filters: int, *, name: str, residual: bool = False, batch_norm: bool = True,
                     dropout: float = 0.0):
    """Two 3×3(×3) Conv-BN-ReLU; with ``residual`` the second ReLU follows ``add(shortcut, conv)``."""
    n = len(x.shape) - 2
    y = apply_conv_bn_relu(x, filters, 3, name=f"{name}_1", batch_norm=batch_norm)
    if dropout:
        y = keras.layers.Dropout(dropout, name=f"{name}_dropout")(y)
    if not residual:
        return apply_conv_bn_relu(y, filters, 3, name=f"{name}_2", batch_norm=batch_norm)
    y = apply_conv_bn_relu(y, filters, 3, name=f"{name}_2", batch_norm=batch_norm, activation=False)
    shortcut = x
    if int(x.shape[-1]) != filters:
        shortcut = conv_layer(n, filters, 1, name=f"{name}_proj_conv", use_bias=not batch_norm)(x)
        if batch_norm:
            shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def apply_unet_body(x, *, depth: int, base_filters: int, max_filters: int | None = None,
                    attention_gates: bool = False, residual: bool = False, upsampling: str = "transpose",
                    batch_norm: bool = True, dropout: float = 0.0, downsampling: str = "conv3"):
    """Encoder–decoder; returns ``(finest decoder features, [coarser decoder features, level depth-1 … 1])``."""
    n = len(x.shape) - 2
    width = [min(base_filters * 2 ** i, max_filters or base_filters * 2 ** i) for i in range(depth + 1)]
    skips = []
    for i in range(depth):
        x = apply_conv_block(x, width[i], name=f"enc{i}", residual=residual, batch_norm=batch_norm)
        skips.append(x)
        x = apply_conv_bn_relu(x, width[i + 1], DOWNSAMPLING[downsampling], 2, name=f"down{i}", batch_norm=batch_norm)
    x = apply_conv_block(x, width[depth], name=f"enc{depth}", residual=residual, batch_norm=batch_norm,
                         dropout=dropout)
    decoder = []
    for i in reversed(range(depth)):
        coarse = x
        if upsampling == "transpose":
            up = CONV_T[n](width[i], 2, strides=2, padding="same", kernel_initializer="he_normal",
                            name=f"dec{i}_upconv")(coarse)
        else:
            up = apply_upsample(coarse, 2, name=f"dec{i}_upsample")
            up = conv_layer(n, width[i], 3, name=f"dec{i}_upconv", use_bias=True)(up)
        skip = skips[i]
        if attention_gates:
            skip = AttentionGate(max(1, width[i] // 2), strides=2, name=f"dec{i}_gate")([skip, coarse])
        x = keras.layers.Concatenate(name=f"dec{i}_concat")([up, skip])
        x = apply_conv_block(x, width[i], name=f"dec{i}", residual=residual, batch_norm=batch_norm)
        decoder.append(x)
    return decoder[-1], decoder[-2::-1]


def _seg_output(x, num_classes: int, name: str, upsample: int = 1):
    n = len(x.shape) - 2
    logits = conv_layer(n, num_classes, 1, name=f"{name}_logits" if upsample > 1 else name, use_bias=True,
                        kernel_initializer="glorot_uniform",
                        **({} if upsample > 1 else {"activation": "softmax" if num_classes > 1 else "sigmoid",
                                                      "dtype": "float32"}))(x)
    if upsample == 1:
        return logits
    logits = apply_upsample(logits, upsample, name=f"{name}_upsample")
    return keras.layers.Activation("softmax" if num_classes > 1 else "sigmoid", dtype="float32", name=name)(logits)


@register("unet")
def unet(spatial_dims: int = 2, input_shape: Sequence[int | None] | None = None, num_classes: int = 2,
         depth: int = 4, base_filters: int = 32, attention_gates: bool = False, deep_supervision: bool = False,
         residual: bool = False, upsampling: str = "transpose", max_filters: int | None = None,
         batch_norm: bool = True, dropout: float = 0.0, downsampling: str = "conv3",
         name: str | None = None) -> keras.Model:
    """2D/3D U-Net for segmentation.

    Args:
        spatial_dims: 2 or 3.
        input_shape: ``(H, W, C)`` / ``(D, H, W, C)``; sizes may be ``None`` but known ones must be divisible by
            ``2**depth``. Default: 256² × 1 (2D), 64³ × 1 (3D).
        num_classes: output channels: ≥ 2 → softmax over classes (background included), 1 → sigmoid.
        depth: number of downsamplings.
        base_filters: filters at full resolution (doubling per level).
        attention_gates: gate skip connections with :class:`medtf.layers.AttentionGate`.
        deep_supervision: add upsampled auxiliary outputs ``aux_1..aux_{depth-1}`` (model outputs
            ``[predictions, aux_1, ...]``).
        residual: residual conv blocks.
        upsampling: ``"transpose"`` or ``"resize"``.
        max_filters: cap on filters per level.
        batch_norm: batch normalisation after each conv.
        dropout: dropout in the bottleneck block.
        downsampling: ``"conv3"`` (3×3 stride-2 convolution) or ``"conv2"`` (2×2 stride 2: each output sees
            exactly the 2×2 block the 2×2 transposed convolution writes back to, so levels stay
            pixel-aligned; the "same" padding of a 3×3 stride-2 convolution on even sizes pads only the far
            side, which shifts each level by half a pixel).
        name: model name.

    Returns:
        Functional ``keras.Model`` (input ``"image"``; output ``"predictions"`` float32 of shape
        ``(*spatial, num_classes)``, plus ``aux_k`` outputs with deep supervision).

    Raises:
        ValueError: invalid arguments or sizes not divisible by ``2**depth``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims: expected 2 or 3, got {spatial_dims!r}")
    if input_shape is None:
        input_shape = (256, 256, 1) if spatial_dims == 2 else (64, 64, 64, 1)
    shape = check_input_shape(input_shape, spatial_dims=spatial_dims)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int (1 → sigmoid, >=2 → softmax), got {num_classes!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth: expected an int >= 1, got {depth!r}")
    if upsampling not in UPSAMPLING:
        raise ValueError(f"upsampling: expected one of {UPSAMPLING}, got {upsampling!r}")
    if downsampling not in DOWNSAMPLING:
        raise ValueError(f"downsampling: expected one of {tuple(DOWNSAMPLING)}, got {downsampling!r}")
    if base_filters < 1 or (max_filters is not None and max_filters < 1):
        raise ValueError(f"base_filters/max_filters: expected positive ints, got {base_filters}, {max_filters}")
    check_divisible(shape, 2 ** depth, what=f"a depth-{depth} U-Net")
    if deep_supervision and depth < 2:
        raise ValueError("deep_supervision: needs depth >= 2")

    inputs = keras.Input(shape, name="image")
    top, coarser = apply_unet_body(inputs, depth=depth, base_filters=base_filters, max_filters=max_filters,
                                   attention_gates=attention_gates, residual=residual, upsampling=upsampling,
                                   batch_norm=batch_norm, dropout=dropout, downsampling=downsampling)
    outputs = _seg_output(top, num_classes, "predictions")
    if deep_supervision:
        aux = [_seg_output(f, num_classes, f"aux_{k}", upsample=2 ** k) for k, f in enumerate(coarser, start=1)]
        outputs = [outputs, *aux]
    parts = [f"unet{spatial_dims}d"] + (["att"] if attention_gates else []) + (["res"] if residual else [])
    return keras.Model(inputs, outputs, name=name or "_".join(parts))
