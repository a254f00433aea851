"""Evaluate predictions (arrays in, metrics dict out) and whole run folders (``medtf evaluate``).

``evaluate_predictions`` and ``write_report`` work without a run folder (export parity checks and
recipes use them). ``evaluate_run`` loads ``RUN/model.keras`` + ``RUN/model.json`` through
``medtf.training.run``, reads the split from the run's records directory with ``medtf.records.load``
and applies the run's training-stage ``Preprocessing`` with ``medtf.preprocess.tf_ops.apply``
— the same graph ops ``medtf.data.build_dataset(..., training=False)`` uses, here applied record by
record so every prediction stays paired with its pseudonymous patient key, spacing and full-resolution
mask. Restoration runs on records with paired targets (``tfrecord-convert --targets``) compare the model
with the input and a classical baseline (non-local means tuned on the validation split, or bicubic
interpolation for super-resolution; :mod:`medtf.evaluation.baselines`); other restoration runs use
``build_dataset(..., training=False)`` itself, since the degradation is defined by the data config.

Segmentation metrics are computed at the records' resolution: predicted probabilities are mapped
back through the preprocessing size step (linear resize, or the inverse centre crop/pad) before the
argmax, and distances use the stored spacing.
"""

from __future__ import annotations

import csv
import pathlib
from typing import Any, Sequence

import numpy as np

from medtf.evaluation import metrics as M

__all__ = ["evaluate_predictions", "evaluate_segmentation", "evaluate_run", "probabilities_to_labels",
           "parse_threshold_method", "tta_mode", "tta_predict", "TTA_MODES", "CLASSIFICATION_TASKS"]

CLASSIFICATION_TASKS = ("binary", "multiclass", "multilabel", "ordinal")
TASKS = CLASSIFICATION_TASKS + ("segmentation", "restoration")


from medtf.training.thresholds import parse_threshold_method  # noqa: E402,F401 - the one parser


def _class_names(task: str, class_names, width: int) -> list[str]:
    if class_names:
        return [str(c) for c in class_names]
    if task == "binary":
        return ["negative", "positive"]
    if task == "ordinal":
        return [str(i) for i in range(width + 1)]
    return [str(i) for i in range(width)]


def _binary_arrays(y_true, y_prob):
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 2:  # two-column softmax → positive column
        p = p[:, 1]
    if y.ndim == 2 and y.shape[1] == 2:
        y = y.argmax(axis=1)
    return M.binary_labels(y), M.as_scores(p, "y_prob")


def _labels_1d(y_true, num_classes: int) -> np.ndarray:
    """Class indices from indices (n,)/(n,1) or one-hot (n, K)."""
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        return y.argmax(axis=1).astype(np.int64)
    return M.as_1d(y, "y_true").astype(np.int64)


def _ordinal_labels(y_true, num_classes: int) -> np.ndarray:
    """Grades from indices or from cumulative targets (n, K-1): the count of targets ``>= 0.5``."""
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] == num_classes - 1 and num_classes > 2:
        return (y >= 0.5).sum(axis=1).astype(np.int64)  # tie rule: a target of exactly 0.5 counts as passed
    return M.as_1d(y, "y_true").astype(np.int64)


def _method_label(method: str | None) -> str:
    name, target = parse_threshold_method(method)
    return "youden" if name == "youden" else f"sensitivity:{target:g}"


def _pick_threshold(threshold, y_val, p_val, method: str | None) -> dict:
    """``{"value", "method", "source"}``: the given threshold, else chosen on validation, else 0.5."""
    if threshold is not None:
        return {"value": float(threshold), "method": method or "given", "source": "given"}
    if y_val is not None and p_val is not None:
        name, target = parse_threshold_method(method)
        try:
            value = M.select_threshold(y_val, p_val, name, target_sensitivity=target)
            return {"value": value, "method": _method_label(method), "source": "validation"}
        except ValueError as exc:
            return {"value": 0.5, "method": "default", "source": f"default (validation unusable: {exc})"}
    return {"value": 0.5, "method": "default", "source": "default"}


def _curves_binary(y, p, label: str) -> tuple[dict, dict]:
    fpr, tpr, _ = M.roc_curve(y, p)
    prec, rec, _ = M.precision_recall_curve(y, p)
    roc = {"label": label, "fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": M.roc_auc(y, p)}
    pr = {"label": label, "precision": prec.tolist(), "recall": rec.tolist(), "ap": M.average_precision(y, p),
          "prevalence": float(np.mean(y)) if y.size else None}
    return roc, pr


