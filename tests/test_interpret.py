"""medtf.interpret: the one decision rule (p >= threshold), used by predict, the edge runtime, evaluation
and export parity."""

from __future__ import annotations

import numpy as np
import pytest

from medtf.interpret import decide, interpret, positive, segmentation_labels


def test_tie_goes_to_positive_everywhere():
    assert positive(0.5) and positive(0.3, 0.3) and not positive(0.2999, 0.3)
    assert interpret([0.3], "binary", class_names=["normal", "opacity"], threshold=0.3)["label"] == "opacity"
    np.testing.assert_array_equal(decide("binary", [[0.3], [0.29]], 0.3), [1, 0])
    np.testing.assert_array_equal(decide("multilabel", [[0.5, 0.49]]), [[1, 0]])
    assert interpret([0.5, 0.5, 0.2], "ordinal", class_names="abcd")["prediction"] == 2
    np.testing.assert_array_equal(segmentation_labels(np.array([[[0.5], [0.4999]]])), [[1, 0]])
    # arg-max ties take the first class
    assert interpret([0.4, 0.4, 0.2], "multiclass")["prediction"] == 0


def test_the_evaluation_metrics_and_parity_use_the_same_rule():
    from medtf.evaluation.metrics import threshold_metrics
    from medtf.export.parity import agreement, metric

    y, p = np.array([1, 0, 1, 0]), np.array([0.7, 0.7, 0.2, 0.1])
    m = threshold_metrics(y, p, 0.7)
    assert m["sensitivity"]["value"] == 0.5 if isinstance(m["sensitivity"], dict) else m["sensitivity"] == 0.5
    assert metric("binary", y, p[:, None], 0.7)["accuracy"] == np.mean(decide("binary", p[:, None], 0.7) == y)
    assert agreement("binary", p[:, None], np.array([[0.7], [0.69], [0.2], [0.1]]), 0.7) == 0.75


def test_edge_and_predict_interpret_identically():
    from medtf.export.edge import EdgeModel

    edge = EdgeModel.__new__(EdgeModel)  # no interpreter needed for the decision
    edge.task, edge.class_names, edge.threshold = "binary", ["neg", "pos"], 0.42
    assert edge.interpret(np.array([0.42], np.float32)) == interpret([np.float32(0.42)], "binary",
                                                                      class_names=["neg", "pos"], threshold=0.42)


def test_unknown_task_is_an_error():
    with pytest.raises(ValueError, match="not a classification task"):
        interpret([0.1], "segmentation")
    with pytest.raises(ValueError, match="task must be one of"):
        decide("regression", [[0.1]])
