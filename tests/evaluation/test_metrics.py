"""Classification metrics vs independent references (sklearn, SciPy), on random and edge-case inputs.

Tolerances: exact-arithmetic quantities (counts, AUC ranks, kappa from counts) are compared with
``rtol=1e-12`` (floating summation order only); interval end points with ``1e-9``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from medtf.evaluation import metrics as M

TOL = dict(rtol=1e-12, atol=1e-12)


def _random_binary(n, seed, signal=1.0, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.normal(size=n) + signal * y
    if ties:
        s = np.round(s, 1)
    return y, s


EDGE_CASES = {
    "perfect": (np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.8, 0.9])),
    "inverted": (np.array([0, 0, 0, 1, 1]), np.array([0.9, 0.8, 0.7, 0.2, 0.1])),
    "all_tied": (np.array([0, 1, 0, 1, 1]), np.full(5, 0.5)),
    "some_ties": (np.array([0, 1, 0, 1, 1, 0]), np.array([0.5, 0.5, 0.2, 0.9, 0.2, 0.9])),
    "single_pos": (np.array([0, 0, 0, 0, 1]), np.array([0.1, 0.6, 0.3, 0.4, 0.5])),
}


@pytest.mark.parametrize("n,seed,ties", [(10, 0, False), (57, 1, True), (500, 2, False), (2000, 3, True)])
def test_auc_matches_sklearn_random(n, seed, ties):
    y, s = _random_binary(n, seed, ties=ties)
    np.testing.assert_allclose(M.roc_auc(y, s), skm.roc_auc_score(y, s), **TOL)
    np.testing.assert_allclose(M.average_precision(y, s), skm.average_precision_score(y, s), **TOL)


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_auc_and_curves_edge_cases(name):
    y, s = EDGE_CASES[name]
    np.testing.assert_allclose(M.roc_auc(y, s), skm.roc_auc_score(y, s), **TOL)
    for drop in (True, False):
        fpr, tpr, thr = M.roc_curve(y, s, drop_intermediate=drop)
        F, T, TH = skm.roc_curve(y, s, drop_intermediate=drop)
        np.testing.assert_allclose(fpr, F, **TOL)
        np.testing.assert_allclose(tpr, T, **TOL)
        np.testing.assert_allclose(thr[1:], TH[1:], **TOL)
        assert np.isinf(thr[0])
    np.testing.assert_allclose(M.average_precision(y, s), skm.average_precision_score(y, s), **TOL)


def test_auc_perfect_and_inverted_values():
    assert M.roc_auc(*EDGE_CASES["perfect"]) == 1.0
    assert M.roc_auc(*EDGE_CASES["inverted"]) == 0.0
    assert M.roc_auc(*EDGE_CASES["all_tied"]) == 0.5


def test_auc_single_class_is_nan_like_sklearn():
    y = np.ones(6, int)
    s = np.linspace(0, 1, 6)
    with pytest.warns(Warning, match="one class"):  # sklearn >= 1.6 warns and returns NaN (older: raised)
        ref = skm.roc_auc_score(y, s)
    assert np.isnan(ref)
    assert np.isnan(M.roc_auc(y, s))
    ci = M.roc_auc_ci(y, s, n_boot=10)
    assert np.isnan(ci["value"]) and np.isnan(ci["ci_low"])


def test_invalid_inputs_are_named():
    with pytest.raises(ValueError, match="y_true"):
        M.roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        M.roc_auc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="same number"):
        M.roc_auc([0, 1, 1], [0.1, 0.3])
    with pytest.raises(ValueError, match="n_boot"):
        M.roc_auc_ci([0, 1], [0.1, 0.3], n_boot=0)


def test_bootstrap_ci_contains_point_and_is_seeded():
    for seed in range(12):
        y, s = _random_binary(80, seed, signal=0.8, ties=seed % 2 == 0)
        r = M.roc_auc_ci(y, s, n_boot=500, seed=seed)
        assert r["ci_low"] <= r["value"] <= r["ci_high"], r
        assert r["ci_low"] < r["ci_high"]
        np.testing.assert_allclose(r["value"], skm.roc_auc_score(y, s), **TOL)
    y, s = _random_binary(80, 0)
    assert M.roc_auc_ci(y, s, n_boot=300, seed=7) == M.roc_auc_ci(y, s, n_boot=300, seed=7)
    assert M.roc_auc_ci(y, s, n_boot=300, seed=7) != M.roc_auc_ci(y, s, n_boot=300, seed=8)


def test_bootstrap_ci_narrows_as_n_grows():
    widths = []
    for n in (50, 200, 800, 3200):
        y, s = _random_binary(n, 42, signal=1.0)
        r = M.roc_auc_ci(y, s, n_boot=1000, seed=0)
        widths.append(r["ci_high"] - r["ci_low"])
    assert all(a > b for a, b in zip(widths, widths[1:])), widths
    # ~1/sqrt(n): quadrupling n roughly halves the width
    assert 1.5 < widths[0] / widths[1] < 2.7, widths


def test_vectorised_bootstrap_equals_explicit_resampling():
    """The weighted (multinomial-count) AUC equals sklearn's AUC on the explicitly resampled data."""
    y, s = _random_binary(60, 5, ties=True)
    pos, neg = s[y == 1], s[y == 0]
    rng = np.random.default_rng(0)
    ip = rng.integers(0, pos.size, (20, pos.size))
    ineg = rng.integers(0, neg.size, (20, neg.size))
    wp = np.stack([np.bincount(r, minlength=pos.size) for r in ip])
    wn = np.stack([np.bincount(r, minlength=neg.size) for r in ineg])
    got = M._weighted_auc(pos, neg, wp, wn)
    for b in range(20):
        yy = np.r_[np.ones(pos.size), np.zeros(neg.size)]
        ss = np.r_[pos[ip[b]], neg[ineg[b]]]
        np.testing.assert_allclose(got[b], skm.roc_auc_score(yy, ss), **TOL)


