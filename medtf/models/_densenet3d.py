"""``densenet3d_cbam``: 3D DenseNet (Huang et al., 2017) with CBAM attention, TFLite-convertible.

Differences from the 2D DenseNet, all so the model converts to TFLite and runs on LiteRT (TF 2.21 has no
TFLite kernel for ``MaxPool3D``/``AvgPool3D``):

* stem: ``Conv3D 7³ /2`` → BN → ReLU → ``Conv3D 3³ /2`` → BN → ReLU (the strided conv replaces the 3³ max-pool);
* transitions: BN → ReLU → ``Conv3D 2³ /2`` with ``compression·C`` filters. This single strided convolution
  replaces ``Conv 1³`` + ``AvgPool 2³``; it has the same FLOPs (one output voxel per 2³ input voxels) and 8× the
  transition parameters;
* global pooling: ``GlobalAveragePooling3D`` (TFLite ``MEAN``).

Dense layers are the bottleneck version (BN-ReLU-Conv1³(bn_size·k)-BN-ReLU-Conv3³(k)). CBAM
(:class:`medtf.layers.CBAM`) is placed after each dense block (``"block"``, default), after each dense layer's new
features (``"layer"``), after each transition (``"transition"``), any combination, or nowhere (``None``).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import keras

from medtf.layers.cbam import CBAM
from medtf.models._blocks import apply_bn_relu, apply_conv_bn_relu, conv_layer
from medtf.models._common import check_input_shape
from medtf.models.heads import apply_head, check_task
from medtf.models.registry import register

__all__ = ["densenet3d_cbam", "DENSENET_BLOCKS"]

DENSENET_BLOCKS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32), 264: (6, 12, 64, 48)}
CBAM_PLACEMENTS = ("block", "layer", "transition")


def _placements(cbam) -> frozenset:
    if cbam is None or cbam is False or cbam == "none":
        return frozenset()
    values = (cbam,) if isinstance(cbam, str) else tuple(cbam)
    bad = [v for v in values if v not in CBAM_PLACEMENTS]
    if bad:
        raise ValueError(f"cbam: expected None or any of {CBAM_PLACEMENTS}, got {cbam!r}")
    return frozenset(values)


def apply_dense_layer(x, growth_rate: int, bn_size: int, *, name: str, cbam: CBAM | None = None,
                      dropout: float = 0.0):
    """One bottleneck dense layer; returns ``concat([x, new_features])``."""
    y = apply_bn_relu(x, name=f"{name}_1")
    y = conv_layer(3, bn_size * growth_rate, 1, name=f"{name}_1_conv")(y)
    y = apply_bn_relu(y, name=f"{name}_2")
    y = conv_layer(3, growth_rate, 3, name=f"{name}_2_conv")(y)
    if dropout:
        y = keras.layers.Dropout(dropout, name=f"{name}_dropout")(y)
    if cbam is not None:
        y = cbam(y)
    return keras.layers.Concatenate(name=f"{name}_concat")([x, y])


@register("densenet3d_cbam")
def densenet3d_cbam(input_shape: Sequence[int | None], num_classes: int, task: str = "multiclass", depth: int = 121,
                    growth_rate: int = 32, cbam: str | Iterable[str] | None = "block", cbam_reduction: int = 16,
                    cbam_kernel_size: int = 7, bn_size: int = 4, compression: float = 0.5,
                    init_filters: int | None = None, block_config: Sequence[int] | None = None,
                    dense_dropout: float = 0.0, dropout: float = 0.0, name: str | None = None) -> keras.Model:
    """3D DenseNet-121/169/201/264 with CBAM.

    Args:
        input_shape: ``(D, H, W, C)``.
        num_classes: number of classes.
        task: ``binary`` | ``multiclass`` | ``multilabel`` | ``ordinal``.
        depth: 121, 169, 201 or 264 (ignored when ``block_config`` is given).
        growth_rate: ``k``, features added per dense layer.
        cbam: CBAM placement: ``"block"``, ``"layer"``, ``"transition"``, a collection of these, or ``None``.
        cbam_reduction: channel-attention reduction ratio.
        cbam_kernel_size: spatial-attention kernel (7 → 7×7×7).
        bn_size: bottleneck width multiplier.
        compression: transition channel compression θ in (0, 1].
        init_filters: stem filters (default ``2·growth_rate``).
        block_config: layers per dense block (overrides ``depth``).
        dense_dropout: dropout inside dense layers.
        dropout: dropout before the output layer.
        name: model name (default ``densenet{depth}_3d[_cbam]``).

    Returns:
        Functional ``keras.Model`` (input ``"image"``, output ``"predictions"`` float32); the last feature map
        is layer ``"final_relu"``.

    Raises:
        ValueError: invalid arguments.
    """
    shape = check_input_shape(input_shape, spatial_dims=3)
    check_task(task, num_classes)
    if block_config is None:
        if depth not in DENSENET_BLOCKS:
            raise ValueError(f"depth: expected one of {sorted(DENSENET_BLOCKS)} (or pass block_config), got {depth!r}")
        block_config = DENSENET_BLOCKS[depth]
    block_config = tuple(int(b) for b in block_config)
    if not block_config or min(block_config) < 1:
        raise ValueError(f"block_config: expected positive ints, got {block_config}")
    if not 0.0 < compression <= 1.0:
        raise ValueError(f"compression: expected a value in (0, 1], got {compression}")
    if growth_rate < 1 or bn_size < 1:
        raise ValueError(f"growth_rate and bn_size must be >= 1, got {growth_rate}, {bn_size}")
    where = _placements(cbam)
    init_filters = int(init_filters or 2 * growth_rate)

    def make_cbam(layer_name):
        return CBAM(reduction=cbam_reduction, kernel_size=cbam_kernel_size, name=layer_name)

    inputs = keras.Input(shape, name="image")
    x = apply_conv_bn_relu(inputs, init_filters, 7, 2, name="stem")
    x = apply_conv_bn_relu(x, init_filters, 3, 2, name="stem_down")
    for b, n_layers in enumerate(block_config, start=1):
        for i in range(1, n_layers + 1):
            layer_cbam = make_cbam(f"block{b}_layer{i}_cbam") if "layer" in where else None
            x = apply_dense_layer(x, growth_rate, bn_size, name=f"block{b}_layer{i}", cbam=layer_cbam,
                                  dropout=dense_dropout)
        if "block" in where:
            x = make_cbam(f"block{b}_cbam")(x)
        if b < len(block_config):
            filters = max(1, int(int(x.shape[-1]) * compression))
            x = apply_bn_relu(x, name=f"transition{b}")
            x = conv_layer(3, filters, 2, 2, name=f"transition{b}_conv")(x)
            if "transition" in where:
                x = make_cbam(f"transition{b}_cbam")(x)
    x = apply_bn_relu(x, name="final")
    outputs = apply_head(x, num_classes, task, dropout)
    suffix = "_cbam" if where else ""
    label = depth if block_config == DENSENET_BLOCKS.get(depth) else "custom"
    return keras.Model(inputs, outputs, name=name or f"densenet{label}_3d{suffix}")
