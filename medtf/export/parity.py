"""Parity: measure every export against the Keras model before calling it good.

For each artifact, on the same preprocessed test inputs:

* the task metric of ``medtf evaluate`` for the Keras model and for the export (AUC for binary /
  multiclass (macro one-vs-rest) / multilabel (macro) / ordinal (macro over the cumulative "grade > k"
  outputs); Dice (macro over foreground classes) for segmentation), and ``delta`` =
  Keras − export (positive = the export is worse);
* top-1 agreement (or voxel agreement for masks), max |Δprob|, file size, and latency: median of
  ``runs`` ≥ 50 batch-1 invocations with ``threads`` threads.

A gate (:data:`DEFAULT_GATES`, overridable) fails the report when ``delta`` exceeds the tolerance of
the format (and, for the formats in :data:`MAX_DPROB_GATES` — ONNX —, when max |Δprob| exceeds its
bound); ``medtf export`` then exits 1 and suggests QAT (or, for ONNX, reports the difference).
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import numpy as np

from medtf.interpret import decide, positive, segmentation_labels

#: Largest accepted metric drop (Keras − export) per format.
DEFAULT_GATES = {
    "tflite-fp32": 0.001,
    "tflite-fp16": 0.001,
    "tflite-dynamic": 0.01,
    "tflite-int8": 0.01,
    "tflite-int8-qat": 0.01,
    "savedmodel": 0.001,
    "onnx": 0.001,
}
#: Largest accepted max |Δprob| (export − Keras) per format, on top of the metric gate: fp32 ONNX must give
#: the Keras numbers (float32 kernel rounding only).
MAX_DPROB_GATES = {"onnx": 1e-4}
CLASSIFICATION = ("binary", "multiclass", "multilabel", "ordinal")


def parse_gates(text: str | None) -> dict[str, float]:
    """``"int8=0.01,fp16=0.001"`` → {"tflite-int8": 0.01, "tflite-fp16": 0.001} merged over the defaults.

    Raises:
        ValueError: malformed text (names the bad item).
    """
    gates = dict(DEFAULT_GATES)
    if not text:
        return gates
    for item in text.split(","):
        try:
            key, value = item.split("=")
            value = float(value)
        except ValueError:
            raise ValueError(f"--gate items must look like 'int8=0.01'. Received: {item!r}") from None
        key = key.strip()
        if key not in ("savedmodel", "onnx") and not key.startswith("tflite-"):
            key = "tflite-" + key
        gates[key] = value
    return gates


def _labels(task: str, y, n_out: int) -> np.ndarray:
    y = np.asarray(y)
    if task == "binary":
        return y.reshape(len(y), -1)[:, 0].astype(int)
    if task == "multiclass":
        if y.ndim == 2 and y.shape[1] == n_out and n_out > 1:
            return np.argmax(y, axis=1)
        return y.reshape(len(y)).astype(int)
    if task == "multilabel":
        return y.reshape(len(y), -1).astype(int)
    if task == "ordinal":
        if y.ndim == 2 and y.shape[1] == n_out and n_out > 1:  # already cumulative
            return y.astype(int)
        grade = y.reshape(len(y)).astype(int)
        return (grade[:, None] > np.arange(n_out)[None, :]).astype(int)
    raise ValueError(f"task must be one of {CLASSIFICATION + ('segmentation',)}. Received: {task!r}")


def _macro_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(y[:, k], p[:, k]) for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


def metric(task: str, y, probs: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """The task metric(s) of ``medtf evaluate`` on outputs ``probs`` (sklearn reference).

    Returns:
        {"auc", "accuracy"} for classification tasks, {"dice"} for segmentation.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if task == "segmentation":
        return {"dice": dice(y, probs)}
    n_out = probs.reshape(len(probs), -1).shape[1]
    p = probs.reshape(len(probs), n_out)
    t = _labels(task, y, n_out)
    from sklearn.metrics import roc_auc_score

    pred = decide(task, p, threshold)
    if task == "binary":
        auc = roc_auc_score(t, p[:, 0]) if 0 < t.sum() < len(t) else float("nan")
        acc = float(np.mean(pred == t))
    elif task == "multiclass":
        onehot = np.eye(n_out, dtype=int)[t]
        auc = _macro_auc(onehot, p)
        acc = float(np.mean(pred == t))
    elif task == "multilabel":
        auc = _macro_auc(t, p)
        acc = float(np.mean(pred == t))
    else:  # ordinal
        auc = _macro_auc(t, p)
        acc = float(np.mean(pred == t.sum(1)))
    return {"auc": float(auc), "accuracy": acc}


