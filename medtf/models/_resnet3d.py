"""``resnet3d``: 3D ResNet-18/34/50 (He et al., 2016; Hara et al., 2018), TFLite-convertible.

The stem's 3³ max-pool is replaced by a stride-2 ``Conv3D 3³`` (no ``MaxPool3D``/``AvgPool3D`` anywhere:
they have no TFLite kernel in TF 2.21); stage downsampling uses stride-2 convolutions with 1³ stride-2
projection shortcuts, as in ResNet-B; global pooling is ``GlobalAveragePooling3D`` (TFLite ``MEAN``).
"""

from __future__ import annotations

from typing import Sequence

import keras

from medtf.models._blocks import apply_conv_bn_relu, conv_layer
from medtf.models._common import check_input_shape
from medtf.models.heads import apply_head, check_task
from medtf.models.registry import register

__all__ = ["resnet3d", "RESNET_CONFIGS"]

# depth → (block type, blocks per stage)
RESNET_CONFIGS = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                  50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


def apply_residual_block(x, filters: int, strides: int, kind: str, *, name: str):
    """Basic (two 3³ convs) or bottleneck (1³-3³-1³, ×4 expansion) residual block with a projection when needed."""
    out_filters = filters * (4 if kind == "bottleneck" else 1)
    shortcut = x
    if strides != 1 or int(x.shape[-1]) != out_filters:
        shortcut = conv_layer(3, out_filters, 1, strides, name=f"{name}_proj_conv")(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    if kind == "basic":
        y = apply_conv_bn_relu(x, filters, 3, strides, name=f"{name}_1")
        y = apply_conv_bn_relu(y, filters, 3, 1, name=f"{name}_2", activation=False)
    else:
        y = apply_conv_bn_relu(x, filters, 1, 1, name=f"{name}_1")
        y = apply_conv_bn_relu(y, filters, 3, strides, name=f"{name}_2")
        y = apply_conv_bn_relu(y, out_filters, 1, 1, name=f"{name}_3", activation=False)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


@register("resnet3d")
def resnet3d(input_shape: Sequence[int | None], num_classes: int, task: str = "multiclass", depth: int = 18,
             base_filters: int = 64, stem_strides: int | Sequence[int] = 2, dropout: float = 0.0,
             name: str | None = None) -> keras.Model:
    """3D ResNet classifier.

    Args:
        input_shape: ``(D, H, W, C)``.
        num_classes: number of classes.
        task: ``binary`` | ``multiclass`` | ``multilabel`` | ``ordinal``.
        depth: 10, 18, 34, 50 or 101.
        base_filters: filters of the first stage (doubling per stage).
        stem_strides: strides of the 7³ stem convolution (e.g. ``(1, 2, 2)`` for thick-slice CT).
        dropout: dropout before the output layer.
        name: model name (default ``resnet{depth}_3d``).

    Returns:
        Functional ``keras.Model`` (input ``"image"``, output ``"predictions"`` float32); the last feature map
        is the output of layer ``"stage4_block{n}_out"``.

    Raises:
        ValueError: invalid arguments.
    """
    shape = check_input_shape(input_shape, spatial_dims=3)
    check_task(task, num_classes)
    if depth not in RESNET_CONFIGS:
        raise ValueError(f"depth: expected one of {sorted(RESNET_CONFIGS)}, got {depth!r}")
    if base_filters < 1:
        raise ValueError(f"base_filters: expected >= 1, got {base_filters}")
    kind, stages = RESNET_CONFIGS[depth]
    inputs = keras.Input(shape, name="image")
    x = apply_conv_bn_relu(inputs, base_filters, 7, stem_strides, name="stem")
    x = apply_conv_bn_relu(x, base_filters, 3, 2, name="stem_down")
    for s, blocks in enumerate(stages, start=1):
        for b in range(1, blocks + 1):
            strides = 2 if (b == 1 and s > 1) else 1
            x = apply_residual_block(x, base_filters * 2 ** (s - 1), strides, kind, name=f"stage{s}_block{b}")
    outputs = apply_head(x, num_classes, task, dropout)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}_3d")
