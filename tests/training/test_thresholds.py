"""Operating-point selection (medtf.training.thresholds): the one threshold rule, checked against sklearn's
ROC curve and against the copy evaluation still carries until it re-exports this one."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from medtf.training.thresholds import THRESHOLD_METHODS, choose_threshold, parse_threshold_method, select_threshold


def _data(n, seed, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    if ties:
        s = np.round(s, 1)  # many equal scores: the tie rule decides
    return y, s


def _sens_spec(y, s, t):
    pred = s >= t  # the tie rule: equal to the threshold → positive
    return pred[y == 1].mean(), (~pred[y == 0]).mean()


@pytest.mark.parametrize("ties", [False, True])
def test_youden_is_the_highest_optimal_observed_threshold(ties):
    y, s = _data(300, 1, ties)
    t = select_threshold(y, s, "youden")
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    j = tpr - fpr
    sens, spec = _sens_spec(y, s, t)
    assert sens + spec - 1 == pytest.approx(j.max(), abs=1e-12)
    assert t in set(s.tolist())
    assert t == thr[int(np.argmax(j))]  # first maximum on the decreasing thresholds = the highest


@pytest.mark.parametrize("target", [0.5, 0.9, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_target_sensitivity_is_the_highest_threshold_meeting_it(target, ties):
    y, s = _data(300, 2, ties)
    t = select_threshold(y, s, "target_sensitivity", target_sensitivity=target)
    assert _sens_spec(y, s, t)[0] >= target
    higher = np.unique(s[s > t])
    if higher.size:
        assert _sens_spec(y, s, higher[0])[0] < target


def test_evaluation_uses_this_one_implementation():
    """One threshold rule: evaluation re-exports training's (no second copy to drift)."""
    from medtf.evaluation import evaluate, metrics
    from medtf.training import thresholds

    assert metrics.select_threshold is select_threshold is thresholds.select_threshold
    assert evaluate.parse_threshold_method is thresholds.parse_threshold_method


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="both classes"):
        select_threshold([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="method must be one of"):
        select_threshold([0, 1], [0.1, 0.2], "f1")
    with pytest.raises(ValueError, match="only 0 and 1"):
        select_threshold([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN or infinite"):
        select_threshold([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="same number of samples"):
        select_threshold([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"target_sensitivity must be in \(0, 1\]"):
        select_threshold([0, 1], [0.1, 0.2], "target_sensitivity", target_sensitivity=0)
    assert THRESHOLD_METHODS == ("youden", "target_sensitivity")


def test_parse_and_choose():
    assert parse_threshold_method(None) == ("youden", 0.9)
    assert parse_threshold_method("youden") == ("youden", 0.9)
    assert parse_threshold_method("sensitivity:0.8") == ("target_sensitivity", 0.8)
    assert parse_threshold_method("target_sensitivity") == ("target_sensitivity", 0.9)
    with pytest.raises(ValueError, match="youden"):
        parse_threshold_method("f1")
    y, s = _data(100, 3)
    assert choose_threshold(y, s) == select_threshold(y, s, "youden")
    assert choose_threshold(y[:, None], s, "sensitivity:0.8") == \
        select_threshold(y, s, "target_sensitivity", target_sensitivity=0.8)
    assert choose_threshold(np.ones(5), np.linspace(0, 1, 5)) == 0.5  # one class: the default
