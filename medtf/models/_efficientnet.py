"""``efficientnet``: EfficientNet B0–B7 and V2 (B0–B3, S, M, L) from ``keras.applications`` with medtf heads.

Input range. Keras' EfficientNets contain their own preprocessing layers and expect pixels in ``[0, 255]``
(V1: ``Rescaling(1/255)`` + ``Normalization``; V2 B-variants with 3 channels: ``Rescaling(1/255)`` + ImageNet
``Normalization``; other V2: ``Rescaling(1/128, offset=-1)``). medtf preprocessing produces ``[0, 1]``, so by
default (``pixel_max=1.0``) the model starts with ``Rescaling(255, name="input_scale")`` (no parameters): feed
images in ``[0, pixel_max]``. With ``pixel_max=255`` the model is input-compatible with ``keras.applications``.

Pretrained weights are only ever read from a local file (``weights=path``), never downloaded: the Keras
ImageNet file of the same variant, with or without top (``efficientnetb0_notop.h5``, ``...weights.h5``).
Inputs with other than 3 channels then get a 1×1 convolution ``channel_adapter`` (C → 3, initialised to the
channel mean replicated to RGB, so gray → (g, g, g)) in front of the 3-channel backbone.

Layer names: ``image`` (input), ``channel_adapter``, ``input_scale``, ``keras_rescaling``, ``keras_normalization``,
the Keras block names (``stem_conv`` … ``top_activation``, the last feature map for Grad-CAM), ``avg_pool``,
``head_dropout``, ``predictions``.
"""

from __future__ import annotations

import os
from typing import Sequence

import keras
import numpy as np

from medtf.models._common import check_input_shape
from medtf.models.heads import apply_head, check_task
from medtf.models.registry import register

__all__ = ["efficientnet", "EFFICIENTNET_VARIANTS"]

# variant → (keras.applications constructor name, default resolution, Keras' top dropout rate)
EFFICIENTNET_VARIANTS: dict[str, tuple[str, int, float]] = {
    "b0": ("EfficientNetB0", 224, 0.2),
    "b1": ("EfficientNetB1", 240, 0.2),
    "b2": ("EfficientNetB2", 260, 0.3),
    "b3": ("EfficientNetB3", 300, 0.3),
    "b4": ("EfficientNetB4", 380, 0.4),
    "b5": ("EfficientNetB5", 456, 0.4),
    "b6": ("EfficientNetB6", 528, 0.5),
    "b7": ("EfficientNetB7", 600, 0.5),
    "v2b0": ("EfficientNetV2B0", 224, 0.2),
    "v2b1": ("EfficientNetV2B1", 240, 0.2),
    "v2b2": ("EfficientNetV2B2", 260, 0.2),
    "v2b3": ("EfficientNetV2B3", 300, 0.2),
    "v2s": ("EfficientNetV2S", 384, 0.2),
    "v2m": ("EfficientNetV2M", 480, 0.2),
    "v2l": ("EfficientNetV2L", 480, 0.2),
}

# V1 variant → (width coefficient, depth coefficient), as keras.applications builds them (for ``lite=True``)
_V1_COEFFICIENTS = {"b0": (1.0, 1.0), "b1": (1.0, 1.1), "b2": (1.1, 1.2), "b3": (1.2, 1.4), "b4": (1.4, 1.8),
                    "b5": (1.6, 2.2), "b6": (1.8, 2.6), "b7": (2.0, 3.1)}

_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
# keras.applications' DENSE_KERNEL_INITIALIZER (same head initialisation as the reference model)
_DENSE_INIT = {"class_name": "VarianceScaling",
               "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}


def _normalize_variant(variant: str) -> str:
    key = str(variant).lower().replace("-", "").replace("_", "").replace("efficientnet", "")
    if key not in EFFICIENTNET_VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(EFFICIENTNET_VARIANTS)}, got {variant!r}")
    return key


def _reference_backbone(ctor, include_top: bool, spatial: tuple):
    return getattr(keras.applications, ctor)(include_top=include_top, weights=None,
                                             input_shape=spatial + (3,) if include_top is False else None)


def _load_reference_weights(path: str, ctor: str, spatial: tuple):
    """Build the 3-channel Keras model the file belongs to (with top, then without) and load it."""
    errors = []
    for include_top in (True, False):  # a top file may load silently into a no-top model: try top first
        ref = _reference_backbone(ctor, include_top, spatial)
        try:
            ref.load_weights(path)
            return ref
        except Exception as exc:  # noqa: BLE001 - try the other layout, report both
            errors.append(f"include_top={include_top}: {type(exc).__name__}: {exc}")
    raise ValueError(f"weights: {path!r} is not a keras.applications.{ctor} weights file (with or without top); "
                     f"loading failed with " + " | ".join(e[:300] for e in errors))


