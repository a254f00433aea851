"""Clinical metrics: scikit-learn / SciPy where they own the metric, NumPy for the rest (no TensorFlow,
except the thin restoration helper).

Library-backed: ROC curve and AUC (``sklearn.metrics.roc_curve`` / ``roc_auc_score``), precision-recall
curve and average precision (``precision_recall_curve`` / ``average_precision_score``), confusion
matrices (``confusion_matrix``), quadratic-weighted kappa (``cohen_kappa_score``), Brier score
(``brier_score_loss``), Wilson intervals (``scipy.stats.binomtest(...).proportion_ci``). Hand-written,
because the libraries lack them: the vectorised bootstrap AUC of many resamples (tested equal to
``roc_auc_score`` on the resampled data), threshold selection, the binned ECE, segmentation overlap and
surface distances in mm. sklearn and SciPy are imported lazily (inside the functions).

Conventions (all functions):

* ``y_true`` holds integer labels: 0/1 for binary and per-label multilabel, ``0..K-1`` for
  multiclass and ordinal. Scores/probabilities are floats; NaN or infinite scores are rejected.
* Tie rule: a sample is predicted positive when ``prob >= threshold`` — a probability exactly equal
  to the threshold counts as positive (the same rule as ``sklearn.metrics.roc_curve``'s thresholds).
* A ratio whose denominator is zero (e.g. sensitivity without positives) is ``NaN``, never 0;
  averages over classes ignore NaN (``nanmean``).
* AUC needs both classes; with only one present it is ``NaN`` (as sklearn >= 1.6, which also warns).
* Confidence intervals: AUC uses a stratified percentile bootstrap (positives and negatives — or the
  classes — are resampled separately, so every replicate has the original class counts), seeded and
  deterministic; proportions (sensitivity, specificity, PPV, NPV, accuracy) use the Wilson score
  interval.
* Segmentation (per class, per case), distances in mm using the voxel spacing:

  ======================  ==========  ===========  ===============================================
  masks                   Dice / IoU  HD95 / HD    mean surface distance (ASSD)
  ======================  ==========  ===========  ===============================================
  both empty              1.0         0.0          0.0
  one empty, other not    0.0         NaN          NaN (counted in ``n_undefined`` of summaries)
  both non-empty          usual       usual        usual
  ======================  ==========  ===========  ===============================================

  The surface of a mask is its voxels removed by one binary erosion with the face-connected
  structuring element (voxels on the image border count as surface). Directed distances go from
  each surface voxel of one mask to the nearest surface voxel of the other
  (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``). ``HD`` is the maximum of both
  directions, ``HD95`` is the maximum of the two directed 95th percentiles (linear interpolation), and
  ASSD is the mean of all directed distances of both surfaces pooled.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

# --------------------------------------------------------------------------------------------------
# validation helpers


def as_1d(x, name: str, *, dtype=None) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array (or (n, 1)). Received shape: {a.shape}")
    return a.astype(dtype) if dtype is not None else a


def binary_labels(y_true, name: str = "y_true") -> np.ndarray:
    y = as_1d(y_true, name)
    if y.size and not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"`{name}` must contain only 0 and 1 for a binary metric. Received values: {bad.tolist()}")
    return y.astype(np.int64)


def as_scores(y_score, name: str = "y_score") -> np.ndarray:
    s = as_1d(y_score, name).astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError(f"`{name}` contains NaN or infinite values ({int((~np.isfinite(s)).sum())} of {s.size})")
    return s


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"`{na}` and `{nb}` must have the same number of samples. Received: {a.shape[0]} and {b.shape[0]}")


def _div(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


# --------------------------------------------------------------------------------------------------
# ROC / AUC


def _weighted_auc(pos: np.ndarray, neg: np.ndarray, wp: np.ndarray, wn: np.ndarray) -> np.ndarray:
    """AUC (Mann-Whitney, ties count 1/2) for each row of sample weights (the bootstrap engine).

    Row ``b`` equals ``sklearn.metrics.roc_auc_score`` on the data with each positive/negative repeated
    ``wp[b]``/``wn[b]`` times (tested to 1e-12); kept because it scores all resamples in one pass.

    Args:
        pos, neg: scores of the positives (n1,) and negatives (n0,).
        wp, wn: non-negative weights (B, n1) and (B, n0) — bootstrap counts or ones.

    Returns:
        (B,) AUCs.
    """
    order = np.argsort(neg, kind="mergesort")
    neg_sorted = neg[order]
    lo = np.searchsorted(neg_sorted, pos, side="left")
    hi = np.searchsorted(neg_sorted, pos, side="right")
    out = np.empty(wp.shape[0], dtype=np.float64)
    n = pos.size + neg.size
    step = max(1, int(4_000_000 // max(n, 1)))
    for start in range(0, wp.shape[0], step):
        sl = slice(start, start + step)
        wn_s = wn[sl][:, order].astype(np.float64)
        cum = np.concatenate([np.zeros((wn_s.shape[0], 1)), np.cumsum(wn_s, axis=1)], axis=1)
        below = cum[:, lo] + 0.5 * (cum[:, hi] - cum[:, lo])  # weight of negatives beaten by each positive
        w_p = wp[sl].astype(np.float64)
        out[sl] = (w_p * below).sum(axis=1) / (w_p.sum(axis=1) * wn_s.sum(axis=1))
    return out


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve (binary), ties counted as 1/2.

    Args:
        y_true: 0/1 labels, shape (n,) or (n, 1).
        y_score: scores or probabilities of the positive class, same length.

    Returns:
        The AUC, or NaN when only one class is present.

    Raises:
        ValueError: labels other than 0/1, non-finite scores, or mismatched lengths.
    """
    y = binary_labels(y_true)
    s = as_scores(y_score)
    _same_length(y, s, "y_true", "y_score")
    return _sk_auc(y, s)