def dice(y, probs) -> float:
    """Macro Dice over foreground classes, pooled over the whole set (empty classes skipped)."""
    probs = np.asarray(probs)
    y = np.asarray(y)
    pred = segmentation_labels(probs).astype(int)
    classes = [1] if probs.shape[-1] == 1 else range(1, probs.shape[-1])
    if y.ndim == probs.ndim and y.shape[-1] == probs.shape[-1] and probs.shape[-1] > 1:
        y = np.argmax(y, -1)
    elif y.ndim == probs.ndim:
        y = y[..., 0]
    y = y.astype(int)
    scores = []
    for c in classes:
        a, b = pred == c, y == c
        denom = a.sum() + b.sum()
        if denom:
            scores.append(2.0 * np.logical_and(a, b).sum() / denom)
    return float(np.mean(scores)) if scores else float("nan")


def agreement(task: str, ref: np.ndarray, out: np.ndarray, threshold: float | None = None) -> float:
    """Fraction of identical decisions (``medtf.interpret``: top-1 / at the threshold / per voxel)."""
    ref = np.asarray(ref)
    out = np.asarray(out)
    if task == "segmentation":
        return float(np.mean(segmentation_labels(ref) == segmentation_labels(out)))
    if task == "binary":
        return float(np.mean(decide(task, ref, threshold) == decide(task, out, threshold)))
    if task in ("multilabel", "ordinal"):
        return float(np.mean(positive(ref) == positive(out)))
    return float(np.mean(decide(task, ref) == decide(task, out)))