def _copy_weights(ref: keras.Model, model: keras.Model, path: str, copy_top: bool) -> list[str]:
    ours = {layer.name: layer for layer in model.layers}
    copied = []
    for layer in ref.layers:
        if not layer.weights:
            continue
        if isinstance(layer, keras.layers.Normalization):
            target = ours.get("keras_normalization")
        elif layer.name == "predictions":
            if not copy_top:
                continue
            target = ours.get("predictions")
        else:
            target = ours.get(layer.name)
        if target is None:
            raise ValueError(f"weights: layer {layer.name!r} of {path!r} has no counterpart in the model")
        values = layer.get_weights()
        have = [tuple(w.shape) for w in target.get_weights()]
        if have != [tuple(v.shape) for v in values]:
            raise ValueError(f"weights: layer {layer.name!r} of {path!r} has shapes {[v.shape for v in values]}, "
                             f"the model expects {have}")
        target.set_weights(values)
        if isinstance(target, keras.layers.Normalization):
            target.finalize_state()  # Normalization caches mean/variance tensors; refresh them
        copied.append(target.name)
    return copied


def _lite_backbone(key: str, x, input_shape: tuple, resolution: int) -> keras.Model:
    """The keras.applications V1 graph with ReLU6 and ``se_ratio=0`` (the builder behind ``EfficientNetB*``,
    which takes ``activation`` and ``blocks_args``; the public ``EfficientNetB*`` wrappers do not pass them)."""
    try:
        from keras.src.applications import efficientnet as _keras_efficientnet
        blocks = [dict(b, se_ratio=0.0) for b in _keras_efficientnet.DEFAULT_BLOCKS_ARGS]
        build = _keras_efficientnet.EfficientNet
    except (ImportError, AttributeError) as exc:  # pragma: no cover - depends on the Keras release
        raise ValueError(f"lite: this Keras ({keras.__version__}) no longer exposes the EfficientNet builder "
                         f"medtf uses for the Lite form ({exc})") from exc
    width, depth = _V1_COEFFICIENTS[key]
    return build(width, depth, resolution, activation="relu6", blocks_args=blocks, include_top=False, weights=None,
                 input_tensor=x, input_shape=input_shape, name=f"efficientnet{key}_lite")


