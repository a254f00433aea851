"""Classification heads shared by every classifier builder.

Output conventions (the cross-team contract):

* ``binary``     → 1 sigmoid unit, P(positive). ``num_classes`` must be 1 or 2.
* ``multiclass`` → ``num_classes`` softmax units.
* ``multilabel`` → ``num_classes`` independent sigmoid units.
* ``ordinal``    → ``num_classes - 1`` sigmoid "cumulative" units, unit k = P(y > k) (train with binary
  cross-entropy against the cumulative targets ``[y > 0, y > 1, ...]``; predicted class = number of units > 0.5).

The output layer is named ``"predictions"`` and always computes in float32, whatever the mixed-precision policy.
"""

from __future__ import annotations

import keras

__all__ = ["TASKS", "apply_head", "head_units", "check_task"]

TASKS = ("binary", "multiclass", "multilabel", "ordinal")


def check_task(task: str, num_classes: int) -> None:
    """Validate a (task, num_classes) pair.

    Args:
        task: one of :data:`TASKS`.
        num_classes: number of classes (for ``ordinal``: number of ordered grades).

    Raises:
        ValueError: unknown task or incompatible ``num_classes``.
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    if task == "binary" and num_classes not in (1, 2):
        raise ValueError(f"num_classes: task 'binary' needs 1 or 2 classes (one sigmoid unit), got {num_classes}")
    if task == "multiclass" and num_classes < 2:
        raise ValueError(f"num_classes: task 'multiclass' needs >= 2 classes, got {num_classes}")
    if task == "ordinal" and num_classes < 2:
        raise ValueError(f"num_classes: task 'ordinal' needs >= 2 grades, got {num_classes}")


def head_units(task: str, num_classes: int) -> int:
    """Number of output units for ``task`` (see module docstring)."""
    check_task(task, num_classes)
    if task == "binary":
        return 1
    if task == "ordinal":
        return num_classes - 1
    return num_classes


def _global_pool(x, name: str):
    rank = len(x.shape)
    if rank == 2:
        return x
    pools = {3: keras.layers.GlobalAveragePooling1D, 4: keras.layers.GlobalAveragePooling2D,
             5: keras.layers.GlobalAveragePooling3D}
    if rank not in pools:
        raise ValueError(f"apply_head: expected a (batch, features) or (batch, *spatial, channels) tensor, "
                         f"got shape {tuple(x.shape)}")
    return pools[rank](name=name)(x)


def apply_head(x, num_classes: int, task: str = "multiclass", dropout: float = 0.0, name: str = "predictions",
               kernel_initializer="glorot_uniform"):
    """Global-average-pool (if spatial) → Dropout → Dense with the task's activation, in float32.

    Layer names: ``avg_pool`` (when pooling), ``head_dropout`` (when ``dropout > 0``) and ``name``; for a
    ``name`` other than ``"predictions"`` the first two are prefixed ``f"{name}_"`` so several heads can coexist.

    Args:
        x: feature tensor ``(batch, features)`` or a feature map ``(batch, *spatial, channels)``.
        num_classes: number of classes.
        task: ``binary`` | ``multiclass`` | ``multilabel`` | ``ordinal``.
        dropout: dropout rate before the dense layer (0 disables it).
        name: name of the output layer.
        kernel_initializer: initializer of the dense kernel.

    Returns:
        Probability tensor ``(batch, units)`` of dtype float32.

    Raises:
        ValueError: invalid task/num_classes/dropout or input rank.
    """
    units = head_units(task, num_classes)
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout: expected a rate in [0, 1), got {dropout!r}")
    prefix = "" if name == "predictions" else f"{name}_"
    x = _global_pool(x, f"{prefix}avg_pool")
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{prefix}head_dropout")(x)
    activation = "softmax" if task == "multiclass" else "sigmoid"
    return keras.layers.Dense(units, activation=activation, kernel_initializer=kernel_initializer,
                              dtype="float32", name=name)(x)