def keras_predict(model, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Keras outputs (float32, first output) for preprocessed inputs."""
    out = model.predict(np.asarray(x, np.float32), batch_size=batch_size, verbose=0)
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        out = out[0]
    return np.asarray(out, dtype=np.float32)


def keras_latency_ms(model, x1: np.ndarray, runs: int = 50, warmup: int = 5) -> float:
    """Median latency (ms) of ``model(x, training=False)`` on a batch of one (eager call)."""
    import tensorflow as tf

    x1 = tf.constant(np.asarray(x1, np.float32))
    fn = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
    for _ in range(warmup):
        fn(x1)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        np.asarray(fn(x1))
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def tflite_predict(path, x: np.ndarray, threads: int = 2) -> np.ndarray:
    """Outputs of a ``.tflite`` (dequantised float32) on preprocessed inputs, via ``ai_edge_litert``."""
    from medtf.export.edge import EdgeModel

    return EdgeModel(path, metadata={}, threads=threads).run(x)


def savedmodel_predict(version_dir, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Outputs of the ``predict_preprocessed`` signature of an exported SavedModel."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    fn = loaded.signatures["predict_preprocessed"]
    outs = [fn(x=tf.constant(np.asarray(x[i:i + batch_size], np.float32)))["predictions"].numpy()
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs).astype(np.float32)


def _size(path) -> int:
    path = pathlib.Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def compare(task: str, y, ref: np.ndarray, out: np.ndarray, *, threshold: float | None = None) -> dict[str, Any]:
    """Metric of both, ``delta`` (reference − export), agreement and max |Δprob|."""
    m_ref = metric(task, y, ref, threshold)
    m_out = metric(task, y, out, threshold)
    key = "dice" if task == "segmentation" else "auc"
    return {
        "metric": key,
        "reference": m_ref,
        "export": m_out,
        "delta": float(m_ref[key] - m_out[key]),
        "agreement": agreement(task, ref, out, threshold),
        "max_abs_dprob": float(np.max(np.abs(np.asarray(ref, np.float64) - np.asarray(out, np.float64)))),
    }


def parity_report(
    model,
    artifacts: dict[str, str | pathlib.Path],
    x: np.ndarray,
    y,
    *,
    task: str,
    threshold: float | None = None,
    gates: dict[str, float] | None = None,
    runs: int = 50,
    threads: int = 2,
    reference_size_path=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate each artifact on ``(x, y)`` against the Keras model and apply the gates.

    Args:
        model: the Keras model (reference).
        artifacts: {format: path}; ".tflite" / ".onnx" files, or a SavedModel version folder for "savedmodel".
        x: preprocessed test inputs (N, *input_shape).
        y: labels (as the pipeline yields them) or masks.
        task: binary | multiclass | multilabel | ordinal | segmentation.
        threshold: binary operating point.
        gates: {format: max delta}; defaults :data:`DEFAULT_GATES`.
        runs: latency runs (≥ 50 for the report).
        threads: interpreter threads.
        reference_size_path: file whose size stands for the Keras model (model.keras).
        progress: print one line per artifact.

    Returns:
        {"task", "metric", "examples", "reference": {...}, "exports": {format: {...,"gate","passed"}},
         "passed", "failed": [formats]}.
    """
    from medtf.export.edge import benchmark

    gates = dict(DEFAULT_GATES if gates is None else gates)
    x = np.asarray(x, np.float32)
    ref = keras_predict(model, x)
    ref_metric = metric(task, y, ref, threshold)
    report: dict[str, Any] = {
        "task": task,
        "metric": "dice" if task == "segmentation" else "auc",
        "examples": int(len(x)),
        "threads": threads,
        "latency_runs": runs,
        "reference": {
            **ref_metric,
            "size_bytes": _size(reference_size_path) if reference_size_path else None,
            "latency_ms": keras_latency_ms(model, x[:1], runs=runs),
        },
        "exports": {},
    }
    failed = []
    for fmt, path in artifacts.items():
        if progress:
            print(f"parity: {fmt} on {len(x)} test examples …", flush=True)
        if fmt == "savedmodel":
            out = savedmodel_predict(path, x)
            lat = None
        elif str(path).endswith(".onnx"):
            from medtf.export import onnx as _onnx

            out = _onnx.predict(path, x, threads=threads)
            try:
                lat = _onnx.benchmark(path, runs=runs, threads=threads)["p50_ms"]
            except ValueError:  # dynamic sizes beyond the batch: no single benchmark input
                lat = None
        else:
            out = tflite_predict(path, x, threads=threads)
            lat = benchmark(path, runs=runs, threads=threads)["p50_ms"]
        entry = compare(task, y, ref, out.reshape(ref.shape), threshold=threshold)
        entry.update({"path": str(path), "size_bytes": _size(path), "latency_ms": lat})
        gate = gates.get(fmt)
        entry["gate"] = gate
        entry["passed"] = bool(gate is None or (np.isfinite(entry["delta"]) and entry["delta"] <= gate)
                               or (np.isnan(entry["delta"]) and entry["max_abs_dprob"] <= 1e-3))
        if fmt in MAX_DPROB_GATES:
            entry["max_abs_dprob_gate"] = MAX_DPROB_GATES[fmt]
            entry["passed"] = entry["passed"] and entry["max_abs_dprob"] <= MAX_DPROB_GATES[fmt]
        if not entry["passed"]:
            failed.append(fmt)
        report["exports"][fmt] = entry
    report["failed"] = failed
    report["passed"] = not failed
    return report


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a parity report."""
    key = report["metric"]
    head = f"{'format':<18}{key.upper():>8}{'Δ' + key:>10}{'gate':>8}{'agree':>8}{'max|Δp|':>10}{'size KB':>10}{'ms p50':>9}  ok"
    lines = [head, "-" * len(head)]
    ref = report["reference"]
    size = f"{ref['size_bytes'] / 1024:.0f}" if ref.get("size_bytes") else "-"
    lines.append(f"{'keras':<18}{ref[key]:>8.4f}{'':>10}{'':>8}{'':>8}{'':>10}{size:>10}{ref['latency_ms']:>9.2f}")
    for fmt, e in report["exports"].items():
        lat = f"{e['latency_ms']:.2f}" if e.get("latency_ms") is not None else "-"
        gate = f"{e['gate']:.3f}" if e.get("gate") is not None else "-"
        lines.append(
            f"{fmt:<18}{e['export'][key]:>8.4f}{e['delta']:>+10.4f}{gate:>8}{e['agreement']:>8.3f}"
            f"{e['max_abs_dprob']:>10.4f}{e['size_bytes'] / 1024:>10.0f}{lat:>9}  {'yes' if e['passed'] else 'NO'}"
        )
    return "\n".join(lines)


def write_report(report: dict[str, Any], path) -> pathlib.Path:
    """Write ``parity.json``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=float) + "\n")
    return path
