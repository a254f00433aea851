"""Patient-grouped K-fold cross-validation (``medtf train --folds K``).

The train + val splits of the records are pooled and divided with sklearn's ``StratifiedGroupKFold``
(groups = patient pseudonyms, strata = first label), so no patient is in two folds. Each fold gets a
records folder (``RUN/folds/fold<k>/records``: the fold's train/val examples re-sharded byte for byte,
the test shards linked) and a normal run folder (``RUN/folds/fold<k>``). ``RUN/folds.json`` holds the
per-fold validation metrics, their mean ± sd and the fold-ensemble (mean probability) metrics on test.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys

import numpy as np

from medtf.records.reader import read_manifest, shard_paths
from medtf.training.config import TrainConfig
from medtf.training.run import atomic_write_text


def _shards(records, manifest, split):
    """The split's shard paths; [] for a split that is absent or has no shards."""
    if split not in manifest["splits"]:
        return []
    return shard_paths(records, split, manifest, allow_empty=True)


def read_keys(records, splits) -> tuple[list[str], np.ndarray, list[tuple[str, int]]]:
    """Patient key, first label (−1 when unlabelled) and (split, index) of every example of ``splits``."""
    import tensorflow as tf

    manifest = read_manifest(records)
    spec = {"patient": tf.io.FixedLenFeature([], tf.string), "label": tf.io.VarLenFeature(tf.int64)}
    patients, labels, where = [], [], []
    for split in splits:
        files = _shards(records, manifest, split)
        if not files:
            continue
        for i, raw in enumerate(tf.data.TFRecordDataset(files)):
            p = tf.io.parse_single_example(raw, spec)
            lab = tf.sparse.to_dense(p["label"]).numpy()
            patients.append(p["patient"].numpy().decode())
            labels.append(int(lab[0]) if lab.size else -1)
            where.append((split, i))
    return patients, np.asarray(labels), where