def test_generic_bootstrap_ci_stratified():
    y, s = _random_binary(200, 3)
    lo, hi = M.bootstrap_ci(lambda a, b: skm.roc_auc_score(a, b), y, s, strata=y, n_boot=200, seed=0)
    r = M.roc_auc_ci(y, s, n_boot=2000, seed=1)
    assert lo < r["value"] < hi
    assert abs(lo - r["ci_low"]) < 0.03 and abs(hi - r["ci_high"]) < 0.03


@pytest.mark.parametrize("seed", range(4))
def test_threshold_metrics_vs_sklearn(seed):
    y, s = _random_binary(300, seed)
    p = 1 / (1 + np.exp(-s))
    t = float(np.quantile(p, 0.4 + 0.1 * seed))
    m = M.threshold_metrics(y, p, t)
    pred = (p >= t).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    np.testing.assert_allclose(m["accuracy"], skm.accuracy_score(y, pred), **TOL)
    np.testing.assert_allclose(m["sensitivity"], skm.recall_score(y, pred), **TOL)
    np.testing.assert_allclose(m["specificity"], skm.recall_score(1 - y, 1 - pred), **TOL)
    np.testing.assert_allclose(m["ppv"], skm.precision_score(y, pred), **TOL)
    np.testing.assert_allclose(m["npv"], skm.precision_score(1 - y, 1 - pred), **TOL)
    np.testing.assert_allclose(m["f1"], skm.f1_score(y, pred), **TOL)


def test_threshold_metrics_degenerate_are_nan_like_sklearn_zero_division_nan():
    y = np.zeros(5, int)
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    m = M.threshold_metrics(y, p, 0.9)  # nothing predicted positive, no positives
    pred = (p >= 0.9).astype(int)
    assert np.isnan(m["sensitivity"]) and np.isnan(m["ppv"]) and np.isnan(m["f1"])
    assert np.isnan(skm.f1_score(y, pred, zero_division=np.nan))
    assert m["specificity"] == 1.0 and m["accuracy"] == 1.0
    assert np.isnan(m["sensitivity_ci"][0])


