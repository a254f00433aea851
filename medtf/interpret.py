"""Model outputs → decisions: the one place that turns probabilities into labels.

Tie rule (documented in docs/evaluation.md): a probability **equal to** the threshold is positive —
``p >= threshold`` — for binary outputs (at the stored, validation-chosen threshold, else 0.5), for each
multilabel output and each ordinal cumulative output (0.5), and for single-channel segmentation maps
(0.5). Multiclass and multi-channel segmentation take the arg-max (first index on ties).

Used by ``medtf predict``, the edge runtime, ``medtf evaluate``, export parity and the service. NumPy only.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

CLASSIFICATION_TASKS = ("binary", "multiclass", "multilabel", "ordinal")


def positive(p, threshold: float | None = None) -> np.ndarray:
    """The tie rule: ``p >= threshold`` (0.5 when None), as a bool array."""
    return np.asarray(p) >= (0.5 if threshold is None else float(threshold))


def decide(task: str, probs, threshold: float | None = None) -> np.ndarray:
    """Vectorised decisions for a batch of outputs ``probs`` (N, K) (or (N,) for binary).

    Returns:
        binary: (N,) int 0/1; multiclass: (N,) arg-max; multilabel: (N, K) 0/1; ordinal: (N,) grade
        (the number of cumulative outputs at or above 0.5); segmentation: (N, *spatial) label map.

    Raises:
        ValueError: unknown task.
    """
    p = np.asarray(probs, dtype=np.float64)
    if task == "binary":
        return positive(p.reshape(len(p), -1)[:, -1], threshold).astype(np.int64)
    if task == "multiclass":
        return p.reshape(len(p), -1).argmax(axis=1)
    if task == "multilabel":
        return positive(p.reshape(len(p), -1)).astype(np.int64)
    if task == "ordinal":
        return positive(p.reshape(len(p), -1)).sum(axis=1).astype(np.int64)
    if task == "segmentation":
        return segmentation_labels(p)
    raise ValueError(f"task must be one of {CLASSIFICATION_TASKS + ('segmentation',)}. Received: {task!r}")


def segmentation_labels(p) -> np.ndarray:
    """(…, 1) foreground probability → 0/1 at 0.5 (tie positive); (…, K) → arg-max; uint8."""
    p = np.asarray(p)
    if p.shape[-1] == 1:
        return positive(p[..., 0]).astype(np.uint8)
    return p.argmax(axis=-1).astype(np.uint8)


def interpret(output, task: str, *, class_names: Sequence[str] = (), threshold: float | None = None) -> dict[str, Any]:
    """One classifier output vector → a JSON-ready dict.

    Returns:
        binary: {"probability", "threshold", "prediction", "label"}; multiclass: {"probabilities"
        (name → p), "prediction", "label"}; multilabel: {"probabilities", "prediction" (indices),
        "label" ("a;b")}; ordinal: {"cumulative", "prediction" (grade), "label"}.

    Raises:
        ValueError: a task that is not a classification.
    """
    names = [str(c) for c in class_names]
    p = np.asarray(output, dtype=np.float64).ravel()

    def name(i: int) -> str:
        return names[i] if i < len(names) else str(i)

    def probabilities() -> dict[str, float]:
        return {name(i): float(v) for i, v in enumerate(p)}

    if task == "binary":
        thr = 0.5 if threshold is None else float(threshold)
        pred = int(positive(p[-1], thr))
        return {"probability": float(p[-1]), "threshold": thr, "prediction": pred, "label": name(pred)}
    if task == "multiclass":
        pred = int(p.argmax())
        return {"probabilities": probabilities(), "prediction": pred, "label": name(pred)}
    if task == "multilabel":
        on = [int(i) for i in np.flatnonzero(positive(p))]
        return {"probabilities": probabilities(), "prediction": on, "label": ";".join(name(i) for i in on)}
    if task == "ordinal":
        grade = int(positive(p).sum())
        return {"cumulative": [float(v) for v in p], "prediction": grade, "label": name(grade)}
    raise ValueError(f"interpret: task {task!r} is not a classification task {CLASSIFICATION_TASKS}")