def evaluate_predictions(
    y_true,
    y_prob,
    task: str,
    *,
    threshold: float | Sequence[float] | None = None,
    threshold_method: str | None = None,
    y_val=None,
    p_val=None,
    class_names: Sequence[str] | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    n_bins: int = 15,
    spacing=None,
    keys: Sequence[str] | None = None,
    max_val: float = 1.0,
) -> dict:
    """Metrics for one task from arrays (no run folder needed).

    Args:
        y_true: labels. binary: 0/1 (n,); multiclass: indices (n,) or one-hot (n, K); multilabel:
            (n, L) 0/1; ordinal: grades (n,) or cumulative targets (n, K-1); segmentation: a list of
            label maps (or (n, *spatial) array; an overlapping-segment mask has a trailing channel
            axis); restoration: clean images (n, ..., C).
        y_prob: model outputs. binary: P(positive) (n,)/(n, 1); multiclass: (n, K) probabilities;
            multilabel: (n, L); ordinal: cumulative (n, K-1); segmentation: list of probability maps
            (*spatial, K) — softmax, or sigmoid channels (K=1 → one foreground class); restoration:
            restored images.
        task: binary | multiclass | multilabel | ordinal | segmentation | restoration.
        threshold: operating point (binary) or one per label / one for all (multilabel), applied as
            ``prob >= threshold`` → positive (a probability equal to the threshold is positive); None →
            chosen on ``(y_val, p_val)`` with ``threshold_method``, else 0.5.
        threshold_method: "youden" (default) or "sensitivity:<target>".
        y_val, p_val: validation labels/outputs for the threshold choice.
        class_names: names of the classes/labels (segmentation: including background).
        n_boot, ci, seed: AUC bootstrap replicates, coverage and seed.
        n_bins: calibration bins.
        spacing: segmentation only: one spacing (applied to all cases) or one per case (mm per voxel).
        keys: pseudonymous per-case keys (segmentation / restoration per-case rows); default case_0001...
        max_val: restoration only: dynamic range for PSNR/SSIM.

    Returns:
        ``{"task", "n", "class_names", "threshold", "metrics", "curves", ["per_case"]}`` ready for
        :func:`medtf.evaluation.write_report`.

    Raises:
        ValueError: unknown task, or inputs with the wrong shape/values (named in the message).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}. Received: {task!r}")
    if task == "segmentation":
        return evaluate_segmentation(y_true, y_prob, spacing=spacing, keys=keys, class_names=class_names)
    if task == "restoration":
        m = M.restoration_metrics(y_true, y_prob, max_val=max_val)
        return {"task": task, "n": m["n"], "class_names": [], "threshold": None, "metrics": m, "curves": {},
                "per_case": [{"case": k, "psnr": a, "ssim": b} for k, a, b in
                             zip(keys or [f"case_{i + 1:04d}" for i in range(m["n"])], m["psnr"], m["ssim"])]}
    kw = dict(n_boot=n_boot, ci=ci, seed=seed, n_bins=n_bins)
    curves: dict[str, Any] = {}
    if task == "binary":
        y, p = _binary_arrays(y_true, y_prob)
        yv = pv = None
        if y_val is not None and p_val is not None:
            yv, pv = _binary_arrays(y_val, p_val)
        thr = _pick_threshold(None if threshold is None else float(np.ravel(threshold)[0]), yv, pv, threshold_method)
        names = _class_names(task, class_names, 2)
        m = M.binary_metrics(y, p, thr["value"], **kw)
        roc, pr = _curves_binary(y, p, names[-1])
        curves = {"roc": [roc], "pr": [pr],
                  "operating_point": {"threshold": thr["value"], "sensitivity": m["sensitivity"], "specificity": m["specificity"]},
                  "confusion": [{"matrix": m["confusion_matrix"], "names": names[:2], "title": f"threshold {thr['value']:.3f}"}]}
        cal = M.calibration_bins(y, p, n_bins)
        curves["calibration"] = {**cal, "ece": m["ece"], "xlabel": "predicted P(positive)", "ylabel": "observed positive rate"}
        return {"task": task, "n": int(y.size), "class_names": names, "threshold": thr, "metrics": m, "curves": curves}

    p = np.asarray(y_prob, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"{task} y_prob must be (n, units). Received shape: {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("`y_prob` contains NaN or infinite values")
    if task == "multilabel":
        y = np.asarray(y_true)
        if y.shape != p.shape:
            raise ValueError(f"multilabel y_true must be (n, {p.shape[1]}) like y_prob. Received shape: {y.shape}")
        names = _class_names(task, class_names, p.shape[1])
        given = None if threshold is None else np.broadcast_to(np.asarray(threshold, np.float64), (p.shape[1],))
        yv = None if y_val is None else np.asarray(y_val)
        pv = None if p_val is None else np.asarray(p_val, dtype=np.float64)
        picks = [_pick_threshold(None if given is None else given[j], None if yv is None else yv[:, j],
                                 None if pv is None else pv[:, j], threshold_method) for j in range(p.shape[1])]
        thr_list = [t["value"] for t in picks]
        m = M.multilabel_metrics(y, p, thr_list, **kw)
        thr = {"value": None, "per_label": thr_list, "method": [t["method"] for t in picks],
               "source": [t["source"] for t in picks]}
        rocs, prs, cms = [], [], []
        for j, name in enumerate(names):
            yj = M.binary_labels(y[:, j])
            if 0 < yj.sum() < yj.size:
                r, q = _curves_binary(yj, p[:, j], name)
                rocs.append(r)
                prs.append(q)
            cms.append({"matrix": m["per_label"][j]["confusion_matrix"], "names": ["0", "1"], "title": name})
        cal = M.calibration_bins(y.ravel(), p.ravel(), n_bins)
        curves = {"roc": rocs, "pr": prs, "confusion": cms,
                  "calibration": {**cal, "ece": M.expected_calibration_error(y.ravel(), p.ravel(), n_bins),
                                  "xlabel": "predicted probability (all labels)", "ylabel": "observed rate"}}
        return {"task": task, "n": int(y.shape[0]), "class_names": names, "threshold": thr, "metrics": m, "curves": curves}

    if task == "multiclass":
        names = _class_names(task, class_names, p.shape[1])
        y = _labels_1d(y_true, p.shape[1])
        m = M.multiclass_metrics(y, p, **kw)
        probs = p
        pred = probs.argmax(axis=1)
    else:  # ordinal
        names = _class_names(task, class_names, p.shape[1])
        k = len(names)
        if p.shape[1] != k - 1:
            raise ValueError(f"ordinal y_prob must have num_classes - 1 = {k - 1} cumulative units. Received shape: {p.shape}")
        y = _ordinal_labels(y_true, k)
        m = M.ordinal_metrics(y, p, **kw)
        probs = M.ordinal_class_probs(p)
        pred = M.ordinal_predict(p)
    rocs, prs = [], []
    for c, name in enumerate(names):
        yc = (y == c).astype(np.int64)
        if 0 < yc.sum() < yc.size:
            r, q = _curves_binary(yc, probs[:, c], name)
            rocs.append(r)
            prs.append(q)
    cal = M.calibration_bins(pred == y, probs.max(axis=1), n_bins)
    curves = {"roc": rocs, "pr": prs, "confusion": [{"matrix": m["confusion_matrix"], "names": names, "title": "confusion matrix"}],
              "calibration": {**cal, "ece": m["ece"], "xlabel": "confidence (top class)", "ylabel": "accuracy"}}
    return {"task": task, "n": int(y.size), "class_names": names, "threshold": None, "metrics": m, "curves": curves}


def probabilities_to_labels(prob: np.ndarray) -> tuple[np.ndarray, int, bool]:
    """Segmentation output (*spatial, K) → (labels, num_classes incl. background, overlapping).

    Softmax (K >= 2): argmax, K classes. One sigmoid channel: ``>= 0.5`` → {0, 1}, 2 classes.
    """
    prob = np.asarray(prob)
    if prob.shape[-1] == 1:
        return (prob[..., 0] >= 0.5).astype(np.int64), 2, False
    return prob.argmax(axis=-1).astype(np.int64), prob.shape[-1], False


def evaluate_segmentation(y_true, y_prob, *, spacing=None, keys=None, class_names=None, multilabel: bool = False,
                          regions: dict | None = None) -> dict:
    """Per-case, per-class Dice/IoU/HD95/HD/ASSD and their summary (and per region, when given).

    Args:
        y_true: sequence of reference label maps (*spatial) — or (*spatial, C) binary channels when
            ``multilabel`` (overlapping segments).
        y_prob: sequence of model outputs (*spatial, K), or integer label maps of the same shape as
            ``y_true`` (then used as they are).
        spacing: one spacing for all cases or one per case (mm, array axis order); default 1 mm.
        keys: pseudonymous case keys.
        class_names: names incl. background.
        multilabel: channels are independent binary segments (sigmoid, ``prob >= 0.5`` → foreground).
        regions: region-based labels ({name: [label values]}, e.g. BraTS whole tumour = [1, 2, 3]): each
            region is scored as one binary mask (label map ``in`` the region's values), per case
            (``per_case[i]["regions"]``) and in ``metrics["per_region"]``.

    Returns:
        ``{"task": "segmentation", "n", "class_names", "metrics": summary, "per_case": [...], "curves": {}}``.
    """
    cases = []
    n = len(y_true)
    if len(y_prob) != n:
        raise ValueError(f"y_true and y_prob must hold the same number of cases. Received: {n} and {len(y_prob)}")
    sp_list = None
    if spacing is not None:
        per_case = len(spacing) == n and np.ndim(spacing[0]) == 1
        sp_list = list(spacing) if per_case else [spacing] * n
    num_classes = 2
    for i in range(n):
        t = np.asarray(y_true[i])
        p = np.asarray(y_prob[i])
        if multilabel:
            pl = (p >= 0.5) if p.dtype.kind == "f" else p.astype(bool)
            tl = t.astype(bool)
            if pl.shape != tl.shape:
                raise ValueError(f"case {i}: multilabel masks must have equal shapes. Received {pl.shape} and {tl.shape}")
            metrics = {}
            for c in range(tl.shape[-1]):
                mc = M.segmentation_case_metrics(pl[..., c], tl[..., c], 2, None if sp_list is None else sp_list[i])[1]
                metrics[c + 1] = mc
            num_classes = tl.shape[-1] + 1
        else:
            if p.shape == t.shape and p.dtype.kind in "iub":
                labels, k = p.astype(np.int64), max(int(p.max(initial=0)), int(t.max(initial=0))) + 1
            else:
                labels, k, _ = probabilities_to_labels(p)
            if class_names:
                k = max(k, len(class_names))
            num_classes = max(num_classes, k)
            if labels.shape != t.shape:
                raise ValueError(f"case {i}: prediction spatial shape {labels.shape} != reference mask shape {t.shape}")
            metrics = M.segmentation_case_metrics(labels, t, k, None if sp_list is None else sp_list[i])
        key = keys[i] if keys is not None else f"case_{i + 1:04d}"
        cases.append({"case": key, "metrics": metrics})
        if regions and not multilabel:
            sp = None if sp_list is None else sp_list[i]
            cases[-1]["regions"] = {name: M.segmentation_case_metrics(np.isin(labels, values), np.isin(t, values), 2, sp)[1]
                                    for name, values in regions.items()}
    names = list(class_names) if class_names else (["background"] + [str(c) for c in range(1, num_classes)])
    summary = M.summarize_segmentation(cases, names)
    if regions and not multilabel:
        region_names = list(regions)
        by_index = [{"case": c["case"], "metrics": {j: c["regions"][r] for j, r in enumerate(region_names)}} for c in cases]
        summary["per_region"] = M.summarize_segmentation(by_index, region_names)["per_class"]
        summary["regions"] = {k: list(v) for k, v in regions.items()}
    return {"task": "segmentation", "n": n, "class_names": names, "threshold": None, "metrics": summary,
            "per_case": cases, "curves": {},
            "notes": "Dice/IoU = 1 and distances = 0 when both masks are empty; distances are undefined "
                     "(excluded, counted as undefined) when exactly one is empty. HD95 = max of the two directed "
                     "95th percentiles of surface-to-surface distances; ASSD = mean of both directions pooled."}


# --------------------------------------------------------------------------------------------------
# run folders


#: test-time augmentation modes: "flip" = identity + left-right flip; "dihedral" = the 8 flips/90° rotations of
#: the last two spatial axes (in-plane for volumes)
TTA_MODES = ("flip", "dihedral")


def tta_mode(tta) -> str | None:
    """Normalise a ``tta`` argument: False/None → None, True → ``"flip"``, or one of :data:`TTA_MODES`.

    Raises:
        ValueError: any other value.
    """
    if tta is None or tta is False:
        return None
    if tta is True:
        return "flip"
    if tta in TTA_MODES:
        return str(tta)
    raise ValueError(f"tta: expected one of {TTA_MODES} (or True for 'flip'), got {tta!r}")


def tta_predict(run, x: np.ndarray, mode: str | None, *, spatial_axes: Sequence[int], dense: bool) -> np.ndarray:
    """Mean of ``run`` over the test-time transforms of ``x``.

    Args:
        run: array → prediction (same leading layout as its input).
        x: input array; ``spatial_axes`` are its spatial axes (e.g. ``(1, 2)`` for an NHWC batch).
        mode: None (one prediction), ``"flip"`` or ``"dihedral"`` (see :data:`TTA_MODES`).
        spatial_axes: the spatial axes of ``x`` (and of a dense prediction); transforms act on the last two
            (the last one for ``"flip"``).
        dense: the prediction has the input's spatial axes (segmentation, restoration): each is mapped back
            by the inverse transform before averaging.

    Returns:
        float32 mean prediction.
    """
    mode = tta_mode(mode)
    if mode is None:
        return np.asarray(run(x), dtype=np.float32)
    last = spatial_axes[-1]
    plane = tuple(spatial_axes[-2:])
    rotations = range(4) if mode == "dihedral" and len(plane) == 2 else range(1)
    transforms = [(k, flip) for k in rotations for flip in (False, True)]
    total = np.zeros((), np.float32)
    for k, flip in transforms:
        xt = np.flip(x, last) if flip else x
        xt = np.rot90(xt, k, axes=plane) if k else xt
        out = np.asarray(run(np.ascontiguousarray(xt)), dtype=np.float32)
        if dense:  # undo: rotate back, then flip back
            out = np.rot90(out, -k, axes=plane) if k else out
            out = np.flip(out, last) if flip else out
        total = total + out
    return total / len(transforms)


def _predict_one(model, x: np.ndarray, tta) -> np.ndarray:
    """Prediction for one preprocessed image (sliding window when the model's input is smaller); ``tta`` is a
    :func:`tta_mode` value."""
    in_shape = tuple(model.inputs[0].shape[1:-1])
    fixed = all(d is not None for d in in_shape)

    def run(img):
        if fixed and tuple(img.shape[:-1]) != in_shape:
            from medtf.data.sliding_window import sliding_window_inference

            return sliding_window_inference(model, img, in_shape, overlap=0.5, mode="gaussian")
        return np.asarray(model.predict_on_batch(img[None]), dtype=np.float32)[0]

    dense = len(model.outputs[0].shape) == len(x.shape) + 1  # (B, *spatial, C) output for a (*spatial, C) input
    return tta_predict(run, x, tta, spatial_axes=tuple(range(len(x.shape) - 1)), dense=dense)


def _restore_size(prob: np.ndarray, orig_spatial: Sequence[int], spec) -> np.ndarray:
    """Map a dense prediction back through the size step of ``spec`` to the records' grid."""
    if tuple(prob.shape[:-1]) == tuple(orig_spatial):
        return prob
    from medtf.preprocess import crop_or_pad, resize

    if spec.resize == "crop_or_pad":
        return crop_or_pad(prob, list(orig_spatial))
    return resize(prob, list(orig_spatial), "linear")


def _records_examples(records_dir, split: str, spec, manifest: dict):
    """Yield (preprocessed image, raw element dict) for every record of ``split``, in record order."""
    import tensorflow as tf

    from medtf.preprocess import tf_ops
    from medtf.records import reader

    ds = reader.load(records_dir, split)
    sd = manifest.get("spatial_dims")
    rank = len(sd) if isinstance(sd, (list, tuple)) else int(sd or (3 if manifest.get("mode") == "volume" else 2))
    channels = manifest.get("channels")
    shape = [None] * rank + [int(channels) if channels else None]

    def prep(e):
        image = tf.ensure_shape(e["image"], shape)
        return {**e, "image": image, "x": tf_ops.apply(image, spec)}

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
    for e in ds.as_numpy_iterator():
        yield e


def _restack_volumes(sources: list[str], origins: list, spacing: list):
    """Group 2D slice records cut from volumes (source ``<unit>#<slice index>``) back into volumes.

    Returns:
        ``[(record indices in slice order, (slice spacing, row, col)), ...]`` per source volume, or None when
        the records are not all slices of volumes holding every slice 0..n-1 (e.g. empty slices left out
        by ``--empty-slices``): then each record stays its own case.
    """
    groups: dict[str, dict[int, int]] = {}
    for i, src in enumerate(sources):
        unit, sep, index = src.rpartition("#")
        if not sep or not index.isdigit():
            return None
        groups.setdefault(unit, {})[int(index)] = i
    if all(len(g) == 1 for g in groups.values()):
        return None
    out = []
    for g in groups.values():
        order = [g[k] for k in sorted(g)]
        if sorted(g) != list(range(len(g))):
            return None
        steps = [np.linalg.norm(origins[b] - origins[a]) for a, b in zip(order, order[1:])
                 if origins[a].size and origins[a].shape == origins[b].shape]
        dz = float(np.median(steps)) if steps else 1.0
        out.append((order, (dz if dz > 0 else 1.0, *spacing[order[0]])))
    return out


def _split_count(manifest: dict, split: str) -> int | None:
    return (manifest.get("splits", {}).get(split) or {}).get("examples")


def _mask_array(mask: np.ndarray, spatial_dims: int) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == spatial_dims + 1 and m.shape[-1] == 1:
        m = m[..., 0]
    return m


def _collect_classification(model, records_dir, split, spec, manifest, task, batch_size, tta, progress=True):
    from tqdm.auto import tqdm

    total = _split_count(manifest, split)
    xs, labels, probs, patients = [], [], [], []

    def flush():
        if not xs:
            return
        xb = np.stack(xs)
        out = tta_predict(model.predict_on_batch, xb, tta, spatial_axes=tuple(range(1, xb.ndim - 1)), dense=False)
        probs.append(out.astype(np.float64).reshape(len(xs), -1))
        xs.clear()

    for e in tqdm(_records_examples(records_dir, split, spec, manifest), total=total, desc=f"evaluate {split}",
                  disable=not progress, unit="img"):
        lab = np.asarray(e["label"])
        if lab.size == 0:
            raise ValueError(f"{records_dir}: split {split!r} has an unlabelled record; evaluation needs labels")
        labels.append(lab)
        patients.append(e["patient"].decode() if isinstance(e["patient"], bytes) else str(e["patient"]))
        xs.append(e["x"])
        if len(xs) >= batch_size:
            flush()
    flush()
    if not labels:
        raise ValueError(f"{records_dir}: split {split!r} has no records")
    p = np.concatenate(probs, axis=0)
    if task == "multilabel":
        y = (np.stack(labels) > 0).astype(np.int64)
    else:
        y = np.array([int(v[0]) for v in labels], dtype=np.int64)
        if task == "binary":
            y = (y > 0).astype(np.int64)
    return y, p, patients


def _val_split_name(run_dir: pathlib.Path) -> str:
    """The run's validation split name from ``RUN/config.yaml`` (``val_split``), default "val"."""
    path = run_dir / "config.yaml"
    if path.is_file():
        import yaml

        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            d = {}
        if isinstance(d, dict) and d.get("val_split"):
            return str(d["val_split"])
    return "val"


def _class_index_keys(patients: list[str]) -> list[str]:
    return [f"case_{i + 1:04d}" for i in range(len(patients))]


def evaluate_run(run_dir, split: str = "test", *, tta: bool = False, out_dir=None, records=None,
                 n_boot: int = 1000, seed: int = 0, batch_size: int = 32, write: bool = True,
                 progress: bool = True) -> dict:
    """Evaluate a trained run on one split of its records and write the report.

    Args:
        run_dir: run folder written by ``medtf train`` (``model.keras`` + ``model.json``).
        split: split name in the records manifest.
        tta: test-time augmentation: False; True or ``"flip"`` (mean with the left-right flipped input);
            ``"dihedral"`` (mean over the 8 flips/90° rotations of the last two spatial axes). Dense outputs are
            mapped back before averaging.
        out_dir: report folder; default ``RUN/eval-<split>``.
        records: records directory, overriding ``model.json``'s ``records`` (e.g. when moved).
        n_boot, seed: bootstrap replicates and seed of the AUC confidence interval.
        batch_size: images per prediction call (classification).
        write: write ``report.json``/PNGs/``report.html``/``predictions.csv``.
        progress: show a progress bar.

    Returns:
        The report dict (see :func:`evaluate_predictions`) plus ``split``, ``run``, ``tta``, ``files``.

    Raises:
        FileNotFoundError: missing run files or records.
        ValueError: unknown split, unlabelled records, or inputs not matching the model.
    """
    from medtf.records.reader import read_manifest
    from medtf.training.run import RunInfo, load_model

    from medtf.evaluation.report import to_jsonable, write_report

    tta = tta_mode(tta)
    run_dir = pathlib.Path(run_dir)
    info = RunInfo.load(run_dir)
    records_dir = records or info.records
    if not records_dir:
        raise ValueError(f"{run_dir}/model.json has no 'records' directory; pass records= (--records)")
    records_dir = pathlib.Path(records_dir)
    if not records_dir.is_absolute() and not records_dir.exists():
        records_dir = run_dir / records_dir
    manifest = read_manifest(records_dir)
    if split not in manifest.get("splits", {}):
        raise ValueError(f"{records_dir}: no split {split!r}; the manifest has {sorted(manifest.get('splits', {}))}")
    model = load_model(run_dir)
    spec = info.preprocessing
    task = info.task
    names = list(info.class_names) or None
    common = dict(n_boot=n_boot, seed=seed)

    if task in CLASSIFICATION_TASKS:
        y, p, patients = _collect_classification(model, records_dir, split, spec, manifest, task, batch_size, tta, progress)
        yv = pv = None
        thr = info.threshold
        if task == "multilabel":
            thr = info.extra.get("thresholds", thr)
        needs_val = task in ("binary", "multilabel") and thr is None
        val_split = _val_split_name(run_dir)
        if needs_val and val_split in manifest.get("splits", {}) and val_split != split:
            yv, pv, _ = _collect_classification(model, records_dir, val_split, spec, manifest, task, batch_size, tta, progress)
        report = evaluate_predictions(y, p, task, threshold=thr, threshold_method=info.threshold_method,
                                      y_val=yv, p_val=pv, class_names=names, **common)
        if isinstance(report.get("threshold"), dict) and thr is not None:
            report["threshold"]["source"] = "model.json"
        keys = _class_index_keys(patients)
        from medtf.interpret import decide

        cn = report.get("class_names") or []
        thr_value = (report.get("threshold") or {}).get("value") if isinstance(report.get("threshold"), dict) else None
        decided = decide(task, p, thr_value) if task != "multilabel" else None

        def name(k):
            return cn[int(k)] if int(k) < len(cn) else str(int(k))

        rows = []
        for i, (k, pt) in enumerate(zip(keys, patients)):
            row = {"case": k, "patient": pt, "label": (y[i].tolist() if y.ndim > 1 else int(y[i]))}
            if decided is not None:
                row.update({"label_name": name(y[i]), "prediction": int(decided[i]),
                            "prediction_name": name(decided[i])})
            row["probabilities"] = p[i].tolist()
            rows.append(row)
    elif task == "segmentation":
        from tqdm.auto import tqdm

        sd = int(info.spatial_dims)
        trues, preds, spacings, patients, sources, origins = [], [], [], [], [], []
        multilabel = False
        for e in tqdm(_records_examples(records_dir, split, spec, manifest), total=_split_count(manifest, split),
                      desc=f"evaluate {split}", disable=not progress, unit="case"):
            mask = _mask_array(e["mask"], sd)
            if mask.size == 0:
                raise ValueError(f"{records_dir}: split {split!r} has a record without a mask; segmentation needs masks")
            prob = _predict_one(model, e["x"], tta)
            prob = _restore_size(prob, e["image"].shape[:-1], spec)
            multilabel = mask.ndim == sd + 1
            preds.append((prob >= 0.5) if multilabel else probabilities_to_labels(prob)[0])
            trues.append(mask)
            spacings.append(tuple(float(s) for s in e["spacing"][:sd]) if np.size(e["spacing"]) >= sd else None)
            patients.append(e["patient"].decode() if isinstance(e["patient"], bytes) else str(e["patient"]))
            sources.append(e["source"].decode() if isinstance(e["source"], bytes) else str(e["source"]))
            origins.append(np.asarray(e.get("origin", ()), np.float64))
        if not trues:
            raise ValueError(f"{records_dir}: split {split!r} has no records")
        spacing = [s if s is not None else (1.0,) * sd for s in spacings]
        volumes = _restack_volumes(sources, origins, spacing) if sd == 2 and not multilabel else None
        if volumes is not None:  # 2D slices cut from volumes (--mode slice): score each whole volume
            trues = [np.stack([trues[i] for i in idx]) for idx, _ in volumes]
            preds = [np.stack([preds[i] for i in idx]) for idx, _ in volumes]
            patients = [patients[idx[0]] for idx, _ in volumes]
            spacing = [sp for _, sp in volumes]
        keys = _class_index_keys(patients)
        report = evaluate_segmentation(trues, preds, spacing=spacing, keys=keys, class_names=names, multilabel=multilabel,
                                       regions=manifest.get("label_regions"))
        if volumes is not None:
            report["notes"] += (" Cases are whole volumes: the split's 2D slices were re-stacked by source in slice "
                                "order (slice spacing from the slice origins).")
        for case, pt in zip(report["per_case"], patients):
            case["patient"] = pt
        rows = [{"case": c["case"], "patient": c["patient"],
                 **{f"dice_{k}": v["dice"] for k, v in c["metrics"].items()},
                 **{f"hd95_{k}": v["hd95"] for k, v in c["metrics"].items()}} for c in report["per_case"]]
    elif task == "restoration":
        report, rows = _evaluate_restoration(model, info, records_dir, split, tta, _val_split_name(run_dir))
    else:  # pragma: no cover - RunInfo validates the task
        raise ValueError(f"unsupported task {task!r}")

    report.update({"split": split, "tta": bool(tta), "tta_mode": tta, "run": {"name": info.name, "task": task,
                   "input_shape": list(info.input_shape), "medtf_version": info.medtf_version}})
    if write:
        out = pathlib.Path(out_dir) if out_dir is not None else run_dir / f"eval-{split}"
        files = write_report(report, out, title=f"medtf evaluation — {info.name} ({task}), split {split}")
        if rows:
            csv_path = out / "predictions.csv"
            fields = list(rows[0])
            with open(csv_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                w.writeheader()
                for r in rows:
                    w.writerow({k: (to_jsonable(v) if not isinstance(v, list) else " ".join(f"{x:.6g}" for x in np.ravel(v)))
                                for k, v in r.items()})
            files["predictions"] = csv_path
        report["files"] = {k: str(v) for k, v in files.items()}
    report["predictions"] = rows  # per-case rows (also predictions.csv); not part of report.json
    return report


def _paired_examples(records_dir, split: str, spec):
    """``(x, y, stored input)`` for every record of ``split`` with a paired target, in record order: x and y as
    training made them (:func:`medtf.data.pipeline.restoration_pair`, no augmentation)."""
    import tensorflow as tf

    from medtf.data.pipeline import restoration_pair
    from medtf.records.reader import load

    for e in load(records_dir, split).as_numpy_iterator():
        if e["target"].size == 0:
            raise ValueError(f"{records_dir}: split {split!r} has a record without a paired target")
        x, y = restoration_pair(tf.constant(e["image"]), tf.constant(e["target"]), spec)
        yield np.asarray(x), np.asarray(y), np.asarray(e["image"])


def _evaluate_restoration_pairs(model, info, records_dir, split, tta, manifest, val_split="val") -> tuple[dict, list]:
    """Records with paired targets (``tfrecord-convert --targets``): PSNR/SSIM against the target of the model,
    of the input (identity; for super-resolution the input resized linearly to the target grid, what the model
    receives) and of a classical baseline (:mod:`medtf.evaluation.baselines`): non-local means with its strength
    chosen on the validation split (denoising), bicubic interpolation (super-resolution)."""
    from medtf.data.pipeline import restoration_pair
    from medtf.evaluation import baselines

    spec = info.preprocessing
    max_val = float(info.extra.get("max_val", 1.0))
    xs, ys, preds, stored = [], [], [], []
    for x, y, raw in _paired_examples(records_dir, split, spec):
        out = tta_predict(model.predict_on_batch, x[None], tta, spatial_axes=tuple(range(1, x.ndim)), dense=True)[0]
        xs.append(x)
        ys.append(y)
        preds.append(out)
        stored.append(raw)
    if not ys:
        raise ValueError(f"{records_dir}: split {split!r} has no records")
    scales = {tuple(int(a // b) for a, b in zip(y.shape[:-1], r.shape[:-1])) for y, r in zip(ys, stored)}
    sr = any(k != (1,) * len(k) for k in scales)

    def scores(ref, out):  # per image (records may differ in size), then the summary of restoration_metrics
        per = [M.restoration_metrics(a[None], b[None], max_val=max_val) for a, b in zip(ref, out)]
        psnr = [p["psnr"][0] for p in per]
        ssim = [p["ssim"][0] for p in per]
        finite = [v for v in psnr if np.isfinite(v)]
        return {"psnr": psnr, "ssim": ssim, "psnr_mean": float(np.mean(finite)) if finite else float("inf"),
                "ssim_mean": float(np.mean(ssim)), "n": len(psnr)}

    m_model, m_input = scores(ys, preds), scores(ys, xs)
    if sr:
        classical = [np.asarray(restoration_pair(baselines.bicubic_upsample(r, y.shape[:-1]), y, spec)[0])
                     for r, y in zip(stored, ys)]
        method = {"method": "bicubic", "label": "bicubic interpolation (OpenCV INTER_CUBIC; SciPy cubic spline in 3D)"}
    else:
        has_val = val_split != split and (manifest.get("splits", {}).get(val_split) or {}).get("examples")
        val_split = val_split if has_val else None
        tune = val_split or split
        vx, vy = ([], []) if val_split else (xs, ys)
        if val_split:
            for x, y, _ in _paired_examples(records_dir, val_split, spec):
                vx.append(x)
                vy.append(y)
        h, h_scores = baselines.choose_nlm_h(vx, vy, max_val)
        classical = [baselines.nlm_denoise(x, h, max_val) for x in xs]
        method = {"method": "nlm", "label": f"OpenCV non-local means (h = {h:g} on the 16-bit scale, chosen on "
                  f"{tune})", "h": h, "h_split": tune, "h_grid_psnr": {f"{k:g}": v for k, v in h_scores.items()}}
        if not val_split:
            method["note"] = f"no validation split: h was chosen on the evaluated split {split!r} itself"
    m_classical = scores(ys, classical)
    rows_cmp = [
        {"method": "input", "label": "input resized (linear) to the target grid" if sr else "input (identity)",
         **m_input},
        {**method, **m_classical},
        {"method": "model", "label": f"model ({info.name})", **m_model},
    ]
    report = {"task": "restoration", "n": m_model["n"], "class_names": [], "threshold": None, "curves": {},
              "metrics": {**m_model, "baseline": {k: m_input[k] for k in ("psnr", "ssim", "psnr_mean", "ssim_mean")},
                          "comparison": rows_cmp, "max_val": max_val,
                          "target_scale": [list(k) for k in sorted(scales)],
                          "psnr_gain_vs_classical_db": m_model["psnr_mean"] - m_classical["psnr_mean"],
                          "psnr_gain_vs_input_db": m_model["psnr_mean"] - m_input["psnr_mean"]},
              "per_case": [{"case": f"case_{i + 1:04d}", "psnr": a, "ssim": b} for i, (a, b) in
                           enumerate(zip(m_model["psnr"], m_model["ssim"]))],
              "notes": "PSNR/SSIM (tf.image) against the paired targets on the records' scale (max_val "
                       f"{max_val:g}). Rows: the input as the model receives it, the classical baseline, the model."}
    rows = [{"case": c["case"], "psnr": c["psnr"], "ssim": c["ssim"], "psnr_input": a, "ssim_input": b,
             f"psnr_{method['method']}": p, f"ssim_{method['method']}": q}
            for c, a, b, p, q in zip(report["per_case"], m_input["psnr"], m_input["ssim"], m_classical["psnr"],
                                     m_classical["ssim"])]
    return report, rows


def _evaluate_restoration(model, info, records_dir, split, tta, val_split: str = "val"):
    """PSNR/SSIM of model(x) vs y: with paired targets in the records, :func:`_evaluate_restoration_pairs`;
    otherwise from ``build_dataset(..., training=False)`` (degradation from the data config)."""
    from medtf.data import DataConfig, build_dataset
    from medtf.records.reader import read_manifest

    manifest = read_manifest(records_dir)
    if manifest.get("targets"):
        return _evaluate_restoration_pairs(model, info, records_dir, split, tta, manifest, val_split)

    cfg = DataConfig.from_dict(dict(info.data)) if info.data else DataConfig(label_mode="image")
    cfg = cfg.replace(class_balance=None, repeat=False, drop_remainder=False, cache=None)
    ds = build_dataset(records_dir, split, cfg, training=False, seed=0)
    ys, preds, xs = [], [], []
    for batch in ds.as_numpy_iterator():
        x, y = batch[0], batch[1]
        out = tta_predict(model.predict_on_batch, x, tta, spatial_axes=tuple(range(1, x.ndim - 1)), dense=True)
        ys.append(y)
        preds.append(out)
        xs.append(x)
    y = np.concatenate(ys)
    p = np.concatenate(preds)
    x = np.concatenate(xs)
    max_val = float(info.extra.get("max_val", 1.0))
    report = evaluate_predictions(y, p, "restoration", max_val=max_val)
    if x.shape == y.shape:
        base = M.restoration_metrics(y, x, max_val=max_val)
        report["metrics"]["baseline"] = {k: base[k] for k in ("psnr", "ssim", "psnr_mean", "ssim_mean")}
    rows = [{"case": c["case"], "psnr": c["psnr"], "ssim": c["ssim"]} for c in report["per_case"]]
    return report, rows
