"""``attention_mil``: gated-attention multiple-instance learning classifier (Ilse et al., 2018) for
whole-slide images: a bag of tile embeddings (pre-extracted by any encoder) → instance MLP → gated attention
pooling (:class:`medtf.layers.GatedAttentionPooling`, layer ``"mil_pooling"``) → head.

The pooling layer returns ``[bag_embedding, attention]``; the attention weights per tile (``(batch, N, heads)``,
summing to 1 over the bag) are available as ``keras.Model(model.inputs, model.get_layer("mil_pooling").output[1])``.
With ``with_mask=True`` the model takes ``{"instances": (B, N, M), "mask": (B, N)}`` so padded bags can be batched.
"""

from __future__ import annotations

from typing import Sequence

import keras

from medtf.layers.mil import GatedAttentionPooling
from medtf.models._common import check_input_shape
from medtf.models.heads import apply_head, check_task
from medtf.models.registry import register

__all__ = ["attention_mil"]


@register("attention_mil")
def attention_mil(input_shape: Sequence[int | None], num_classes: int, task: str = "binary",
                  hidden_units: Sequence[int] = (256,), attention_dim: int = 128, num_heads: int = 1,
                  gated: bool = True, instance_dropout: float = 0.25, dropout: float = 0.0, with_mask: bool = False,
                  name: str = "attention_mil") -> keras.Model:
    """Attention-MIL bag classifier.

    Args:
        input_shape: ``(N, M)``: bag size (``None`` for variable bags) and embedding size.
        num_classes: number of classes.
        task: ``binary`` (default) | ``multiclass`` | ``multilabel`` | ``ordinal``.
        hidden_units: widths of the per-instance ``Dense → ReLU`` layers.
        attention_dim: ``L`` of the attention network.
        num_heads: attention heads (pooled embeddings concatenated).
        gated: gated (``tanh ⊙ sigmoid``) or plain (``tanh``) attention.
        instance_dropout: dropout after each instance layer.
        dropout: dropout before the output layer.
        with_mask: add a ``"mask"`` input ``(B, N)`` (1 = tile, 0 = padding).
        name: model name.

    Returns:
        Functional ``keras.Model``: input ``"instances"`` (and ``"mask"``), output ``"predictions"`` float32.

    Raises:
        ValueError: invalid arguments.
    """
    shape = check_input_shape(input_shape, spatial_dims=1)
    check_task(task, num_classes)
    if any(int(u) < 1 for u in hidden_units):
        raise ValueError(f"hidden_units: expected positive ints, got {hidden_units!r}")
    instances = keras.Input(shape, name="instances")
    inputs = [instances]
    x = instances
    for i, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(int(units), activation="relu", name=f"instance_dense{i}")(x)
        if instance_dropout:
            x = keras.layers.Dropout(instance_dropout, name=f"instance_dropout{i}")(x)
    mask = None
    if with_mask:
        mask = keras.Input(shape[:1], name="mask")
        inputs.append(mask)
    pooled, _ = GatedAttentionPooling(attention_dim, num_heads=num_heads, gated=gated, return_attention=True,
                                      name="mil_pooling")(x, mask=mask)
    outputs = apply_head(pooled, num_classes, task, dropout)
    return keras.Model(inputs if with_mask else instances, outputs, name=name)
