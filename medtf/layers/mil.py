"""Gated attention pooling for multiple-instance learning (Ilse, Tomczak & Welling, ICML 2018).

For a bag ``H = (h_1..h_N)`` of instance embeddings (``(batch, N, M)``)::

    a_k = softmax_k( w^T (tanh(V h_k + b_V) ⊙ σ(U h_k + b_U)) + b_w )      (over the N instances)
    z   = Σ_k a_k h_k                                                      (batch, M)

With ``num_heads = K > 1`` there are K independent attention vectors (``w`` has K columns) and the pooled
embeddings are concatenated → ``(batch, K·M)``. An optional ``mask`` ``(batch, N)`` (1 = real instance,
0 = padding) excludes padded instances from the softmax. The softmax runs in float32.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["GatedAttentionPooling"]


@keras.saving.register_keras_serializable(package="medtf")
class GatedAttentionPooling(keras.layers.Layer):
    """Gated attention MIL pooling (see module docstring).

    Args:
        attention_dim: ``L``, width of the ``V``/``U`` projections.
        num_heads: number of attention vectors ``K``.
        gated: if False, the plain (non-gated) attention ``w^T tanh(V h)`` is used.
        return_attention: if True the layer returns ``[z, a]`` with ``a`` of shape ``(batch, N, K)``.
        **kwargs: ``keras.layers.Layer`` arguments.

    Call args:
        inputs: ``(batch, N, M)`` instance embeddings.
        mask: optional ``(batch, N)`` bool/0-1 tensor; False/0 marks padding.

    Returns:
        ``(batch, K·M)`` bag embedding, or ``[embedding, attention]``.
    """

    def __init__(self, attention_dim: int = 128, num_heads: int = 1, gated: bool = True,
                 return_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        if int(attention_dim) < 1 or int(num_heads) < 1:
            raise ValueError(f"GatedAttentionPooling: attention_dim and num_heads must be >= 1, got "
                             f"{attention_dim}, {num_heads}")
        self.attention_dim = int(attention_dim)
        self.num_heads = int(num_heads)
        self.gated = bool(gated)
        self.return_attention = bool(return_attention)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"GatedAttentionPooling {self.name!r}: expected (batch, instances, features) with known "
                             f"features, got {tuple(input_shape)}")
        m = int(input_shape[-1])
        self.V = keras.layers.Dense(self.attention_dim, activation="tanh", dtype=self.dtype_policy, name="V")
        self.V.build((None, None, m))
        if self.gated:
            self.U = keras.layers.Dense(self.attention_dim, activation="sigmoid", dtype=self.dtype_policy, name="U")
            self.U.build((None, None, m))
        self.w = keras.layers.Dense(self.num_heads, dtype=self.dtype_policy, name="w")
        self.w.build((None, None, self.attention_dim))

    def call(self, inputs, mask=None):
        hidden = self.V(inputs)
        if self.gated:
            hidden = hidden * self.U(inputs)
        logits = ops.cast(self.w(hidden), "float32")  # (B, N, K)
        if mask is not None:
            keep = ops.expand_dims(ops.cast(mask, "float32"), -1)
            logits = logits + (1.0 - keep) * -1e9
        attention = ops.softmax(logits, axis=1)
        pooled = ops.matmul(ops.transpose(ops.cast(attention, inputs.dtype), (0, 2, 1)), inputs)  # (B, K, M)
        pooled = ops.reshape(pooled, (-1, self.num_heads * inputs.shape[-1]))
        return [pooled, attention] if self.return_attention else pooled

    def compute_mask(self, inputs, mask=None):
        return [None, None] if self.return_attention else None

    def compute_output_shape(self, input_shape):
        out = (input_shape[0], self.num_heads * input_shape[-1])
        return [out, (input_shape[0], input_shape[1], self.num_heads)] if self.return_attention else out

    def get_config(self):
        config = super().get_config()
        config.update(attention_dim=self.attention_dim, num_heads=self.num_heads, gated=self.gated,
                      return_attention=self.return_attention)
        return config