def _sk_auc(y: np.ndarray, s: np.ndarray) -> float:
    """``sklearn.metrics.roc_auc_score`` on validated 0/1 labels; NaN (no warning) with one class."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def _stratified_counts(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) bootstrap multiplicities, resampling within each stratum (class counts kept)."""
    counts = np.zeros((n_boot, strata.size), dtype=np.int32)
    for value in np.unique(strata):
        idx = np.flatnonzero(strata == value)
        counts[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=n_boot)
    return counts


def _percentile_ci(values: np.ndarray, ci: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _check_ci(n_boot: int, ci: float) -> None:
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1. Received: {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1). Received: {ci}")


def roc_auc_ci(y_true, y_score, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> dict:
    """AUC with a stratified percentile bootstrap confidence interval.

    Positives and negatives are resampled separately (with replacement, each to its original count),
    so every replicate has both classes. The point estimate is ``sklearn.metrics.roc_auc_score``; the
    replicates use the vectorised rank AUC :func:`_weighted_auc` (equal to ``roc_auc_score`` on each
    resample), so ``n_boot=2000`` on 10k samples takes about a second.

    Args:
        y_true: 0/1 labels.
        y_score: positive-class scores.
        n_boot: bootstrap replicates.
        ci: coverage of the interval (0.95 → 2.5th and 97.5th percentiles).
        seed: seed of the NumPy generator (same seed → same interval).

    Returns:
        ``{"value", "ci_low", "ci_high", "n_boot", "ci"}``; NaN entries when only one class is present.

    Raises:
        ValueError: invalid labels/scores, ``n_boot < 1`` or ``ci`` outside (0, 1).
    """
    _check_ci(n_boot, ci)
    y = binary_labels(y_true)
    s = as_scores(y_score)
    _same_length(y, s, "y_true", "y_score")
    pos, neg = s[y == 1], s[y == 0]
    out = {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n_boot": int(n_boot), "ci": ci}
    if pos.size == 0 or neg.size == 0:
        return out
    out["value"] = _sk_auc(y, s)
    rng = np.random.default_rng(seed)
    wp = rng.multinomial(pos.size, np.full(pos.size, 1.0 / pos.size), size=n_boot)
    wn = rng.multinomial(neg.size, np.full(neg.size, 1.0 / neg.size), size=n_boot)
    out["ci_low"], out["ci_high"] = _percentile_ci(_weighted_auc(pos, neg, wp, wn), ci)
    return out


def roc_curve(y_true, y_score, *, drop_intermediate: bool = True):
    """ROC curve points: ``sklearn.metrics.roc_curve`` on validated inputs.

    The point at threshold ``t`` counts ``score >= t`` as positive (the project's tie rule).

    Args:
        y_true: 0/1 labels.
        y_score: positive-class scores.
        drop_intermediate: drop collinear points that do not change the curve's shape.

    Returns:
        ``(fpr, tpr, thresholds)`` with thresholds decreasing; the first threshold is ``inf`` (0, 0).
        fpr (tpr) is NaN when there are no negatives (positives), without sklearn's warning.
    """
    y = binary_labels(y_true)
    s = as_scores(y_score)
    _same_length(y, s, "y_true", "y_score")
    if s.size == 0:
        return np.array([np.nan]), np.array([np.nan]), np.array([np.inf])
    import warnings

    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_curve as sk_roc_curve

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # one class → NaN rates (documented)
        fpr, tpr, thr = sk_roc_curve(y, s, pos_label=1, drop_intermediate=drop_intermediate)
    return fpr.astype(np.float64), tpr.astype(np.float64), thr.astype(np.float64)


def precision_recall_curve(y_true, y_score):
    """Precision-recall points at every distinct threshold (decreasing), starting at recall 0.

    ``sklearn.metrics.precision_recall_curve`` (``score >= threshold`` → positive), reversed so that the
    thresholds decrease and the curve starts at the (recall 0, precision 1) point.

    Returns:
        ``(precision, recall, thresholds)``; precision at the start point is 1 by convention (as sklearn).
        Without positives the recall after the start point is NaN (sklearn would set 1 and warn).
    """
    y = binary_labels(y_true)
    s = as_scores(y_score)
    _same_length(y, s, "y_true", "y_score")
    if s.size == 0:
        return np.array([1.0]), np.array([0.0]), np.array([])
    import warnings

    from sklearn.metrics import precision_recall_curve as sk_pr_curve

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "No positive class found": handled below
        precision, recall, thr = sk_pr_curve(y, s, pos_label=1)
    precision, recall, thr = (a[::-1].astype(np.float64) for a in (precision, recall, thr))
    if not y.any():
        recall[1:] = np.nan
    return precision, recall, thr


def average_precision(y_true, y_score) -> float:
    """Average precision ``sum_n (R_n - R_{n-1}) P_n``: ``sklearn.metrics.average_precision_score``;
    NaN without positives (or without samples)."""
    y = binary_labels(y_true)
    s = as_scores(y_score)
    _same_length(y, s, "y_true", "y_score")
    if not y.any():
        return float("nan")
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s, pos_label=1))


# --------------------------------------------------------------------------------------------------
# thresholded binary metrics


def wilson_interval(successes: int, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``scipy.stats.binomtest(...).proportion_ci``,
    ``method="wilson"``); (NaN, NaN) when ``n == 0``."""
    if n <= 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    r = binomtest(int(successes), int(n)).proportion_ci(confidence_level=ci, method="wilson")
    return max(0.0, float(r.low)), min(1.0, float(r.high))


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class: ``sklearn.metrics.confusion_matrix``
    with ``labels=range(num_classes)``, after checking the labels are in range (sklearn would drop them).

    Args:
        y_true, y_pred: integer class indices in ``[0, num_classes)``.
        num_classes: size of the matrix; default ``max(label) + 1``.

    Returns:
        (K, K) int64 counts.

    Raises:
        ValueError: negative labels or labels ``>= num_classes``.
    """
    t = as_1d(y_true, "y_true").astype(np.int64)
    p = as_1d(y_pred, "y_pred").astype(np.int64)
    _same_length(t, p, "y_true", "y_pred")
    if num_classes is None:
        num_classes = int(max(t.max(initial=0), p.max(initial=0))) + 1
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"`{name}` must hold class indices in [0, {num_classes}). Received range: [{a.min()}, {a.max()}]")
    if t.size == 0:  # sklearn rejects empty input
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    return sk_confusion_matrix(t, p, labels=np.arange(num_classes)).astype(np.int64)


