"""Losses: Keras built-ins for cross-entropy and focal (with class weights), and the segmentation /
restoration / ordinal losses written once here.

Conventions (all losses):

* ``y_pred`` are probabilities (sigmoid or softmax outputs, float32 — medtf heads are always float32).
* The last axis is the class/channel axis. Segmentation targets may be sparse (``(..., 1)`` integer
  labels) or one-hot (``(..., C)``); sparse targets are one-hot encoded inside the loss.
* Each loss returns one value per sample (Dice family, L1+SSIM, ordinal) or per position (CE), and the
  Keras reduction (default ``sum_over_batch_size``) averages it, honouring ``sample_weight``.

Every loss is checked against a NumPy reference in ``tests/training/test_losses.py``.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

EPS = 1e-7


def _as_float(x):
    return tf.cast(x, tf.float32)


def one_hot_like(y_true, y_pred):
    """Targets as float with y_pred's channel count: sparse (..., 1) integer labels → one-hot."""
    n = y_pred.shape[-1]
    if n is not None and n > 1 and y_true.shape.rank == y_pred.shape.rank and y_true.shape[-1] == 1:
        return tf.one_hot(tf.cast(tf.squeeze(y_true, -1), tf.int32), n, dtype=tf.float32)
    if n is not None and n > 1 and y_true.shape.rank == y_pred.shape.rank - 1:
        return tf.one_hot(tf.cast(y_true, tf.int32), n, dtype=tf.float32)
    return _as_float(y_true)


def _spatial_axes(rank: int):
    return list(range(1, rank - 1))


def _class_weight_vector(class_weights, n: int):
    if class_weights is None:
        return None
    w = tf.constant([float(v) for v in class_weights], tf.float32)
    if len(class_weights) != n:
        raise ValueError(f"class_weights has {len(class_weights)} values but the model predicts {n} classes")
    return w


def _weighted_class_mean(per_class, class_weights):
    """Mean over the last (class) axis, weighted by ``class_weights`` when given."""
    if class_weights is None:
        return tf.reduce_mean(per_class, axis=-1)
    w = _class_weight_vector(class_weights, per_class.shape[-1])
    return tf.reduce_sum(per_class * w, axis=-1) / tf.reduce_sum(w)


class _MedtfLoss(keras.losses.Loss):
    """Base: stores constructor kwargs for ``get_config``."""

    def __init__(self, reduction="sum_over_batch_size", name=None, dtype=None, **params):
        super().__init__(reduction=reduction, name=name or self.__class__.__name__.lower(), dtype=dtype)
        self._params = params

    def get_config(self):
        cfg = super().get_config()
        cfg.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in self._params.items()})
        return cfg


# ---------------------------------------------------------------- cross-entropy and focal (Keras built-ins)
def _target_weights(y_true, class_weights, mode, pred_rank):
    """Per-position weight of the true class (shape y_true.shape[:-1] or y_true.shape for sparse)."""
    w = tf.constant([float(v) for v in class_weights], tf.float32)
    if mode == "binary":
        y = _as_float(y_true)
        if len(class_weights) == 2:  # (negative, positive) weights
            pos, neg = w[1], w[0]
            return tf.reduce_mean(y * pos + (1.0 - y) * neg, axis=-1)
        return tf.reduce_mean(y * w + (1.0 - y), axis=-1)  # multilabel: one positive weight per label
    if mode == "sparse":
        y = y_true
        if y.shape.rank == pred_rank:  # (..., 1) integer labels
            y = tf.squeeze(y, axis=-1)
        return tf.gather(w, tf.cast(y, tf.int32))
    return tf.reduce_sum(_as_float(y_true) * w, axis=-1)


def _resolve_mode(mode, y_true, y_pred):
    if mode != "categorical":
        return mode
    n = y_pred.shape[-1]
    if y_true.shape.rank == y_pred.shape.rank - 1 or (n != 1 and y_true.shape[-1] == 1):
        return "sparse"
    return "categorical"