@register("efficientnet")
def efficientnet(variant: str = "b0", input_shape: Sequence[int | None] | None = None, num_classes: int | None = None,
                 task: str = "multiclass", weights: str | os.PathLike | None = None, dropout: float | None = None,
                 pixel_max: float = 1.0, channel_adapter: bool | None = None, imagenet_rescale: bool | None = None,
                 bn_momentum: float | None = None, lite: bool = False, name: str | None = None) -> keras.Model:
    """EfficientNet classifier (``keras.applications`` backbone + medtf head).

    With ``num_classes=1000, task="multiclass"`` the head is exactly Keras' (GAP → Dropout → Dense softmax), so
    the parameter count equals ``keras.applications.EfficientNetB*`` (B0: 5,330,571).

    Args:
        variant: ``"b0"``…``"b7"``, ``"v2b0"``…``"v2b3"``, ``"v2s"``, ``"v2m"``, ``"v2l"``.
        input_shape: ``(H, W, C)``; default the variant's resolution with 3 channels.
        num_classes: number of classes (required).
        task: ``binary`` | ``multiclass`` | ``multilabel`` | ``ordinal``.
        weights: ``None`` (random init) or the path of a local Keras ImageNet weights file of the same variant
            (``.h5`` / ``.weights.h5``, with or without top). ``"imagenet"`` is refused: nothing is downloaded.
            The top is loaded only when the head has the same shape (1000-way multiclass).
        dropout: rate before the output layer; default Keras' rate for the variant.
        pixel_max: white level of the input; inputs in ``[0, pixel_max]`` are rescaled to the ``[0, 255]`` the
            Keras backbone expects (255 → no extra layer).
        channel_adapter: add the C → 3 ``channel_adapter`` 1×1 convolution; default: only when ``weights`` is given
            and ``C != 3``.
        imagenet_rescale: for V1 with ``weights``, reproduce the extra ``1/sqrt(std)`` input scaling Keras adds for
            ImageNet weights (folded into the normalization variance); default True for V1 files.
        bn_momentum: momentum of every BatchNormalization moving average (default Keras' 0.99). On small data
            trained from scratch a lower value (0.9) lets the inference statistics follow the fast-changing
            weights of the first epochs, which is what makes validation AUC swing with 0.99.
        lite: the EfficientNet-Lite changes that make full-integer (int8) quantization keep the model's accuracy
            (Google's EfficientNet-Lite, 2020): ReLU6 instead of swish and no squeeze-and-excitation, so every
            activation is bounded and no ``x·sigmoid(x)`` or SE gate is quantized. V1 variants only; random
            init only (ImageNet files are for the swish/SE graph). Measured on PneumoniaMNIST in
            docs/export.md.
        name: model name (default ``efficientnet_<variant>``).

    Returns:
        Functional ``keras.Model`` with input ``"image"`` and output ``"predictions"`` (float32).

    Raises:
        ValueError: bad variant/shape/task, ``weights="imagenet"``, unreadable or mismatching weights file.
        FileNotFoundError: ``weights`` path does not exist.
    """
    key = _normalize_variant(variant)
    ctor, resolution, default_dropout = EFFICIENTNET_VARIANTS[key]
    if num_classes is None:
        raise ValueError("num_classes: required (e.g. num_classes=2)")
    check_task(task, num_classes)
    shape = check_input_shape(input_shape if input_shape is not None else (resolution, resolution, 3),
                              spatial_dims=2)
    if weights is not None:
        if str(weights).lower() == "imagenet":
            raise ValueError("weights: 'imagenet' would download; pass the path of a local Keras ImageNet weights "
                             f"file for {ctor} (e.g. efficientnet{key}_notop.h5)")
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights: file not found: {weights!r}")
    if lite and key.startswith("v2"):
        raise ValueError(f"lite: only EfficientNet V1 variants (b0-b7) have a Lite form. Received: {variant!r}")
    if lite and weights is not None:
        raise ValueError("lite: ImageNet weights files are for the swish/squeeze-excitation graph; train the Lite "
                         "form from scratch (weights=None) or drop lite")
    if bn_momentum is not None and not 0.0 <= float(bn_momentum) < 1.0:
        raise ValueError(f"bn_momentum: expected a number in [0, 1), got {bn_momentum!r}")
    if pixel_max is None or not float(pixel_max) > 0:
        raise ValueError(f"pixel_max: expected a positive number, got {pixel_max!r}")
    channels = shape[-1]
    if channel_adapter is None:
        channel_adapter = weights is not None and channels != 3
    dropout = default_dropout if dropout is None else float(dropout)

    inputs = keras.Input(shape, name="image")
    x = inputs
    if channel_adapter:
        x = keras.layers.Conv2D(3, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(1.0 / channels),
                                name="channel_adapter")(x)
    if float(pixel_max) != 255.0:
        x = keras.layers.Rescaling(255.0 / float(pixel_max), name="input_scale")(x)
    backbone_channels = int(x.shape[-1])
    if lite:
        backbone = _lite_backbone(key, x, shape[:-1] + (backbone_channels,), resolution)
    else:
        backbone = getattr(keras.applications, ctor)(include_top=False, weights=None, input_tensor=x,
                                                     input_shape=shape[:-1] + (backbone_channels,))
    for layer in backbone.layers:  # stable names for the auto-named preprocessing layers
        if isinstance(layer, keras.layers.Normalization):
            layer.name = "keras_normalization"
        elif isinstance(layer, keras.layers.Rescaling) and layer.name != "input_scale":
            layer.name = "keras_rescaling"
        elif bn_momentum is not None and isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(bn_momentum)
    outputs = apply_head(backbone.output, num_classes, task, dropout, kernel_initializer=_DENSE_INIT)
    model = keras.Model(inputs, outputs, name=name or f"efficientnet_{key}{'_lite' if lite else ''}")

    if weights is not None:
        if backbone_channels != 3:
            raise ValueError(f"weights: ImageNet weights need 3 backbone channels; input has {channels} "
                             "channels and channel_adapter=False")
        ref = _load_reference_weights(weights, ctor, shape[:-1])
        copy_top = any(l.name == "predictions" for l in ref.layers) and task == "multiclass" and num_classes == 1000
        _copy_weights(ref, model, weights, copy_top)
        if imagenet_rescale is None:
            imagenet_rescale = not key.startswith("v2")
        if imagenet_rescale:
            if key.startswith("v2"):
                raise ValueError("imagenet_rescale: only applies to EfficientNet V1 variants")
            norm = model.get_layer("keras_normalization")
            mean, variance, count = norm.get_weights()
            norm.set_weights([mean, variance * np.asarray(_IMAGENET_STDDEV_RGB, variance.dtype), count])
            norm.finalize_state()
    return model
