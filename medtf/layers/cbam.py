"""CBAM: Convolutional Block Attention Module (Woo et al., ECCV 2018), for 1D/2D/3D feature maps.

For a feature map ``F`` of shape ``(batch, *spatial, C)``:

* channel attention  ``Mc = σ(MLP(avg_s(F)) + MLP(max_s(F)))`` with one shared two-layer MLP
  ``MLP(v) = W1·relu(W0·v + b0) + b1`` (hidden width ``max(C // reduction, min_hidden)``); ``F' = F ⊙ Mc``;
* spatial attention  ``Ms = σ(conv_k([avg_c(F'); max_c(F')]))`` with a ``k×k(×k)`` "same" convolution
  (2 → 1 channels, with bias); ``F'' = F' ⊙ Ms``.

``avg_s``/``max_s`` reduce over the spatial axes, ``avg_c``/``max_c`` over channels. Global max is a
``REDUCE_MAX`` (not ``MaxPool3D``), so the 3D version converts to TFLite and runs on LiteRT.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["ChannelAttention", "SpatialAttention", "CBAM"]


def _check_rank(layer, input_shape):
    if len(input_shape) not in (3, 4, 5):
        raise ValueError(f"{type(layer).__name__} {layer.name!r}: expected input (batch, *spatial, channels) with "
                         f"1-3 spatial axes, got shape {tuple(input_shape)}")
    if input_shape[-1] is None:
        raise ValueError(f"{type(layer).__name__} {layer.name!r}: the channel axis must be known, "
                         f"got shape {tuple(input_shape)}")


@keras.saving.register_keras_serializable(package="medtf")
class ChannelAttention(keras.layers.Layer):
    """CBAM channel attention: rescales channels by ``σ(MLP(avg) + MLP(max))``.

    Args:
        reduction: channel reduction ratio of the shared MLP.
        min_hidden: lower bound on the hidden width.
        use_bias: whether the MLP layers have biases.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``...).

    Call args:
        inputs: ``(batch, *spatial, C)``.

    Returns:
        Tensor of the input's shape.
    """

    def __init__(self, reduction: int = 16, min_hidden: int = 1, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        if int(reduction) < 1 or int(min_hidden) < 1:
            raise ValueError(f"ChannelAttention: reduction and min_hidden must be >= 1, got {reduction}, {min_hidden}")
        self.reduction = int(reduction)
        self.min_hidden = int(min_hidden)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        _check_rank(self, input_shape)
        channels = int(input_shape[-1])
        hidden = max(channels // self.reduction, self.min_hidden)
        self.mlp_hidden = keras.layers.Dense(hidden, activation="relu", use_bias=self.use_bias,
                                             dtype=self.dtype_policy, name="mlp_hidden")
        self.mlp_out = keras.layers.Dense(channels, use_bias=self.use_bias, dtype=self.dtype_policy, name="mlp_out")
        self.mlp_hidden.build((None, 2, channels))
        self.mlp_out.build((None, 2, hidden))

    def call(self, inputs):
        axes = tuple(range(1, len(inputs.shape) - 1))
        pooled = ops.stack([ops.mean(inputs, axis=axes), ops.max(inputs, axis=axes)], axis=1)  # (B, 2, C)
        logits = ops.sum(self.mlp_out(self.mlp_hidden(pooled)), axis=1)  # shared MLP on both descriptors
        scale = ops.sigmoid(logits)
        for _ in axes:
            scale = ops.expand_dims(scale, 1)
        return inputs * scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction, min_hidden=self.min_hidden, use_bias=self.use_bias)
        return config


@keras.saving.register_keras_serializable(package="medtf")
class SpatialAttention(keras.layers.Layer):
    """CBAM spatial attention: rescales positions by ``σ(conv([mean_c; max_c]))``.

    Args:
        kernel_size: size of the (cubic/square) "same" convolution (7 in the paper).
        **kwargs: ``keras.layers.Layer`` arguments.

    Call args:
        inputs: ``(batch, *spatial, C)``.

    Returns:
        Tensor of the input's shape.
    """

    def __init__(self, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        if int(kernel_size) < 1:
            raise ValueError(f"SpatialAttention: kernel_size must be >= 1, got {kernel_size}")
        self.kernel_size = int(kernel_size)

    def build(self, input_shape):
        _check_rank(self, input_shape)
        conv_cls = {3: keras.layers.Conv1D, 4: keras.layers.Conv2D, 5: keras.layers.Conv3D}[len(input_shape)]
        # float32 under every policy: a 2 -> 1 channel map gains nothing from 16-bit compute, and oneDNN's
        # bfloat16 Conv3D weight gradient corrupts the heap (process abort) when this 7^3 kernel meets a
        # 4^3 map (TF 2.21 on AVX512-BF16 CPUs; tests/layers/test_cbam.py runs that case).
        self.conv = conv_cls(1, self.kernel_size, padding="same", use_bias=True, dtype="float32", name="conv")
        self.conv.build(tuple(input_shape[:-1]) + (2,))

    def call(self, inputs):
        desc = ops.concatenate([ops.mean(inputs, axis=-1, keepdims=True), ops.max(inputs, axis=-1, keepdims=True)],
                               axis=-1)
        return inputs * ops.cast(ops.sigmoid(self.conv(desc)), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size)
        return config


@keras.saving.register_keras_serializable(package="medtf")
class CBAM(keras.layers.Layer):
    """Channel attention followed by spatial attention (either can be disabled).

    Args:
        reduction: channel-attention MLP reduction ratio.
        kernel_size: spatial-attention convolution size.
        use_channel: apply channel attention.
        use_spatial: apply spatial attention.
        min_hidden: lower bound on the channel MLP hidden width.
        **kwargs: ``keras.layers.Layer`` arguments.

    Call args:
        inputs: ``(batch, *spatial, C)`` with 1–3 spatial axes.

    Returns:
        Tensor of the input's shape.
    """

    def __init__(self, reduction: int = 16, kernel_size: int = 7, use_channel: bool = True, use_spatial: bool = True,
                 min_hidden: int = 1, **kwargs):
        super().__init__(**kwargs)
        if not (use_channel or use_spatial):
            raise ValueError("CBAM: at least one of use_channel / use_spatial must be True")
        self.reduction = int(reduction)
        self.kernel_size = int(kernel_size)
        self.use_channel = bool(use_channel)
        self.use_spatial = bool(use_spatial)
        self.min_hidden = int(min_hidden)
        self.channel = (ChannelAttention(self.reduction, self.min_hidden, dtype=self.dtype_policy,
                                         name="channel_attention") if self.use_channel else None)
        self.spatial = (SpatialAttention(self.kernel_size, dtype=self.dtype_policy, name="spatial_attention")
                        if self.use_spatial else None)

    def build(self, input_shape):
        _check_rank(self, input_shape)
        if self.channel is not None:
            self.channel.build(input_shape)
        if self.spatial is not None:
            self.spatial.build(input_shape)

    def call(self, inputs):
        x = inputs
        if self.channel is not None:
            x = self.channel(x)
        if self.spatial is not None:
            x = self.spatial(x)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction, kernel_size=self.kernel_size, use_channel=self.use_channel,
                      use_spatial=self.use_spatial, min_hidden=self.min_hidden)
        return config
