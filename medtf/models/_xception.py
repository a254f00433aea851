"""``xception_multiscale``: Xception branches at several input resolutions, fused before the head.

Each scale ``s`` sees the image resized by ``s`` (bilinear, layer ``scale{i}_resize``) and runs an Xception
backbone (``keras.applications.Xception``, ``include_top=False``; a nested sub-model named ``xception_s{i}`` or,
with ``shared_weights=True``, one sub-model ``xception_shared`` applied to every scale). Every branch's last
feature map is resized to the finest branch's grid (bilinear, ``scale{i}_align``), concatenated (``fusion_concat``)
and fused by a 1×1 convolution + BN + ReLU (``fusion_conv``/``fusion_bn``/``fusion_relu``: the map for Grad-CAM),
then global-average pooled into the head.

Input range: Xception expects ``[-1, 1]``; inputs in ``[0, pixel_max]`` are mapped there by ``input_scale``.
The smallest branch input must be at least 71×71 (Xception's minimum).
"""

from __future__ import annotations

import os
from typing import Sequence

import keras

from medtf.models._common import check_input_shape, set_batchnorm_momentum
from medtf.models.heads import apply_head, check_task
from medtf.models.registry import register

__all__ = ["xception_multiscale"]

_MIN_SIZE = 71


def _backbone(channels: int, name: str, weights, bn_momentum: float):
    base = keras.applications.Xception(include_top=False, weights=None, input_shape=(None, None, channels))
    if weights is not None:
        base.load_weights(weights)
    set_batchnorm_momentum(base, bn_momentum)
    return keras.Model(base.input, base.output, name=name)


@register("xception_multiscale")
def xception_multiscale(input_shape: Sequence[int], num_classes: int, task: str = "multiclass",
                        scales: Sequence[float] = (1.0, 0.5), shared_weights: bool = False, fusion_filters: int = 512,
                        dropout: float = 0.2, pixel_max: float = 1.0, weights: str | os.PathLike | None = None,
                        bn_momentum: float = 0.9, name: str = "xception_multiscale") -> keras.Model:
    """Multi-scale Xception classifier (e.g. diabetic retinopathy grading at 224²×3 or larger).

    Args:
        input_shape: ``(H, W, C)`` with known H, W.
        num_classes: number of classes (grades for ``ordinal``).
        task: ``binary`` | ``multiclass`` | ``multilabel`` | ``ordinal``.
        scales: resize factor of each branch, in (0, 1]; the first should be 1.0.
        shared_weights: one backbone shared by all scales instead of one per scale.
        fusion_filters: filters of the 1×1 fusion convolution.
        dropout: dropout before the output layer.
        pixel_max: white level of the input (``[0, pixel_max]`` → ``[-1, 1]``).
        weights: optional local path of Keras' ImageNet Xception *no-top* weights (3-channel input only);
            never downloaded.
        bn_momentum: momentum of every BatchNormalization moving average (Keras' Xception uses 0.99).
            Xception's deep separable-conv activations have variances of 1e-4 or less when trained from
            scratch; with 0.99 the moving variance keeps ``0.99**steps`` of its initial 1.0, which after a
            few hundred steps (a small dataset's whole training) still dwarfs the real variance, so the
            inference-mode network normalises every signal to ~0 and predicts one class for all inputs
            while training-mode accuracy looks fine. 0.9 forgets the initial value within ~100 steps.
        name: model name.

    Returns:
        Functional ``keras.Model`` (input ``"image"``, output ``"predictions"`` float32).

    Raises:
        ValueError: invalid shape/scales (a branch smaller than 71×71) or arguments.
        FileNotFoundError: ``weights`` path does not exist.
    """
    shape = check_input_shape(input_shape, spatial_dims=2)
    check_task(task, num_classes)
    if any(s is None for s in shape[:-1]):
        raise ValueError(f"input_shape: H and W must be known for multi-scale resizing, got {shape}")
    scales = tuple(float(s) for s in scales)
    if not scales or any(not 0 < s <= 1 for s in scales):
        raise ValueError(f"scales: expected factors in (0, 1], got {scales}")
    sizes = [(max(1, round(shape[0] * s)), max(1, round(shape[1] * s))) for s in scales]
    if min(min(hw) for hw in sizes) < _MIN_SIZE:
        raise ValueError(f"input_shape/scales: every branch must be at least {_MIN_SIZE}x{_MIN_SIZE} (Xception), "
                         f"got branch sizes {sizes} for input {shape[:2]} and scales {scales}")
    if weights is not None:
        if str(weights).lower() == "imagenet":
            raise ValueError("weights: 'imagenet' would download; pass a local Xception no-top weights file path")
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights: file not found: {weights!r}")
        if shape[-1] != 3:
            raise ValueError(f"weights: ImageNet Xception weights need 3 input channels, got {shape[-1]}")
    if not 0.0 <= float(bn_momentum) < 1.0:
        raise ValueError(f"bn_momentum: expected a value in [0, 1), got {bn_momentum!r}")
    bn_momentum = float(bn_momentum)
    if pixel_max is None or not float(pixel_max) > 0:
        raise ValueError(f"pixel_max: expected a positive number, got {pixel_max!r}")

    inputs = keras.Input(shape, name="image")
    x = keras.layers.Rescaling(2.0 / float(pixel_max), offset=-1.0, name="input_scale")(inputs)
    shared = _backbone(shape[-1], "xception_shared", weights, bn_momentum) if shared_weights else None
    maps = []
    for i, (scale, hw) in enumerate(zip(scales, sizes)):
        xi = x if hw == tuple(shape[:2]) else keras.layers.Resizing(*hw, interpolation="bilinear",
                                                                     name=f"scale{i}_resize")(x)
        backbone = shared or _backbone(shape[-1], f"xception_s{i}", weights, bn_momentum)
        maps.append(backbone(xi))
    target = max((tuple(m.shape[1:3]) for m in maps), key=lambda t: t[0] * t[1])
    aligned = [m if tuple(m.shape[1:3]) == target else
               keras.layers.Resizing(*target, interpolation="bilinear", name=f"scale{i}_align")(m)
               for i, m in enumerate(maps)]
    fused = aligned[0] if len(aligned) == 1 else keras.layers.Concatenate(name="fusion_concat")(aligned)
    fused = keras.layers.Conv2D(fusion_filters, 1, use_bias=False, name="fusion_conv")(fused)
    fused = keras.layers.BatchNormalization(momentum=bn_momentum, name="fusion_bn")(fused)
    fused = keras.layers.ReLU(name="fusion_relu")(fused)
    outputs = apply_head(fused, num_classes, task, dropout)
    return keras.Model(inputs, outputs, name=name)
