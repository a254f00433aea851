"""Binary operating points: the one implementation of the threshold rules.

Training stores the threshold it picks on the validation split in the run (``RunInfo.threshold``);
evaluation picks one on validation data when none is given. Both use :func:`select_threshold`, so a
run's threshold and a re-evaluation agree, tie for tie.

Tie rule: a sample is predicted positive when ``prob >= threshold`` (a probability equal to the
threshold is positive, as at the thresholds of ``sklearn.metrics.roc_curve``); the threshold returned is
always one of the observed probabilities.

The ROC points come from scikit-learn (``roc_curve``); no TensorFlow.
"""

from __future__ import annotations

import numpy as np

THRESHOLD_METHODS = ("youden", "target_sensitivity")


def parse_threshold_method(method: str | None) -> tuple[str, float]:
    """``"youden"`` / ``"sensitivity:0.9"`` / ``"target_sensitivity[:0.9]"`` → (method, target sensitivity).

    ``None`` or ``""`` mean ``"youden"``; the target defaults to 0.9.

    Raises:
        ValueError: any other spelling.
    """
    if method in (None, "", "youden"):
        return "youden", 0.9
    if method.startswith("sensitivity:") or method.startswith("target_sensitivity:"):
        return "target_sensitivity", float(method.split(":", 1)[1])
    if method == "target_sensitivity":
        return "target_sensitivity", 0.9
    raise ValueError(f"threshold method must be 'youden' or 'sensitivity:<target>'. Received: {method!r}")


def _vector(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array (or (n, 1)). Received shape: {a.shape}")
    return a


def select_threshold(y_true, y_prob, method: str = "youden", *, target_sensitivity: float = 0.9) -> float:
    """Choose an operating point on (validation) data.

    Args:
        y_true: 0/1 labels.
        y_prob: positive-class probabilities.
        method: ``"youden"`` maximises sensitivity + specificity - 1 (the highest threshold among ties);
            ``"target_sensitivity"`` picks the highest threshold whose sensitivity is at least
            ``target_sensitivity`` (i.e. the best specificity meeting the target).
        target_sensitivity: in (0, 1], used by ``"target_sensitivity"``.

    Returns:
        The threshold: one of the observed probabilities (predict positive when ``prob >= threshold``).

    Raises:
        ValueError: unknown method, target outside (0, 1], labels other than 0/1, NaN or infinite
            probabilities, different lengths, or a class missing from ``y_true``.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"method must be one of {THRESHOLD_METHODS}. Received: {method!r}")
    y = _vector(y_true, "y_true")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"`y_true` must contain only 0 and 1 for a binary metric. Received values: {bad.tolist()}")
    y = y.astype(np.int64)
    if method == "target_sensitivity" and not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1]. Received: {target_sensitivity}")
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or (method == "youden" and n_neg == 0):
        raise ValueError(
            f"cannot choose a threshold: y_true needs both classes for {method!r}. Received: {n_pos} positive, {n_neg} negative"
        )
    s = _vector(y_prob, "y_prob").astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError(f"`y_prob` contains NaN or infinite values ({int((~np.isfinite(s)).sum())} of {s.size})")
    if s.shape[0] != y.shape[0]:
        raise ValueError(f"`y_true` and `y_prob` must have the same number of samples. Received: {y.shape[0]} and {s.shape[0]}")
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop sklearn's (inf) start point
    if method == "youden":
        return float(thr[int(np.argmax(tpr - fpr))])
    return float(thr[int(np.flatnonzero(tpr >= target_sensitivity - 1e-12)[0])])


def choose_threshold(y_true, scores, rule: str | None = "youden") -> float:
    """Binary operating point from validation scores (what :func:`medtf.training.trainer.train` stores).

    Args:
        y_true: 0/1 labels (any shape; flattened).
        scores: predicted probabilities of the positive class.
        rule: "youden" (max sensitivity + specificity − 1) or "sensitivity:<t>" (the highest threshold
            whose sensitivity is at least t); see :func:`parse_threshold_method`.

    Returns:
        The threshold (predict positive when score ≥ threshold); 0.5 when only one class is present.
    """
    y_true = np.asarray(y_true).ravel().astype(int)
    if np.unique(y_true).size < 2:
        return 0.5
    method, target = parse_threshold_method(rule)
    return select_threshold(y_true, scores, method, target_sensitivity=target)
