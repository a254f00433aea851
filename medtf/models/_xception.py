"""``xception_multiscale``: Xception branches at several input resolutions, fused before the head.

Each scale ``s`` sees the image resized by ``s`` (bilinear, layer ``scale{i}_resize``) and runs an Xception
backbone (``keras.applications.Xception``, ``include_top=False``; a nested sub-model named ``xception_s{i}`` or,
with ``shared_weights=True``, one sub-model ``xception_shared`` applied to every scale). Every branch's last
feature map is resized to the largest branch map's grid (bilinear, ``scale{i}_align``), concatenated (``fusion_concat``)
and fused by a 1×1 convolution + BN + ReLU (``fusion_conv``/``fusion_bn``/``fusion_relu``: the map for Grad-CAM),
then global-average pooled into the head.

Adaptive stem. Keras' Xception halves the resolution five times (``block1_conv1`` and the pools of blocks 2, 3,
4 and 13, each with its 1×1 stride-2 shortcut) and documents a 71×71 minimum: the smallest input whose last
feature map is still 3×3 (:data:`MIN_FEATURE`). A branch smaller than that drops the *entry-flow* stride-2 steps
in order (``block1_conv1``, then blocks 2, 3, 4) until its last map is at least 3×3 again
(:func:`stem_strides_removed`); a 36-px branch drops two and runs its middle flow at 8×8, as a ~144-px branch
would with the standard stem. Only strides change (a convolution's kernel does not depend on its stride), so
the weights keep Keras' layout: a user-supplied ImageNet no-top file loads into every branch, adapted or not.
The smallest branch is :data:`MIN_BRANCH` = 9 px (all four entry-flow strides removed); with the default
scales ``(1.0, 0.5)`` any input of 18 px or more builds. Branches of 71 px or more use the standard stem
unchanged (models built before the adaptation are unchanged).

Input range: Xception expects ``[-1, 1]``; inputs in ``[0, pixel_max]`` are mapped there by ``input_scale``.
"""

from __future__ import annotations

import os
from typing import Sequence

import keras

from medtf.models._common import check_input_shape, set_batchnorm_momentum
from medtf.models.heads import apply_head, check_task
from medtf.models.registry import register

__all__ = ["xception_multiscale", "stem_strides_removed", "feature_size", "MIN_BRANCH"]

#: side of Xception's last feature map at its documented 71-px minimum input; every branch keeps at least this
MIN_FEATURE = 3
#: the stride-2 steps of Keras' Xception in order: the stem convolution, then the pools (+ 1×1 shortcuts) of
#: blocks 2, 3, 4 (entry flow) and 13 (exit flow); only the first four are ever removed
_STRIDE_STEPS = ("block1_conv1", "block2_pool", "block3_pool", "block4_pool", "block13_pool")
_MAX_REMOVED = 4


def feature_size(size: int, removed: int = 0) -> int:
    """Side of the Xception feature map for a ``size``-px input side with the first ``removed`` stride-2 steps
    turned into stride 1 (``block1_conv1``: 3×3 valid; ``block1_conv2``: 3×3 valid; pools: 3×3 "same")."""
    s = (size - 3) // 2 + 1 if removed < 1 else size - 2  # block1_conv1
    s -= 2  # block1_conv2
    for step in range(1, len(_STRIDE_STEPS)):
        if step >= removed:
            s = -(-s // 2)
    return s


def stem_strides_removed(size: int) -> int:
    """Fewest entry-flow stride-2 steps to remove so a ``size``-px branch ends on a >= 3×3 map (0 for >= 71 px).

    Raises:
        ValueError: ``size`` below :data:`MIN_BRANCH` (even a stride-1 entry flow ends below 3×3).
    """
    for removed in range(_MAX_REMOVED + 1):
        if size - 4 >= 1 and feature_size(size, removed) >= MIN_FEATURE:
            return removed
    raise ValueError(f"a branch of {size} px is too small for Xception even with a stride-1 entry flow "
                     f"(minimum {MIN_BRANCH} px)")


#: smallest branch side that :func:`stem_strides_removed` accepts
MIN_BRANCH = min(s for s in range(1, 72) if s - 4 >= 1 and feature_size(s, _MAX_REMOVED) >= MIN_FEATURE)


def _unstrided(base: keras.Model, removed: int) -> set[str]:
    """Names of the layers whose strides become 1 when the first ``removed`` steps are dropped: the stem
    convolution and, per pooled block, its pool and the 1×1 stride-2 shortcut convolution (auto-named by Keras,
    found as the n-th stride-2 1×1 convolution)."""
    shortcuts = [layer.name for layer in base.layers if isinstance(layer, keras.layers.Conv2D)
                 and tuple(layer.strides) == (2, 2) and tuple(layer.kernel_size) == (1, 1)]
    if len(shortcuts) != len(_STRIDE_STEPS) - 1:  # pragma: no cover - a changed keras.applications.Xception
        raise RuntimeError(f"unexpected Keras Xception layout: {len(shortcuts)} stride-2 shortcut convolutions")
    names = set(_STRIDE_STEPS[:removed])
    names.update(shortcuts[:max(0, removed - 1)])
    return names


def _backbone(channels: int, name: str, weights, bn_momentum: float, removed: int = 0):
    """Keras' Xception (no top) as a sub-model ``name``; with ``removed`` > 0 a clone whose first ``removed``
    stride-2 steps have stride 1, carrying the same (optionally loaded) weights."""
    base = keras.applications.Xception(include_top=False, weights=None, input_shape=(None, None, channels))
    if weights is not None:
        base.load_weights(weights)
    if removed:
        names = _unstrided(base, removed)

        def clone(layer):
            config = layer.get_config()
            if layer.name in names:
                config["strides"] = (1, 1)
            return layer.__class__.from_config(config)

        adapted = keras.models.clone_model(base, clone_function=clone)
        adapted.set_weights(base.get_weights())
        base = adapted
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

    Branches below 71 px drop entry-flow strides (module docstring, :func:`stem_strides_removed`); with
    ``shared_weights`` the one shared backbone uses the smallest branch's stem for every scale.

    Returns:
        Functional ``keras.Model`` (input ``"image"``, output ``"predictions"`` float32).

    Raises:
        ValueError: invalid shape/scales (a branch smaller than :data:`MIN_BRANCH` = 9 px) or arguments.
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
    if min(min(hw) for hw in sizes) < MIN_BRANCH:
        raise ValueError(f"input_shape/scales: every branch must be at least {MIN_BRANCH}x{MIN_BRANCH} px (Xception "
                         f"with a stride-1 entry flow), got branch sizes {sizes} for input {shape[:2]} and scales "
                         f"{scales}")
    removed = [stem_strides_removed(min(hw)) for hw in sizes]
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
    shared = (_backbone(shape[-1], "xception_shared", weights, bn_momentum, max(removed)) if shared_weights
              else None)
    maps = []
    for i, hw in enumerate(sizes):
        xi = x if hw == tuple(shape[:2]) else keras.layers.Resizing(*hw, interpolation="bilinear",
                                                                     name=f"scale{i}_resize")(x)
        backbone = shared or _backbone(shape[-1], f"xception_s{i}", weights, bn_momentum, removed[i])
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