@keras.saving.register_keras_serializable(package="medtf")
class CrossEntropy(_MedtfLoss):
    """Binary / categorical / sparse categorical cross-entropy (``keras.losses``) with class weights.

    Args:
        mode: "binary" (sigmoid outputs: binary and multi-label tasks) or "categorical" (softmax
            outputs; integer targets are detected from the shape and use the sparse variant).
        class_weights: weight per class (the true class's weight multiplies each position's loss). For
            "binary" with one output: (negative, positive); multi-label: one positive weight per label.
        label_smoothing: passed to Keras (not for sparse targets).
    """

    def __init__(self, mode="categorical", class_weights=None, label_smoothing=0.0, name="crossentropy", **kw):
        if mode not in ("binary", "categorical"):
            raise ValueError(f"CrossEntropy mode must be 'binary' or 'categorical'. Received: {mode!r}")
        super().__init__(name=name, mode=mode, class_weights=class_weights, label_smoothing=label_smoothing, **kw)
        self.mode = mode
        self.class_weights = None if class_weights is None else tuple(float(v) for v in class_weights)
        self.label_smoothing = float(label_smoothing)

    def _unweighted(self, y_true, y_pred, mode):
        if mode == "binary":
            return keras.losses.binary_crossentropy(_as_float(y_true), y_pred, label_smoothing=self.label_smoothing)
        if mode == "sparse":
            return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        return keras.losses.categorical_crossentropy(_as_float(y_true), y_pred, label_smoothing=self.label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = _as_float(y_pred)
        mode = _resolve_mode(self.mode, y_true, y_pred)
        loss = self._unweighted(y_true, y_pred, mode)
        if self.class_weights is not None:
            loss = loss * _target_weights(y_true, self.class_weights, mode, y_pred.shape.rank)
        return loss


@keras.saving.register_keras_serializable(package="medtf")
class FocalCrossEntropy(CrossEntropy):
    """Focal loss via ``keras.losses.binary_focal_crossentropy`` / ``categorical_focal_crossentropy``.

    Args:
        gamma: focusing parameter; γ = 0 gives plain cross-entropy.
        alpha: balancing factor. None = no α balancing (so γ = 0 equals cross-entropy exactly); for
            "binary" a value turns on Keras ``apply_class_balancing``.
        mode, class_weights: as :class:`CrossEntropy`.
    """

    def __init__(self, mode="categorical", gamma=2.0, alpha=None, class_weights=None, label_smoothing=0.0,
                 name="focal", **kw):
        super().__init__(mode=mode, class_weights=class_weights, label_smoothing=label_smoothing, name=name, **kw)
        self._params.update(gamma=gamma, alpha=alpha)
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)

    def _unweighted(self, y_true, y_pred, mode):
        if mode == "binary":
            return keras.losses.binary_focal_crossentropy(
                _as_float(y_true), y_pred, apply_class_balancing=self.alpha is not None,
                alpha=0.25 if self.alpha is None else self.alpha, gamma=self.gamma,
                label_smoothing=self.label_smoothing)
        y = one_hot_like(y_true, y_pred) if mode == "sparse" else _as_float(y_true)
        return keras.losses.categorical_focal_crossentropy(
            y, y_pred, alpha=1.0 if self.alpha is None else self.alpha, gamma=self.gamma,
            label_smoothing=self.label_smoothing)


# ---------------------------------------------------------------- overlap losses (segmentation)
def _overlap_terms(y_true, y_pred):
    y = one_hot_like(y_true, y_pred)
    p = _as_float(y_pred)
    axes = _spatial_axes(p.shape.rank)
    tp = tf.reduce_sum(y * p, axis=axes)
    fp = tf.reduce_sum((1.0 - y) * p, axis=axes)
    fn = tf.reduce_sum(y * (1.0 - p), axis=axes)
    return tp, fp, fn, y, p


def soft_dice_per_class(y_true, y_pred, smooth=1e-5):
    """Soft Dice per sample and class: (2·Σyp + s) / (Σy + Σp + s) over the spatial axes → (B, C)."""
    tp, fp, fn, _, _ = _overlap_terms(y_true, y_pred)
    return (2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth)


def tversky_index_per_class(y_true, y_pred, alpha=0.5, beta=0.5, smooth=1e-5):
    """Tversky index per sample and class: (TP + s) / (TP + α·FP + β·FN + s) → (B, C)."""
    tp, fp, fn, _, _ = _overlap_terms(y_true, y_pred)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


@keras.saving.register_keras_serializable(package="medtf")
class DiceLoss(_MedtfLoss):
    """1 − soft Dice, averaged over classes (weighted by ``class_weights``), one value per sample.

    Args:
        smooth: additive smoothing in numerator and denominator.
        class_weights: weight per class in the class average (e.g. 0 for background), or None.
    """

    def __init__(self, smooth=1e-5, class_weights=None, name="dice", **kw):
        super().__init__(name=name, smooth=smooth, class_weights=class_weights, **kw)
        self.smooth = float(smooth)
        self.class_weights = None if class_weights is None else tuple(float(v) for v in class_weights)

    def call(self, y_true, y_pred):
        dice = soft_dice_per_class(y_true, y_pred, self.smooth)
        return 1.0 - _weighted_class_mean(dice, self.class_weights)