def _counts_metrics(tp: int, fp: int, tn: int, fn: int, ci: float = 0.95) -> dict:
    n = tp + fp + tn + fn
    out = {
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
        "accuracy": _div(tp + tn, n),
        "sensitivity": _div(tp, tp + fn),
        "specificity": _div(tn, tn + fp),
        "ppv": _div(tp, tp + fp),
        "npv": _div(tn, tn + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
    }
    for key, (k, m) in {
        "accuracy": (tp + tn, n), "sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp), "npv": (tn, tn + fn),
    }.items():
        out[f"{key}_ci"] = list(wilson_interval(k, m, ci))
    return out


def threshold_metrics(y_true, y_prob, threshold: float, *, ci: float = 0.95) -> dict:
    """Binary metrics at ``prob >= threshold`` (tie rule: ``prob == threshold`` counts as positive).

    Args:
        y_true: 0/1 labels.
        y_prob: positive-class probabilities.
        threshold: operating point.
        ci: coverage of the Wilson intervals of the proportions.

    Returns:
        ``tp, fp, tn, fn, accuracy, sensitivity, specificity, ppv, npv, f1`` plus ``<name>_ci``
        ([low, high]) for the five proportions; undefined ratios are NaN.
    """
    y = binary_labels(y_true)
    p = as_scores(y_prob, "y_prob")
    _same_length(y, p, "y_true", "y_prob")
    pred = (p >= threshold).astype(np.int64)  # the tie rule: equal to the threshold → positive
    (tn, fp), (fn, tp) = confusion_matrix(y, pred, 2).tolist()
    out = _counts_metrics(tp, fp, tn, fn, ci)
    out["threshold"] = float(threshold)
    return out


from medtf.training.thresholds import THRESHOLD_METHODS, select_threshold  # noqa: E402,F401 - the one implementation


# --------------------------------------------------------------------------------------------------
# multi-class / ordinal / calibration


def quadratic_weighted_kappa(y_true, y_pred, num_classes: int | None = None) -> float:
    """Cohen's kappa with quadratic weights ``(i - j)^2`` on the class indices ``0..K-1``.

    ``sklearn.metrics.cohen_kappa_score(y_true, y_pred, weights="quadratic", labels=range(K))`` after the
    label checks of :func:`confusion_matrix`. NaN when the expected disagreement is zero (e.g. everything
    in one class) or there are no samples, without sklearn's warning.
    """
    t = as_1d(y_true, "y_true").astype(np.int64)
    p = as_1d(y_pred, "y_pred").astype(np.int64)
    cm = confusion_matrix(t, p, num_classes)  # validates lengths and label range
    k = cm.shape[0]
    if t.size == 0:
        return float("nan")
    import warnings

    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = float(cohen_kappa_score(t, p, labels=np.arange(k), weights="quadratic", replace_undefined_by=np.nan))
    return value if np.isfinite(value) else float("nan")


def per_class_metrics(cm: np.ndarray) -> dict:
    """One-vs-rest sensitivity, specificity, PPV, NPV, F1 for each class of a confusion matrix.

    Returns:
        ``{metric: [value per class]}`` (NaN where undefined) plus ``support`` (true count per class).
    """
    cm = np.asarray(cm, dtype=np.int64)
    n = int(cm.sum())
    out: dict[str, list] = {k: [] for k in ("sensitivity", "specificity", "ppv", "npv", "f1", "support")}
    for c in range(cm.shape[0]):
        tp = int(cm[c, c])
        fn = int(cm[c].sum()) - tp
        fp = int(cm[:, c].sum()) - tp
        tn = n - tp - fn - fp
        m = _counts_metrics(tp, fp, tn, fn)
        for key in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            out[key].append(m[key])
        out["support"].append(tp + fn)
    return out


def _nanmean(values) -> float:
    a = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def ovr_auc_ci(y_true, y_prob, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> dict:
    """One-vs-rest AUC per class and their macro average, with a class-stratified bootstrap CI.

    Per-class AUCs are ``sklearn.metrics.roc_auc_score(y == c, p[:, c])``, so the macro value equals
    ``roc_auc_score(y, p, multi_class="ovr", average="macro")`` when every class is present; classes absent
    from ``y_true`` get NaN and are left out of the macro. Bootstrap replicates: :func:`_weighted_auc`.

    Args:
        y_true: class indices (n,).
        y_prob: class probabilities (n, K).
        n_boot, ci, seed: as in :func:`roc_auc_ci`.

    Returns:
        ``{"value", "ci_low", "ci_high", "per_class": [AUC per class], "n_boot", "ci"}``.
    """
    _check_ci(n_boot, ci)
    p = np.asarray(y_prob, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"`y_prob` must be (n, num_classes). Received shape: {p.shape}")
    y = as_1d(y_true, "y_true").astype(np.int64)
    _same_length(y, p, "y_true", "y_prob")
    if not np.isfinite(p).all():
        raise ValueError("`y_prob` contains NaN or infinite values")
    k = p.shape[1]
    present = [c for c in range(k) if 0 < np.sum(y == c) < y.size]
    per_class = [float("nan")] * k
    boot = np.zeros((n_boot, len(present)))
    rng = np.random.default_rng(seed)
    counts = _stratified_counts(y, n_boot, rng) if present else None
    for j, c in enumerate(present):
        pos_m, neg_m = y == c, y != c
        per_class[c] = _sk_auc(pos_m.astype(np.int64), p[:, c])
        boot[:, j] = _weighted_auc(p[pos_m, c], p[neg_m, c], counts[:, pos_m], counts[:, neg_m])
    value = _nanmean([per_class[c] for c in present]) if present else float("nan")
    lo, hi = _percentile_ci(boot.mean(axis=1), ci) if present else (float("nan"), float("nan"))
    return {"value": value, "ci_low": lo, "ci_high": hi, "per_class": per_class, "n_boot": int(n_boot), "ci": ci}


def calibration_bins(correct, confidence, n_bins: int = 15) -> dict:
    """Equal-width reliability bins on [0, 1]: bin ``b`` holds ``b/n < conf <= (b+1)/n`` (0 in bin 0).

    Args:
        correct: observed outcome per sample (1 = event happened / prediction correct).
        confidence: predicted probability of that outcome.
        n_bins: number of bins.

    Returns:
        ``{"edges", "count", "confidence" (mean per bin), "accuracy" (event rate per bin)}``; empty
        bins have NaN means.
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1. Received: {n_bins}")
    c = as_1d(correct, "correct").astype(np.float64)
    conf = as_scores(confidence, "confidence")
    _same_length(c, conf, "correct", "confidence")
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ValueError(f"confidence must be in [0, 1]. Received range: [{conf.min()}, {conf.max()}]")
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / count
        acc = np.bincount(b, weights=c, minlength=n_bins) / count
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": count.tolist(),
        "confidence": mean_conf.tolist(),
        "accuracy": acc.tolist(),
    }


def expected_calibration_error(correct, confidence, n_bins: int = 15) -> float:
    """ECE = sum over bins of (n_b / N) * |event rate_b - mean confidence_b| (equal-width bins).

    For a binary task pass ``(y_true, p_positive)``; for multi-class pass ``(argmax == y, max prob)``
    (top-label ECE). NaN for empty input.
    """
    bins = calibration_bins(correct, confidence, n_bins)
    count = np.asarray(bins["count"], dtype=np.float64)
    n = count.sum()
    if n == 0:
        return float("nan")
    keep = count > 0
    gap = np.abs(np.asarray(bins["accuracy"])[keep] - np.asarray(bins["confidence"])[keep])
    return float(np.sum(count[keep] / n * gap))


def ordinal_class_probs(cum_probs) -> np.ndarray:
    """Cumulative ordinal outputs ``P(y > k)``, k = 0..K-2 (n, K-1) → class probabilities (n, K).

    ``P(y = 0) = 1 - P(y > 0)``, ``P(y = k) = P(y > k-1) - P(y > k)``, ``P(y = K-1) = P(y > K-2)``;
    negative differences (non-monotone outputs) are clipped to 0 and rows renormalised.
    """
    c = np.asarray(cum_probs, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"cumulative ordinal outputs must be (n, num_classes - 1). Received shape: {c.shape}")
    ext = np.concatenate([np.ones((c.shape[0], 1)), c, np.zeros((c.shape[0], 1))], axis=1)
    probs = np.clip(ext[:, :-1] - ext[:, 1:], 0.0, None)
    s = probs.sum(axis=1, keepdims=True)
    return np.where(s > 0, probs / np.where(s > 0, s, 1.0), 1.0 / probs.shape[1])


def ordinal_predict(cum_probs, threshold: float = 0.5) -> np.ndarray:
    """Predicted grade = number of cumulative outputs ``P(y > k) >= threshold`` (tie rule: an output
    exactly equal to the threshold counts as passed)."""
    c = np.asarray(cum_probs, dtype=np.float64)
    return (c >= threshold).sum(axis=1).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# task-level aggregates


def binary_metrics(
    y_true, y_prob, threshold: float, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0, n_bins: int = 15
) -> dict:
    """All binary metrics: AUC (+CI), average precision, thresholded metrics (+Wilson CIs), confusion
    matrix ``[[tn, fp], [fn, tp]]``, Brier score and ECE.
    """
    y = binary_labels(y_true)
    p = as_scores(y_prob, "y_prob")
    _same_length(y, p, "y_true", "y_prob")
    out = {"n": int(y.size), "positives": int(y.sum()), "auc": roc_auc_ci(y, p, n_boot=n_boot, ci=ci, seed=seed)}
    out["average_precision"] = average_precision(y, p)
    out.update(threshold_metrics(y, p, threshold, ci=ci))
    out["confusion_matrix"] = [[out["tn"], out["fp"]], [out["fn"], out["tp"]]]
    ece = expected_calibration_error(y, p, n_bins)  # first: it names probabilities outside [0, 1]
    if y.size:
        from sklearn.metrics import brier_score_loss

        out["brier"] = float(brier_score_loss(y, p, pos_label=1))
    else:
        out["brier"] = float("nan")
    out["ece"] = ece
    return out


def multiclass_metrics(
    y_true, y_prob, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0, n_bins: int = 15,
    y_pred=None,
) -> dict:
    """Multi-class metrics from class probabilities (n, K); prediction = argmax unless ``y_pred`` given.

    Returns accuracy (+Wilson CI), macro OvR AUC (+CI, per class), confusion matrix, per-class and
    macro sensitivity/specificity/PPV/NPV/F1, quadratic-weighted kappa, top-label ECE.
    """
    p = np.asarray(y_prob, dtype=np.float64)
    y = as_1d(y_true, "y_true").astype(np.int64)
    if p.ndim != 2:
        raise ValueError(f"`y_prob` must be (n, num_classes). Received shape: {p.shape}")
    _same_length(y, p, "y_true", "y_prob")
    k = p.shape[1]
    pred = np.argmax(p, axis=1) if y_pred is None else as_1d(y_pred, "y_pred").astype(np.int64)
    cm = confusion_matrix(y, pred, k)
    per = per_class_metrics(cm)
    correct = int(np.trace(cm))
    out = {
        "n": int(y.size),
        "accuracy": _div(correct, y.size),
        "accuracy_ci": list(wilson_interval(correct, y.size, ci)),
        "auc": ovr_auc_ci(y, p, n_boot=n_boot, ci=ci, seed=seed),
        "confusion_matrix": cm.tolist(),
        "per_class": per,
        "kappa_quadratic": quadratic_weighted_kappa(y, pred, k),
        "ece": expected_calibration_error(pred == y, p.max(axis=1), n_bins),
    }
    for key in ("sensitivity", "specificity", "ppv", "npv", "f1"):
        out[f"macro_{key}"] = _nanmean(per[key])
    return out


def multilabel_metrics(
    y_true, y_prob, thresholds, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0, n_bins: int = 15
) -> dict:
    """Per-label binary metrics (see :func:`binary_metrics`) and macro averages over labels.

    Args:
        y_true: (n, L) 0/1.
        y_prob: (n, L) probabilities.
        thresholds: one float or one per label; ``prob >= threshold`` → positive (ties positive).
    """
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.ndim != 2 or p.shape != y.shape:
        raise ValueError(f"multilabel y_true and y_prob must both be (n, num_labels). Received: {y.shape} and {p.shape}")
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (p.shape[1],))
    labels = [
        binary_metrics(y[:, j], p[:, j], float(thr[j]), n_boot=n_boot, ci=ci, seed=seed + j, n_bins=n_bins)
        for j in range(p.shape[1])
    ]
    out = {"n": int(y.shape[0]), "per_label": labels}
    for key in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "ece", "average_precision"):
        out[f"macro_{key}"] = _nanmean([m[key] for m in labels])
    out["macro_auc"] = _nanmean([m["auc"]["value"] for m in labels])
    pred = p >= thr
    out["subset_accuracy"] = float(np.mean(np.all(pred == (y == 1), axis=1))) if y.size else float("nan")
    return out


def ordinal_metrics(
    y_true, cum_probs, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0, n_bins: int = 15
) -> dict:
    """Ordinal metrics from cumulative outputs (n, K-1): quadratic kappa (the headline), accuracy,
    mean absolute grade error, confusion matrix, macro OvR AUC on the derived class probabilities,
    AUC of each cumulative split ``y > k``, top-label ECE.
    """
    c = np.asarray(cum_probs, dtype=np.float64)
    y = as_1d(y_true, "y_true").astype(np.int64)
    probs = ordinal_class_probs(c)
    pred = ordinal_predict(c)
    out = multiclass_metrics(y, probs, n_boot=n_boot, ci=ci, seed=seed, n_bins=n_bins, y_pred=pred)
    out["mae"] = float(np.mean(np.abs(pred - y))) if y.size else float("nan")
    out["cumulative_auc"] = [roc_auc((y > k).astype(np.int64), c[:, k]) for k in range(c.shape[1])]
    return out


# --------------------------------------------------------------------------------------------------
# segmentation


def _masks(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred).astype(bool)
    t = np.asarray(true).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction and reference masks must have the same shape. Received: {p.shape} and {t.shape}")
    return p, t


def dice(pred, true) -> float:
    """Dice ``2|P∩T| / (|P| + |T|)``; 1.0 when both masks are empty."""
    p, t = _masks(pred, true)
    den = int(p.sum()) + int(t.sum())
    return 1.0 if den == 0 else 2.0 * int(np.sum(p & t)) / den


def iou(pred, true) -> float:
    """Intersection over union (Jaccard); 1.0 when both masks are empty."""
    p, t = _masks(pred, true)
    union = int(np.sum(p | t))
    return 1.0 if union == 0 else int(np.sum(p & t)) / union


def _spacing(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    s = tuple(float(v) for v in np.atleast_1d(spacing))
    if len(s) != ndim or not all(v > 0 for v in s):
        raise ValueError(f"spacing must be {ndim} positive values (mm per voxel, array axis order). Received: {spacing}")
    return s


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: ``mask`` minus its erosion by the face-connected element (border = background)."""
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return m.copy()
    structure = ndimage.generate_binary_structure(m.ndim, 1)
    return m & ~ndimage.binary_erosion(m, structure=structure, border_value=0)


def surface_distances(pred, true, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm.

    Args:
        pred, true: boolean masks of equal shape (2D or 3D).
        spacing: mm per voxel along each array axis (default 1).

    Returns:
        ``(d_pred_to_true, d_true_to_pred)``: for every surface voxel of one mask, the distance to the
        nearest surface voxel of the other. Both empty arrays when a mask is empty.
    """
    from scipy import ndimage

    p, t = _masks(pred, true)
    sp = _spacing(spacing, p.ndim)
    if not p.any() or not t.any():
        return np.zeros(0), np.zeros(0)
    # crop to the union's bounding box + 1 voxel: distances between the surfaces are unchanged.
    coords = np.argwhere(p | t)
    lo = np.maximum(coords.min(axis=0) - 1, 0)
    hi = np.minimum(coords.max(axis=0) + 2, p.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sp_, st_ = surface(p)[box], surface(t)[box]
    dt_t = ndimage.distance_transform_edt(~st_, sampling=sp)
    dt_p = ndimage.distance_transform_edt(~sp_, sampling=sp)
    return dt_t[sp_], dt_p[st_]


def _surface_summary(pred, true, spacing, percentile: float = 95.0) -> dict:
    p, t = _masks(pred, true)
    ep, et = not p.any(), not t.any()
    if ep and et:
        return {"hd": 0.0, "hd95": 0.0, "assd": 0.0}
    if ep or et:
        return {"hd": float("nan"), "hd95": float("nan"), "assd": float("nan")}
    a, b = surface_distances(p, t, spacing)
    return {
        "hd": float(max(a.max(), b.max())),
        "hd95": float(max(np.percentile(a, percentile), np.percentile(b, percentile))),
        "assd": float((a.sum() + b.sum()) / (a.size + b.size)),
    }


def hausdorff_distance(pred, true, spacing=None) -> float:
    """Maximum symmetric surface distance in mm (see the module conventions for empty masks)."""
    return _surface_summary(pred, true, spacing)["hd"]


def hd95(pred, true, spacing=None) -> float:
    """95th-percentile Hausdorff distance in mm: max of the two directed 95th percentiles."""
    return _surface_summary(pred, true, spacing)["hd95"]


def mean_surface_distance(pred, true, spacing=None) -> float:
    """Average symmetric surface distance (ASSD) in mm."""
    return _surface_summary(pred, true, spacing)["assd"]


def segmentation_case_metrics(pred_labels, true_labels, num_classes: int, spacing=None, *, include_background: bool = False) -> dict:
    """Dice, IoU, HD95, HD and ASSD per class for one case.

    Args:
        pred_labels, true_labels: integer label maps of equal shape ((H, W) or (D, H, W)); for a
            single-class (sigmoid) model use 0/1 maps and ``num_classes=2``.
        num_classes: number of labels including background 0.
        spacing: mm per voxel along the array axes.
        include_background: also score label 0.

    Returns:
        ``{class_index: {"dice", "iou", "hd95", "hd", "assd", "true_voxels", "pred_voxels"}}``.
    """
    pl = np.asarray(pred_labels)
    tl = np.asarray(true_labels)
    if pl.shape != tl.shape:
        raise ValueError(f"prediction and reference label maps must have the same shape. Received: {pl.shape} and {tl.shape}")
    _spacing(spacing, pl.ndim)
    out = {}
    for c in range(0 if include_background else 1, int(num_classes)):
        p, t = pl == c, tl == c
        m = {"dice": dice(p, t), "iou": iou(p, t)}
        m.update(_surface_summary(p, t, spacing))
        m["true_voxels"], m["pred_voxels"] = int(t.sum()), int(p.sum())
        out[c] = m
    return out


SEGMENTATION_KEYS = ("dice", "iou", "hd95", "hd", "assd")


def summarize_segmentation(cases: Sequence[dict], class_names: Sequence[str] | None = None) -> dict:
    """Aggregate per-case results of :func:`segmentation_case_metrics`.

    Args:
        cases: ``[{"case": key, "metrics": {class: {...}}}, ...]``.
        class_names: optional names indexed by class.

    Returns:
        ``{"per_class": {name: {metric: {"mean", "sd", "median", "n", "n_undefined"}}}, "mean_dice": ...,
        "per_case": [...]}``; NaN values (undefined distances) are excluded from the statistics and
        counted in ``n_undefined``.
    """
    classes = sorted({c for case in cases for c in case["metrics"]})
    per_class = {}
    for c in classes:
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        stats = {}
        for key in SEGMENTATION_KEYS:
            v = np.array([case["metrics"][c][key] for case in cases if c in case["metrics"]], dtype=np.float64)
            ok = v[np.isfinite(v)]
            stats[key] = {
                "mean": float(ok.mean()) if ok.size else float("nan"),
                "sd": float(ok.std(ddof=1)) if ok.size > 1 else float("nan"),
                "median": float(np.median(ok)) if ok.size else float("nan"),
                "n": int(ok.size),
                "n_undefined": int(v.size - ok.size),
            }
        per_class[name] = stats
    mean_dice = _nanmean([s["dice"]["mean"] for s in per_class.values()]) if per_class else float("nan")
    return {"per_class": per_class, "mean_dice": mean_dice, "n_cases": len(cases)}


# --------------------------------------------------------------------------------------------------
# restoration (TensorFlow built-ins, imported lazily)


def restoration_metrics(y_true, y_pred, *, max_val: float = 1.0) -> dict:
    """PSNR and SSIM per image with ``tf.image.psnr`` / ``tf.image.ssim``.

    Args:
        y_true, y_pred: (n, H, W, C) or (n, D, H, W, C) arrays in the same intensity scale.
        max_val: dynamic range of the values (1.0 for [0, 1] images).

    Returns:
        ``{"psnr": [per image], "ssim": [per image], "psnr_mean", "ssim_mean"}``. For volumes PSNR uses the
        whole-volume MSE and SSIM is the mean over axial slices. The SSIM window is
        ``min(11, H, W)`` so small images work.

    Raises:
        ValueError: shape mismatch or unsupported rank.
    """
    import tensorflow as tf

    t = np.asarray(y_true, dtype=np.float32)
    p = np.asarray(y_pred, dtype=np.float32)
    if t.shape != p.shape or t.ndim not in (4, 5):
        raise ValueError(f"y_true and y_pred must both be (n, H, W, C) or (n, D, H, W, C). Received: {t.shape} and {p.shape}")
    n = t.shape[0]
    if t.ndim == 5:
        d, h, w, c = t.shape[1:]
        psnr = tf.image.psnr(t.reshape(n, d * h, w, c), p.reshape(n, d * h, w, c), max_val=max_val).numpy()
        fs = min(11, h, w)
        ssim = tf.image.ssim(t.reshape(n * d, h, w, c), p.reshape(n * d, h, w, c), max_val=max_val, filter_size=fs)
        ssim = ssim.numpy().reshape(n, d).mean(axis=1)
    else:
        fs = min(11, t.shape[1], t.shape[2])
        psnr = tf.image.psnr(t, p, max_val=max_val).numpy()
        ssim = tf.image.ssim(t, p, max_val=max_val, filter_size=fs).numpy()
    psnr = psnr.astype(np.float64)
    return {
        "psnr": psnr.tolist(),
        "ssim": ssim.astype(np.float64).tolist(),
        "psnr_mean": _nanmean(psnr[np.isfinite(psnr)]) if np.isfinite(psnr).any() else float("inf"),
        "ssim_mean": _nanmean(ssim),
        "n": int(n),
    }


def bootstrap_ci(
    statistic: Callable[..., float], *arrays, strata=None, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Generic percentile bootstrap CI of ``statistic(*resampled_arrays)``.

    Args:
        statistic: function of the arrays (indexed along axis 0) returning a float.
        *arrays: arrays with the same first dimension.
        strata: optional labels; resampling is done within each stratum.
        n_boot, ci, seed: replicates, coverage, generator seed.

    Returns:
        ``(low, high)``; NaN replicates are ignored.
    """
    _check_ci(n_boot, ci)
    arrs = [np.asarray(a) for a in arrays]
    n = arrs[0].shape[0]
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(np.asarray(strata) == v) for v in np.unique(strata)]
    values = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups])
        values[b] = statistic(*[a[idx] for a in arrs])
    return _percentile_ci(values, ci)