def test_wilson_interval_vs_scipy():
    for k, n in [(0, 10), (3, 10), (10, 10), (37, 120), (499, 1000)]:
        ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        np.testing.assert_allclose(M.wilson_interval(k, n), (ref.low, ref.high), rtol=1e-9, atol=1e-12)


def test_select_threshold_youden_is_optimal():
    y, s = _random_binary(400, 11, ties=True)
    t = M.select_threshold(y, s, "youden")
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    best = np.max(tpr - fpr)
    m = M.threshold_metrics(y, s, t)
    np.testing.assert_allclose(m["sensitivity"] + m["specificity"] - 1, best, **TOL)
    assert t in set(s.tolist())


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_select_threshold_target_sensitivity(target):
    y, s = _random_binary(300, 4)
    t = M.select_threshold(y, s, "target_sensitivity", target_sensitivity=target)
    m = M.threshold_metrics(y, s, t)
    assert m["sensitivity"] >= target
    # the next higher observed score would miss the target: t is the best-specificity choice
    higher = np.sort(np.unique(s[s > t]))
    if higher.size:
        assert M.threshold_metrics(y, s, higher[0])["sensitivity"] < target


def test_select_threshold_errors():
    with pytest.raises(ValueError, match="both classes"):
        M.select_threshold([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="method"):
        M.select_threshold([0, 1], [0.1, 0.2], "f1")


@pytest.mark.parametrize("k,n,seed", [(3, 50, 0), (5, 400, 1), (4, 7, 2)])
def test_confusion_and_kappa_vs_sklearn(k, n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    pred = np.clip(y + rng.integers(-1, 2, n), 0, k - 1)
    np.testing.assert_array_equal(M.confusion_matrix(y, pred, k), skm.confusion_matrix(y, pred, labels=range(k)))
    np.testing.assert_allclose(
        M.quadratic_weighted_kappa(y, pred, k),
        skm.cohen_kappa_score(y, pred, weights="quadratic", labels=list(range(k))),
        **TOL,
    )


def test_kappa_edge_cases():
    y = np.array([0, 1, 2, 3, 4])
    assert M.quadratic_weighted_kappa(y, y, 5) == 1.0
    inv = 4 - y
    np.testing.assert_allclose(M.quadratic_weighted_kappa(y, inv, 5),
                               skm.cohen_kappa_score(y, inv, weights="quadratic", labels=list(range(5))), **TOL)
    # a class never used (index 2) still counts in the weights, as with sklearn labels=range(K)
    a, b = np.array([0, 1, 3, 3, 4, 0]), np.array([0, 3, 3, 4, 4, 1])
    np.testing.assert_allclose(M.quadratic_weighted_kappa(a, b, 5),
                               skm.cohen_kappa_score(a, b, weights="quadratic", labels=list(range(5))), **TOL)
    with np.errstate(all="ignore"):
        assert np.isnan(M.quadratic_weighted_kappa([1, 1, 1], [1, 1, 1], 3))


def test_multiclass_metrics_vs_sklearn():
    rng = np.random.default_rng(0)
    k, n = 4, 300
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = M.multiclass_metrics(y, p, n_boot=200)
    pred = p.argmax(1)
    np.testing.assert_allclose(m["auc"]["value"], skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), **TOL)
    np.testing.assert_allclose(m["auc"]["per_class"], skm.roc_auc_score(np.eye(k)[y], p, average=None), **TOL)
    assert m["auc"]["ci_low"] <= m["auc"]["value"] <= m["auc"]["ci_high"]
    np.testing.assert_allclose(m["accuracy"], skm.accuracy_score(y, pred), **TOL)
    np.testing.assert_allclose(m["per_class"]["f1"], skm.f1_score(y, pred, average=None), **TOL)
    np.testing.assert_allclose(m["macro_f1"], skm.f1_score(y, pred, average="macro"), **TOL)
    np.testing.assert_allclose(m["per_class"]["sensitivity"], skm.recall_score(y, pred, average=None), **TOL)
    np.testing.assert_allclose(m["per_class"]["ppv"], skm.precision_score(y, pred, average=None), **TOL)
    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y, pred))
    np.testing.assert_allclose(m["kappa_quadratic"], skm.cohen_kappa_score(y, pred, weights="quadratic"), **TOL)