@keras.saving.register_keras_serializable(package="medtf")
class DiceCELoss(DiceLoss):
    """``dice_weight``·Dice loss + ``ce_weight``·cross-entropy (mean over positions), per sample.

    Cross-entropy is categorical for C > 1 outputs (softmax), binary for one sigmoid output.
    """

    def __init__(self, smooth=1e-5, class_weights=None, dice_weight=1.0, ce_weight=1.0, name="dice_ce", **kw):
        super().__init__(smooth=smooth, class_weights=class_weights, name=name, **kw)
        self._params.update(dice_weight=dice_weight, ce_weight=ce_weight)
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)

    def call(self, y_true, y_pred):
        dice = super().call(y_true, y_pred)
        y = one_hot_like(y_true, y_pred)
        p = _as_float(y_pred)
        if p.shape[-1] == 1:
            ce = keras.losses.binary_crossentropy(y, p)
        else:
            ce = keras.losses.categorical_crossentropy(y, p)
        ce = tf.reduce_mean(ce, axis=list(range(1, ce.shape.rank)))
        return self.dice_weight * dice + self.ce_weight * ce


@keras.saving.register_keras_serializable(package="medtf")
class TverskyLoss(_MedtfLoss):
    """1 − Tversky index (α weighs false positives, β false negatives), class-averaged, per sample."""

    def __init__(self, alpha=0.3, beta=0.7, smooth=1e-5, class_weights=None, name="tversky", **kw):
        super().__init__(name=name, alpha=alpha, beta=beta, smooth=smooth, class_weights=class_weights, **kw)
        self.alpha, self.beta, self.smooth = float(alpha), float(beta), float(smooth)
        self.class_weights = None if class_weights is None else tuple(float(v) for v in class_weights)

    def call(self, y_true, y_pred):
        ti = tversky_index_per_class(y_true, y_pred, self.alpha, self.beta, self.smooth)
        return _weighted_class_mean(1.0 - ti, self.class_weights)


@keras.saving.register_keras_serializable(package="medtf")
class FocalTverskyLoss(TverskyLoss):
    """(1 − Tversky index)^γ per class, class-averaged (Abraham & Khan 2019; γ = 0.75 by default)."""

    def __init__(self, alpha=0.3, beta=0.7, gamma=0.75, smooth=1e-5, class_weights=None, name="focal_tversky", **kw):
        super().__init__(alpha=alpha, beta=beta, smooth=smooth, class_weights=class_weights, name=name, **kw)
        self._params.update(gamma=gamma)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        ti = tversky_index_per_class(y_true, y_pred, self.alpha, self.beta, self.smooth)
        return _weighted_class_mean(tf.pow(tf.maximum(1.0 - ti, 0.0), self.gamma), self.class_weights)


# ---------------------------------------------------------------- restoration
def ssim_per_sample(y_true, y_pred, max_val=1.0, filter_size=11, filter_sigma=1.5):
    """SSIM per sample with ``tf.image.ssim``; 3D volumes (B, D, H, W, C) average SSIM over slices."""
    y_true, y_pred = _as_float(y_true), _as_float(y_pred)
    if y_pred.shape.rank == 5:
        shape = tf.shape(y_pred)
        flat = lambda v: tf.reshape(v, tf.concat([[-1], shape[2:]], 0))  # noqa: E731
        s = tf.image.ssim(flat(y_true), flat(y_pred), max_val, filter_size=filter_size, filter_sigma=filter_sigma)
        return tf.reduce_mean(tf.reshape(s, shape[:2]), axis=1)
    return tf.image.ssim(y_true, y_pred, max_val, filter_size=filter_size, filter_sigma=filter_sigma)


@keras.saving.register_keras_serializable(package="medtf")
class L1SSIMLoss(_MedtfLoss):
    """(1 − w)·L1 + w·(1 − SSIM), per sample; SSIM from ``tf.image.ssim``.

    Args:
        ssim_weight: w in [0, 1] (0.84 in Zhao et al. 2017).
        max_val: dynamic range of the images (1 for [0, 1] inputs).
        filter_size, filter_sigma: SSIM Gaussian window (images must be at least ``filter_size`` wide).
    """

    def __init__(self, ssim_weight=0.84, max_val=1.0, filter_size=11, filter_sigma=1.5, name="l1_ssim", **kw):
        super().__init__(name=name, ssim_weight=ssim_weight, max_val=max_val, filter_size=filter_size,
                         filter_sigma=filter_sigma, **kw)
        self.ssim_weight, self.max_val = float(ssim_weight), float(max_val)
        self.filter_size, self.filter_sigma = int(filter_size), float(filter_sigma)

    def call(self, y_true, y_pred):
        y_true, y_pred = _as_float(y_true), _as_float(y_pred)
        l1 = tf.reduce_mean(tf.abs(y_true - y_pred), axis=list(range(1, y_pred.shape.rank)))
        ssim = ssim_per_sample(y_true, y_pred, self.max_val, self.filter_size, self.filter_sigma)
        return (1.0 - self.ssim_weight) * l1 + self.ssim_weight * (1.0 - ssim)


