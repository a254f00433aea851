"""``simple_cnn``: a tiny 2D/3D classifier for demos and fast tests.

Built only from ops that convert to TFLite (int8 in 2D): strided convolutions, batch norm (folded on
conversion), ReLU and global average pooling (MEAN). No max/avg pooling, so the 3D version runs on LiteRT too.
"""

from __future__ import annotations

from typing import Sequence

import keras

from medtf.models._common import check_input_shape
from medtf.models.heads import apply_head, check_task
from medtf.models.registry import register

__all__ = ["simple_cnn"]


@register("simple_cnn")
def simple_cnn(input_shape: Sequence[int | None], num_classes: int, task: str = "multiclass",
               filters: Sequence[int] = (16, 32, 64), dropout: float = 0.0, name: str = "simple_cnn"):
    """A small stack of stride-2 ``Conv → BatchNorm → ReLU`` blocks followed by the task head.

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``; spatial dimensionality is inferred.
        num_classes: number of classes.
        task: ``binary`` | ``multiclass`` | ``multilabel`` | ``ordinal``.
        filters: filters of each stride-2 block.
        dropout: dropout before the output layer.
        name: model name.

    Returns:
        Functional ``keras.Model`` with output ``"predictions"`` (float32).

    Raises:
        ValueError: invalid shape, task or filters.
    """
    shape = check_input_shape(input_shape, spatial_dims=(2, 3))
    check_task(task, num_classes)
    if not filters or any(int(f) < 1 for f in filters):
        raise ValueError(f"filters: expected a non-empty sequence of positive ints, got {filters!r}")
    spatial_dims = len(shape) - 1
    conv = keras.layers.Conv2D if spatial_dims == 2 else keras.layers.Conv3D
    inputs = keras.Input(shape, name="image")
    x = inputs
    for i, f in enumerate(filters):
        x = conv(int(f), 3, strides=2, padding="same", use_bias=False, name=f"block{i + 1}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{i + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i + 1}_relu")(x)
    outputs = apply_head(x, num_classes, task, dropout)
    return keras.Model(inputs, outputs, name=name)