def patient_folds(patients, labels, k: int, seed: int = 0) -> list[np.ndarray]:
    """Fold index (0..k−1) per example from ``StratifiedGroupKFold(k, shuffle=True, random_state=seed)``.

    Returns:
        ``assign`` with ``assign[i]`` = the fold whose validation set holds example i.

    Raises:
        ValueError: fewer patients than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n_pat = len(set(patients))
    if n_pat < k:
        raise ValueError(f"--folds {k}: needs at least {k} patients in train+val. Received: {n_pat}")
    assign = np.full(len(patients), -1, dtype=int)
    skf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(seed))
    for f, (_, val_idx) in enumerate(skf.split(np.zeros(len(patients)), labels, groups=patients)):
        assign[val_idx] = f
    return assign


def write_fold_records(records, fold_dir, assign, fold: int, where, patients, labels) -> pathlib.Path:
    """Write the fold's records folder: train = other folds, val = this fold, test linked. Returns it."""
    import tensorflow as tf

    manifest = read_manifest(records)
    out = pathlib.Path(fold_dir)
    if (out / "manifest.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pos = {w: i for i, w in enumerate(where)}
    names = {"train": "train-00000-of-00001.tfrecord", "val": "val-00000-of-00001.tfrecord"}
    writers = {s: tf.io.TFRecordWriter(str(tmp / n)) for s, n in names.items()}
    stats = {s: {"examples": 0, "patients": set(), "labels": {}} for s in names}
    try:
        for split in sorted({w[0] for w in where}):
            for i, raw in enumerate(tf.data.TFRecordDataset(_shards(records, manifest, split))):
                j = pos[(split, i)]
                dest = "val" if assign[j] == fold else "train"
                writers[dest].write(raw.numpy())
                st = stats[dest]
                st["examples"] += 1
                st["patients"].add(patients[j])
                if labels[j] >= 0:
                    st["labels"][str(labels[j])] = st["labels"].get(str(labels[j]), 0) + 1
    finally:
        for w in writers.values():
            w.close()
    splits = {s: {"examples": st["examples"], "patients": len(st["patients"]), "labels": st["labels"],
                  "shards": [names[s]]} for s, st in stats.items()}
    test = manifest["splits"].get("test")
    if test and test.get("examples"):
        for shard in test["shards"]:
            src = (pathlib.Path(records) / shard).resolve()
            try:
                os.symlink(src, tmp / shard)
            except OSError:
                shutil.copy2(src, tmp / shard)
        splits["test"] = dict(test)
    m = dict(manifest, splits=splits, files=[], fold={"index": fold, "source_records": str(records)})
    (tmp / "manifest.json").write_text(json.dumps(m, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _summary(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0, "values": a.tolist()}


def ensemble_metrics(task: str, y, p) -> dict:
    """Test metrics of the fold ensemble's mean probabilities (sklearn)."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    y = np.asarray(y)
    out: dict = {"n": int(len(y))}
    try:
        if task == "binary":
            yt = y.reshape(len(y), -1)[:, 0].astype(int)
            s = p.reshape(len(p), -1)[:, -1]
            out["accuracy@0.5"] = float(accuracy_score(yt, s >= 0.5))
            if len(set(yt)) == 2:
                out["auc"] = float(roc_auc_score(yt, s))
        elif task == "multiclass":
            yt = y.argmax(-1) if y.ndim > 1 and y.shape[-1] == p.shape[-1] and p.shape[-1] > 1 else y.reshape(-1)
            out["accuracy"] = float(accuracy_score(yt, p.argmax(-1)))
            if len(set(yt.tolist())) == p.shape[-1]:
                out["auc_ovr"] = float(roc_auc_score(yt, p, multi_class="ovr"))
        elif task == "multilabel":
            out["auc_macro"] = float(roc_auc_score(y, p, average="macro"))
        elif task == "ordinal":
            t = y.sum(-1) if y.ndim > 1 and y.shape[-1] == p.shape[-1] and p.shape[-1] > 1 else y.reshape(-1)
            g = (p > 0.5).sum(-1)
            out["grade_accuracy"] = float((g == t).mean())
            out["grade_mae"] = float(np.abs(g - t).mean())
    except ValueError as exc:  # e.g. a class missing in test
        out["error"] = str(exc)
    return out


def train_folds(config: TrainConfig, *, resume: bool = False, run_dir=None) -> pathlib.Path:
    """Run patient-grouped K-fold cross-validation; returns the path of ``folds.json``.

    Args:
        config: training config with ``folds`` = K ≥ 2.
        resume: skip finished folds and resume the interrupted one.
        run_dir: parent run folder (default ``output_dir/run_name``).

    Raises:
        ValueError: K < 2 or fewer patients than folds.
    """
    from medtf.data import build_dataset
    from medtf.training.callbacks import read_history
    from medtf.training.metrics import monitor_mode
    from medtf.training.run import RunInfo, load_model
    from medtf.training.trainer import make_run_dir, predict_dataset, resolve_config, split_size, train

    k = int(config.folds or 0)
    if k < 2:
        raise ValueError(f"folds must be >= 2. Received: {config.folds}")
    config = resolve_config(config)
    run = pathlib.Path(run_dir) if run_dir is not None else make_run_dir(config, resume)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / "config.yaml", config.to_yaml())
    patients, labels, where = read_keys(config.records, [config.train_split, config.val_split])
    assign = patient_folds(patients, labels, k, config.seed)
    mode = monitor_mode(config.monitor, config.monitor_mode)
    per_fold, fold_runs = [], []
    for f in range(k):
        fdir = run / "folds" / f"fold{f}"
        recs = write_fold_records(config.records, fdir / "records", assign, f, where, patients, labels)
        fcfg = config.replace(records=str(recs), folds=None, run_name=f"fold{f}", output_dir=str(run / "folds"),
                              train_split="train", val_split="val", test_split="test")
        print(f"fold {f + 1}/{k}: {int((assign == f).sum())} validation examples", file=sys.stderr)
        done = (fdir / "model.json").exists() and (fdir / "model.keras").exists()
        if not done:
            train(fcfg, resume=resume, run_dir=fdir)
        hist = read_history(fdir / "history.csv")
        model = load_model(fdir, compile=False)
        best = [r for r in hist if isinstance(r.get(config.monitor), float)]
        pick = (min if mode == "min" else max)
        best_row = pick(best, key=lambda r: r[config.monitor]) if best else (hist[-1] if hist else {})
        metrics = {kk: float(v) for kk, v in best_row.items() if kk.startswith("val_") and isinstance(v, float)}
        per_fold.append({"fold": f, "run": str(fdir.relative_to(run)), "val_examples": int((assign == f).sum()),
                         "val_patients": len({patients[i] for i in np.nonzero(assign == f)[0]}),
                         "best_epoch": int(best_row.get("epoch", -1)), "metrics": metrics})
        fold_runs.append((fdir, model))
    summary = {}
    for name in sorted({m for pf in per_fold for m in pf["metrics"]}):
        vals = [pf["metrics"][name] for pf in per_fold if name in pf["metrics"]]
        summary[name] = _summary(vals)
    result = {"k": k, "seed": int(config.seed), "monitor": config.monitor, "grouping": "patient",
              "method": "sklearn.model_selection.StratifiedGroupKFold(shuffle=True)",
              "folds": per_fold, "summary": summary}
    if split_size(json.loads((pathlib.Path(config.records) / "manifest.json").read_text()), config.test_split):
        test = build_dataset(config.records, config.test_split, config.data, training=False, seed=config.seed)
        probs, y = [], None
        for _, model in fold_runs:
            y, p = predict_dataset(model, test)
            probs.append(p)
        mean = np.mean(probs, axis=0)
        np.savez_compressed(run / "test_predictions.npz", y_true=y, ensemble=mean, folds=np.stack(probs))
        result["ensemble"] = {"split": config.test_split, "combine": "mean probability",
                              "metrics": ensemble_metrics(config.task, y, mean),
                              "fold_metrics": [ensemble_metrics(config.task, y, p) for p in probs]}
    info = RunInfo.load(fold_runs[0][0])
    result["class_names"] = list(info.class_names)
    path = run / "folds.json"
    atomic_write_text(path, json.dumps(result, indent=2))
    return path