# ---------------------------------------------------------------- ordinal
def cumulative_targets(y_true, num_thresholds: int):
    """Integer grades (B,) or (B, 1) → cumulative targets (B, K−1) with t_k = 1[y > k].

    Targets that already have K−1 columns are returned as float (K = 2: both forms coincide).
    """
    if y_true.shape.rank == 2 and y_true.shape[-1] == num_thresholds:
        return _as_float(y_true)
    y = tf.reshape(tf.cast(y_true, tf.float32), [-1, 1])
    k = tf.range(num_thresholds, dtype=tf.float32)[None, :]
    return tf.cast(y > k, tf.float32)


def cumulative_to_class(probs, threshold=0.5):
    """Cumulative probabilities P(y > k) (B, K−1) → predicted grade = number of P > threshold."""
    return tf.reduce_sum(tf.cast(probs > threshold, tf.int64), axis=-1)


@keras.saving.register_keras_serializable(package="medtf")
class OrdinalLoss(_MedtfLoss):
    """Binary cross-entropy on cumulative targets (t_k = 1[y > k], K−1 sigmoid outputs), mean over k.

    Args:
        class_weights: weight per grade (K values; the true grade's weight multiplies the sample loss).
    """

    def __init__(self, class_weights=None, name="ordinal", **kw):
        super().__init__(name=name, class_weights=class_weights, **kw)
        self.class_weights = None if class_weights is None else tuple(float(v) for v in class_weights)

    def call(self, y_true, y_pred):
        p = _as_float(y_pred)
        t = cumulative_targets(y_true, p.shape[-1])
        loss = keras.losses.binary_crossentropy(t, p)
        if self.class_weights is not None:
            grade = tf.cast(tf.reduce_sum(t, axis=-1), tf.int32)
            loss = loss * tf.gather(tf.constant(self.class_weights, tf.float32), grade)
        return loss


# ---------------------------------------------------------------- registry
LOSSES = ("auto", "crossentropy", "focal", "dice", "dice_ce", "tversky", "focal_tversky", "l1_ssim", "ordinal",
          "mae", "mse")

_DEFAULT_FOR_TASK = {
    "binary": "crossentropy",
    "multiclass": "crossentropy",
    "multilabel": "crossentropy",
    "ordinal": "ordinal",
    "segmentation": "dice_ce",
    "restoration": "l1_ssim",
}


def get_loss(name: str = "auto", *, task: str = "binary", class_weights: Sequence[float] | None = None, **kwargs):
    """Build a loss by name for a task.

    Args:
        name: one of :data:`LOSSES`; "auto" picks cross-entropy for classification, ordinal BCE for
            ordinal, Dice+CE for segmentation and L1+SSIM for restoration.
        task: binary | multiclass | multilabel | ordinal | segmentation | restoration (decides binary vs
            categorical cross-entropy).
        class_weights: per-class weights, or None.
        **kwargs: loss parameters (gamma, alpha, beta, smooth, ssim_weight, ...).

    Returns:
        A ``keras.losses.Loss``.

    Raises:
        ValueError: unknown name or task.
    """
    if task not in _DEFAULT_FOR_TASK:
        raise ValueError(f"task must be one of {tuple(_DEFAULT_FOR_TASK)}. Received: {task!r}")
    if name not in LOSSES:
        raise ValueError(f"loss name must be one of {LOSSES}. Received: {name!r}")
    if name == "auto":
        name = _DEFAULT_FOR_TASK[task]
    mode = "binary" if task in ("binary", "multilabel") else "categorical"
    cw = None if class_weights is None else tuple(float(v) for v in class_weights)
    if name == "crossentropy":
        return CrossEntropy(mode=mode, class_weights=cw, **kwargs)
    if name == "focal":
        return FocalCrossEntropy(mode=mode, class_weights=cw, **kwargs)
    if name == "dice":
        return DiceLoss(class_weights=cw, **kwargs)
    if name == "dice_ce":
        return DiceCELoss(class_weights=cw, **kwargs)
    if name == "tversky":
        return TverskyLoss(class_weights=cw, **kwargs)
    if name == "focal_tversky":
        return FocalTverskyLoss(class_weights=cw, **kwargs)
    if name == "l1_ssim":
        return L1SSIMLoss(**kwargs)
    if name == "ordinal":
        return OrdinalLoss(class_weights=cw, **kwargs)
    if cw is not None:
        raise ValueError(f"loss {name!r} does not take class_weights")
    return keras.losses.MeanAbsoluteError(**kwargs) if name == "mae" else keras.losses.MeanSquaredError(**kwargs)


def custom_objects() -> dict:
    """medtf loss classes by name (for ``keras.saving.load_model``)."""
    return {c.__name__: c for c in (CrossEntropy, FocalCrossEntropy, DiceLoss, DiceCELoss, TverskyLoss,
                                    FocalTverskyLoss, L1SSIMLoss, OrdinalLoss)}