def test_multiclass_missing_class_in_truth():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.2, 0.3, 0.5]])
    m = M.multiclass_metrics(y, p, n_boot=50)
    assert np.isnan(m["auc"]["per_class"][2])
    np.testing.assert_allclose(m["auc"]["per_class"][:2], [skm.roc_auc_score(y == c, p[:, c]) for c in (0, 1)], **TOL)
    f1 = skm.f1_score(y, p.argmax(1), labels=[0, 1, 2], average=None, zero_division=np.nan)
    np.testing.assert_allclose(m["per_class"]["f1"], f1, **TOL)


def test_multilabel_metrics_vs_sklearn():
    rng = np.random.default_rng(2)
    n, L = 200, 3
    y = rng.integers(0, 2, (n, L))
    p = 1 / (1 + np.exp(-(rng.normal(size=(n, L)) + 1.2 * (2 * y - 1))))
    m = M.multilabel_metrics(y, p, [0.5, 0.4, 0.6], n_boot=100)
    np.testing.assert_allclose([lm["auc"]["value"] for lm in m["per_label"]], skm.roc_auc_score(y, p, average=None), **TOL)
    pred = p >= np.array([0.5, 0.4, 0.6])
    np.testing.assert_allclose([lm["f1"] for lm in m["per_label"]], skm.f1_score(y, pred, average=None), **TOL)
    np.testing.assert_allclose(m["subset_accuracy"], skm.accuracy_score(y, pred), **TOL)


def _ece_reference(correct, conf, n_bins):
    """Loop implementation, bins (lo, hi] with 0 in the first bin."""
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        sel = [(c, q) for c, q in zip(correct, conf) if (lo < q <= hi) or (b == 0 and q == 0.0)]
        if sel:
            acc = np.mean([c for c, _ in sel])
            mc = np.mean([q for _, q in sel])
            total += len(sel) / len(conf) * abs(acc - mc)
    return total


