"""Training-time metrics per task (what ``fit`` logs and ``monitor`` can name).

Clinical metrics with confidence intervals live in ``medtf.evaluation``; these are the cheap streaming
monitors: ``auc``/``accuracy`` (classification), ``grade_accuracy``/``grade_mae`` (ordinal), ``dice``
(segmentation, hard foreground Dice of the batch), ``psnr``/``ssim`` (restoration).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from medtf.training.losses import cumulative_targets, one_hot_like


@keras.saving.register_keras_serializable(package="medtf")
def grade_accuracy(y_true, y_pred):
    """Ordinal: fraction of samples whose predicted grade (#cumulative P > 0.5) equals the true grade."""
    t = cumulative_targets(y_true, y_pred.shape[-1])
    return tf.cast(tf.equal(tf.reduce_sum(t, -1), tf.reduce_sum(tf.cast(y_pred > 0.5, tf.float32), -1)), tf.float32)


@keras.saving.register_keras_serializable(package="medtf")
def grade_mae(y_true, y_pred):
    """Ordinal: mean absolute grade error."""
    t = cumulative_targets(y_true, y_pred.shape[-1])
    return tf.abs(tf.reduce_sum(t, -1) - tf.reduce_sum(tf.cast(y_pred > 0.5, tf.float32), -1))


@keras.saving.register_keras_serializable(package="medtf")
def dice_coefficient(y_true, y_pred):
    """Segmentation: hard Dice per sample, averaged over foreground classes (all classes when C = 1)."""
    y = one_hot_like(y_true, y_pred)
    p = tf.cast(y_pred, tf.float32)
    c = p.shape[-1]
    if c == 1:
        hard = tf.cast(p > 0.5, tf.float32)
    else:
        hard = tf.one_hot(tf.argmax(p, -1), c, dtype=tf.float32)
        y, hard = y[..., 1:], hard[..., 1:]
    axes = list(range(1, p.shape.rank - 1))
    inter = tf.reduce_sum(y * hard, axes)
    denom = tf.reduce_sum(y, axes) + tf.reduce_sum(hard, axes)
    dice = tf.where(denom > 0, 2.0 * inter / tf.maximum(denom, 1e-7), tf.ones_like(denom))
    return tf.reduce_mean(dice, -1)


@keras.saving.register_keras_serializable(package="medtf")
def psnr(y_true, y_pred):
    """Restoration: PSNR (``tf.image.psnr``, max_val 1; 3D volumes flattened to slices)."""
    y_true, y_pred = tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32)
    mse = tf.reduce_mean(tf.square(y_true - y_pred), axis=list(range(1, y_pred.shape.rank)))
    return 10.0 * tf.math.log(1.0 / tf.maximum(mse, 1e-12)) / tf.math.log(10.0)


@keras.saving.register_keras_serializable(package="medtf")
def ssim(y_true, y_pred):
    """Restoration: SSIM (``tf.image.ssim``, max_val 1, 7×7 window so small images work)."""
    from medtf.training.losses import ssim_per_sample

    return ssim_per_sample(y_true, y_pred, 1.0, filter_size=7)


def task_metrics(task: str, *, num_classes: int, label_mode: str) -> list:
    """Keras metrics to compile for a task.

    Args:
        task: binary | multiclass | multilabel | ordinal | segmentation | restoration.
        num_classes: number of classes.
        label_mode: the DataConfig label mode (sparse vs one-hot targets for multiclass).

    Returns:
        A list of metric objects with stable names (``auc``, ``accuracy``, ``dice``, ...).
    """
    M = keras.metrics
    if task == "binary":
        return [M.AUC(name="auc"), M.BinaryAccuracy(name="accuracy")]
    if task == "multilabel":
        return [M.AUC(name="auc", multi_label=True, num_labels=num_classes), M.BinaryAccuracy(name="accuracy")]
    if task == "multiclass":
        if label_mode == "onehot":
            return [M.AUC(name="auc"), M.CategoricalAccuracy(name="accuracy")]
        return [M.SparseCategoricalAccuracy(name="accuracy")]
    if task == "ordinal":
        return [M.MeanMetricWrapper(grade_accuracy, name="grade_accuracy"),
                M.MeanMetricWrapper(grade_mae, name="grade_mae")]
    if task == "segmentation":
        return [M.MeanMetricWrapper(dice_coefficient, name="dice")]
    if task == "restoration":
        return [M.MeanMetricWrapper(psnr, name="psnr"), M.MeanMetricWrapper(ssim, name="ssim"),
                M.MeanAbsoluteError(name="mae")]
    raise ValueError(f"unknown task {task!r}")


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """"min" or "max" for a monitored quantity ("auto": loss/error/mae → min, else max)."""
    if mode in ("min", "max"):
        return mode
    name = monitor.split("val_", 1)[-1]
    return "min" if any(k in name for k in ("loss", "mae", "mse", "error")) else "max"


def custom_objects() -> dict:
    return {f.__name__: f for f in (grade_accuracy, grade_mae, dice_coefficient, psnr, ssim)}