def test_ece_against_loop_reference_and_known_values():
    rng = np.random.default_rng(0)
    for n_bins in (5, 10, 15):
        conf = np.r_[rng.random(300), [0.0, 1.0, 0.2, 0.4]]  # include bin edges
        correct = (rng.random(conf.size) < conf).astype(int)
        np.testing.assert_allclose(M.expected_calibration_error(correct, conf, n_bins),
                                   _ece_reference(correct, conf, n_bins), rtol=1e-12)
    # perfectly confident and right → 0; confident and always wrong → 1
    assert M.expected_calibration_error([1, 1, 1], [1.0, 1.0, 1.0]) == 0.0
    assert M.expected_calibration_error([0, 0], [1.0, 1.0]) == 1.0
    # hand computation: two bins of 2 samples
    np.testing.assert_allclose(M.expected_calibration_error([1, 0, 1, 1], [0.2, 0.3, 0.8, 0.9], 2),
                               0.5 * abs(0.5 - 0.25) + 0.5 * abs(1 - 0.85), rtol=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.expected_calibration_error([1], [1.5])


def test_ordinal_helpers_and_metrics():
    cum = np.array([[0.9, 0.6, 0.2], [0.1, 0.05, 0.01], [0.99, 0.9, 0.8], [0.4, 0.7, 0.1]])
    probs = M.ordinal_class_probs(cum)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(probs[0], [0.1, 0.3, 0.4, 0.2], rtol=1e-12)
    np.testing.assert_array_equal(M.ordinal_predict(cum), [2, 0, 3, 1])
    y = np.array([2, 0, 3, 2])
    m = M.ordinal_metrics(y, cum, n_boot=50)
    pred = M.ordinal_predict(cum)
    np.testing.assert_allclose(m["kappa_quadratic"],
                               skm.cohen_kappa_score(y, pred, weights="quadratic", labels=[0, 1, 2, 3]), **TOL)
    np.testing.assert_allclose(m["mae"], np.mean(np.abs(pred - y)), **TOL)
    np.testing.assert_allclose(m["cumulative_auc"][0], skm.roc_auc_score(y > 0, cum[:, 0]), **TOL)


# --------------------------------------------------------------------------------------------------
# library-backed curves and scores, bootstrap replicates vs sklearn, tie rule


@pytest.mark.parametrize("n,seed,ties", [(25, 0, True), (400, 1, False), (1500, 2, True)])
def test_roc_and_pr_curves_match_sklearn_random(n, seed, ties):
    """Same points as sklearn (ROC as is; PR reversed so the thresholds decrease). Tolerance 1e-12."""
    y, s = _random_binary(n, seed, ties=ties)
    for drop in (True, False):
        fpr, tpr, thr = M.roc_curve(y, s, drop_intermediate=drop)
        F, T, TH = skm.roc_curve(y, s, drop_intermediate=drop)
        np.testing.assert_allclose(fpr, F, **TOL)
        np.testing.assert_allclose(tpr, T, **TOL)
        np.testing.assert_array_equal(thr, TH)
    prec, rec, thr = M.precision_recall_curve(y, s)
    P, R, TH = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(prec, P[::-1], **TOL)
    np.testing.assert_allclose(rec, R[::-1], **TOL)
    np.testing.assert_array_equal(thr, TH[::-1])
    assert prec[0] == 1.0 and rec[0] == 0.0 and np.all(np.diff(thr) < 0)
    # AP is the step integral of the returned curve
    np.testing.assert_allclose(np.sum(np.diff(rec) * prec[1:]), skm.average_precision_score(y, s), **TOL)


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_pr_curve_edge_cases_match_sklearn(name):
    y, s = EDGE_CASES[name]
    prec, rec, thr = M.precision_recall_curve(y, s)
    P, R, TH = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(prec, P[::-1], **TOL)
    np.testing.assert_allclose(rec, R[::-1], **TOL)
    np.testing.assert_array_equal(thr, TH[::-1])


def test_one_class_curves_are_nan_without_warnings():
    import warnings

    s = np.array([0.2, 0.4, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sklearn warnings are handled inside medtf
        fpr, tpr, _ = M.roc_curve(np.ones(3, int), s)
        assert np.isnan(fpr).all() and np.isfinite(tpr).all()
        fpr, tpr, _ = M.roc_curve(np.zeros(3, int), s)
        assert np.isnan(tpr).all() and np.isfinite(fpr).all()
        prec, rec, _ = M.precision_recall_curve(np.zeros(3, int), s)
        assert rec[0] == 0.0 and np.isnan(rec[1:]).all()
        assert np.isnan(M.average_precision(np.zeros(3, int), s))
        assert M.average_precision(np.ones(3, int), s) == 1.0
        assert np.isnan(M.quadratic_weighted_kappa([1, 1, 1], [1, 1, 1], 3))
        assert np.isnan(M.quadratic_weighted_kappa([], [], 3))
    np.testing.assert_array_equal(M.confusion_matrix([], [], 2), np.zeros((2, 2), int))


def test_confusion_matrix_rejects_out_of_range_labels():
    """sklearn silently drops labels outside ``labels=range(K)``; medtf refuses them."""
    with pytest.raises(ValueError, match=r"y_pred.*\[0, 3\)"):
        M.confusion_matrix([0, 1, 2], [0, 1, 3], 3)
    with pytest.raises(ValueError, match="y_true"):
        M.quadratic_weighted_kappa([-1, 1], [0, 1], 3)
    cm = M.confusion_matrix([0, 2, 2], [0, 1, 2])  # default K = max label + 1
    np.testing.assert_array_equal(cm, skm.confusion_matrix([0, 2, 2], [0, 1, 2], labels=[0, 1, 2]))
    assert cm.dtype == np.int64


def test_binary_metrics_vs_sklearn():
    y, s = _random_binary(300, 9)
    p = 1 / (1 + np.exp(-s))
    m = M.binary_metrics(y, p, 0.5, n_boot=100)
    np.testing.assert_allclose(m["auc"]["value"], skm.roc_auc_score(y, p), **TOL)
    np.testing.assert_allclose(m["average_precision"], skm.average_precision_score(y, p), **TOL)
    np.testing.assert_allclose(m["brier"], skm.brier_score_loss(y, p), **TOL)
    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y, (p >= 0.5).astype(int)))


def test_roc_auc_ci_replicates_equal_sklearn_on_the_resamples():
    """Re-draw roc_auc_ci's resamples (same seed, same draw order) and score a few with sklearn (1e-12)."""
    y, s = _random_binary(90, 21, ties=True)
    pos, neg = s[y == 1], s[y == 0]
    n_boot, seed = 40, 3
    rng = np.random.default_rng(seed)
    wp = rng.multinomial(pos.size, np.full(pos.size, 1.0 / pos.size), size=n_boot)
    wn = rng.multinomial(neg.size, np.full(neg.size, 1.0 / neg.size), size=n_boot)
    reps = M._weighted_auc(pos, neg, wp, wn)
    for b in (0, 7, 19, 39):
        yy = np.r_[np.ones(wp[b].sum()), np.zeros(wn[b].sum())]
        ss = np.r_[np.repeat(pos, wp[b]), np.repeat(neg, wn[b])]
        np.testing.assert_allclose(reps[b], skm.roc_auc_score(yy, ss), **TOL)
    r = M.roc_auc_ci(y, s, n_boot=n_boot, seed=seed)
    alpha = (1 - 0.95) / 2
    np.testing.assert_allclose([r["ci_low"], r["ci_high"]], np.quantile(reps, [alpha, 1 - alpha]), **TOL)
    np.testing.assert_allclose(r["value"], skm.roc_auc_score(y, s), **TOL)


def test_ovr_auc_ci_replicates_equal_sklearn_on_the_resamples():
    rng0 = np.random.default_rng(4)
    k, n = 3, 120
    y = rng0.integers(0, k, n)
    p = rng0.dirichlet(np.ones(k), n) + 0.3 * np.eye(k)[y]
    p = np.round(p / p.sum(1, keepdims=True), 2)  # ties
    n_boot, seed = 30, 5
    r = M.ovr_auc_ci(y, p, n_boot=n_boot, seed=seed)
    counts = M._stratified_counts(y, n_boot, np.random.default_rng(seed))
    reps = np.stack([M._weighted_auc(p[y == c, c], p[y != c, c], counts[:, y == c], counts[:, y != c])
                     for c in range(k)], axis=1)
    for b in (0, 11, 29):
        idx = np.repeat(np.arange(n), counts[b])
        ref = skm.roc_auc_score(np.eye(k)[y[idx]], p[idx], average=None)  # one-vs-rest per class
        np.testing.assert_allclose(reps[b], ref, **TOL)
    lo, hi = np.quantile(reps.mean(1), [0.025, 0.975])
    np.testing.assert_allclose([r["ci_low"], r["ci_high"]], [lo, hi], **TOL)
    np.testing.assert_allclose(r["per_class"], skm.roc_auc_score(np.eye(k)[y], p, average=None), **TOL)


def test_calibration_bins_match_sklearn_calibration_curve():
    """Non-empty equal-width bins equal sklearn's calibration_curve(strategy="uniform"); ECE stays
    hand-written (sklearn has no ECE). Random confidences avoid exact bin edges. Tolerance 1e-12."""
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(1)
    for n_bins in (5, 10, 15):
        conf = rng.random(500)
        correct = (rng.random(conf.size) < conf ** 1.3).astype(int)
        bins = M.calibration_bins(correct, conf, n_bins)
        keep = np.asarray(bins["count"]) > 0
        prob_true, prob_pred = calibration_curve(correct, conf, n_bins=n_bins, strategy="uniform")
        np.testing.assert_allclose(np.asarray(bins["accuracy"])[keep], prob_true, **TOL)
        np.testing.assert_allclose(np.asarray(bins["confidence"])[keep], prob_pred, **TOL)


def test_wilson_interval_closed_form():
    """k = 0: the Wilson interval is [0, z^2 / (n + z^2)]; symmetric around 1/2 for k = n/2."""
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(M.wilson_interval(0, 10), (0.0, z * z / (10 + z * z)), rtol=1e-9, atol=1e-12)
    lo, hi = M.wilson_interval(50, 100)
    np.testing.assert_allclose(lo + hi, 1.0, rtol=1e-12)
    assert all(np.isnan(M.wilson_interval(0, 0)))


def test_tie_rule_probability_equal_to_threshold_is_positive():
    """The documented rule ``p >= threshold`` → positive, at every place a threshold is applied."""
    from medtf.evaluation.evaluate import _ordinal_labels, evaluate_predictions

    y = np.array([1, 0, 1, 0])
    p = np.array([0.5, 0.5, 0.7, 0.2])
    m = M.threshold_metrics(y, p, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 0)
    m = M.binary_metrics(y, p, 0.5, n_boot=10)
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    # the operating points of roc_curve use the same rule: tpr/fpr at threshold t count p >= t
    fpr, tpr, thr = M.roc_curve(y, p, drop_intermediate=False)
    for f, t, th in zip(fpr[1:], tpr[1:], thr[1:]):
        assert t == np.mean(p[y == 1] >= th) and f == np.mean(p[y == 0] >= th)
    # a chosen threshold is an observed probability, and that sample is then positive
    t = M.select_threshold(y, p, "target_sensitivity", target_sensitivity=1.0)
    assert t == 0.5 and M.threshold_metrics(y, p, t)["sensitivity"] == 1.0
    # multilabel: per-label thresholds
    ym = np.array([[1, 0], [0, 1], [1, 1]])
    pm = np.array([[0.3, 0.6], [0.1, 0.6], [0.3, 0.2]])
    mm = M.multilabel_metrics(ym, pm, [0.3, 0.6], n_boot=10)
    assert mm["per_label"][0]["tp"] == 2 and mm["per_label"][1]["fp"] == 1 and mm["per_label"][1]["tp"] == 1
    np.testing.assert_allclose(mm["subset_accuracy"], 1 / 3, **TOL)  # only row 1 fully right
    np.testing.assert_allclose(mm["subset_accuracy"], skm.accuracy_score(ym, (pm >= [0.3, 0.6]).astype(int)), **TOL)
    # ordinal cumulative outputs and cumulative targets at exactly 0.5 count as passed
    np.testing.assert_array_equal(M.ordinal_predict([[0.5, 0.5, 0.49], [0.51, 0.2, 0.1]]), [2, 1])
    np.testing.assert_array_equal(_ordinal_labels(np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]), 4), [2, 1])
    # evaluate_predictions with a given binary threshold
    rep = evaluate_predictions(y, p, "binary", threshold=0.5, n_boot=10)
    assert rep["metrics"]["tp"] == 2 and rep["metrics"]["fp"] == 1
