"""``train(config) -> run_dir``: one reproducible, resumable training run.

Data order is a pure function of (seed, epoch): each epoch's training stream is a fresh
``medtf.data.build_dataset(..., training=True, seed=f(seed, epoch))`` and the epochs are chained
(``steps_per_epoch`` fixed), so ``--resume`` can restart exactly at the batch the last backup covered.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import pathlib
import shutil
import sys
import time

import numpy as np

from medtf.preprocess import Preprocessing
from medtf.records.process import conversion_spec
from medtf.records.reader import read_manifest
from medtf.training import callbacks as cb
from medtf.training.config import TrainConfig
from medtf.training.run import CONFIG_FILE, HISTORY_FILE, MODEL_FILE, RunInfo, atomic_write_text, load_model
from medtf.training.thresholds import choose_threshold

#: task → DataConfig label_mode used when the config leaves the default "sparse".
TASK_LABEL_MODE = {"binary": "binary", "multilabel": "multilabel", "ordinal": "ordinal", "segmentation": "mask",
                   "restoration": "image", "multiclass": "sparse"}
LABEL_MODE_TASK = {"binary": "binary", "multilabel": "multilabel", "ordinal": "ordinal", "mask": "segmentation",
                   "image": "restoration", "onehot": "multiclass"}
BACKUP_DIR = "checkpoints/backup"
KILL_ENV = "MEDTF_TEST_INTERRUPT_AFTER_BATCHES"  # test hook: simulate SIGKILL after N batches


def epoch_seed(seed: int, epoch: int) -> int:
    """Data seed of one epoch (distinct per epoch, fixed by the run seed)."""
    return int(seed) * 100_003 + int(epoch)


def split_size(manifest: dict, split: str) -> int:
    return int((manifest.get("splits") or {}).get(split, {}).get("examples", 0) or 0)


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill in what the records decide: task, label_mode, num_classes; check the records exist.

    Raises:
        ValueError: no records path, an empty training split, or an inconsistent task / label_mode.
    """
    if not config.records:
        raise ValueError("config key 'records' is empty: set it to a records folder (manifest.json + shards)")
    manifest = read_manifest(config.records)
    if split_size(manifest, config.train_split) == 0:
        raise ValueError(f"{config.records}: split {config.train_split!r} has no examples "
                         f"(splits: {sorted(manifest.get('splits', {}))})")
    data = config.data
    names = manifest.get("label_names") or []
    task = config.task
    if task is None:
        task = LABEL_MODE_TASK.get(data.label_mode)
        if task is None:
            n = data.num_classes or len(names) or len((manifest.get("splits", {}).get(config.train_split, {})
                                                        .get("labels") or {}))
            task = "binary" if n <= 2 else "multiclass"
    label_mode = data.label_mode
    if label_mode == "sparse" and task != "multiclass":
        label_mode = TASK_LABEL_MODE[task]
    expected = {"binary": ("binary",), "multilabel": ("multilabel",), "ordinal": ("ordinal",),
                "segmentation": ("mask",), "restoration": ("image",), "multiclass": ("sparse", "onehot")}[task]
    if label_mode not in expected:
        raise ValueError(f"task {task!r} needs data.label_mode in {expected}. Received: {label_mode!r}")
    num_classes = data.num_classes
    if num_classes is None and task in ("binary", "multiclass", "multilabel", "ordinal"):
        if names:
            num_classes = len(names)
        elif task == "binary":
            num_classes = 2
        else:  # unnamed integer labels: the largest label seen in any split decides
            seen = [int(k) for split in manifest.get("splits", {}).values()
                    for k in (split.get("labels") or {}) if str(k).lstrip("-").isdigit()]
            num_classes = max(seen) + 1 if seen else None
    if num_classes is None and task == "segmentation":
        num_classes = config.model.kwargs.get("num_classes") or (len(names) if names else None)
    data = data.replace(label_mode=label_mode, num_classes=num_classes)
    return config.replace(task=task, data=data)


def _class_names(config: TrainConfig, manifest: dict) -> list[str]:
    names = manifest.get("label_names")
    n = config.data.num_classes
    if names:
        return [str(v) for v in names]
    if config.task == "restoration":
        return []
    return [str(i) for i in range(int(n or (2 if config.task == "binary" else 0)))]


def _strategy():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def build_model(config: TrainConfig, input_shape):
    """``medtf.models.build(name, input_shape=..., num_classes=..., task=...)`` with only the arguments the
    builder accepts filled in from the data (explicit ``model.kwargs`` win)."""
    import medtf.models as models

    builder = models.get_builder(config.model.name)
    params = inspect.signature(builder).parameters
    kw = dict(config.model.kwargs)
    kw.setdefault("input_shape", tuple(input_shape))
    if "num_classes" in params and config.data.num_classes is not None:
        kw.setdefault("num_classes", int(config.data.num_classes))
    if "task" in params and config.task in ("binary", "multiclass", "multilabel", "ordinal"):
        kw.setdefault("task", config.task)
    if "spatial_dims" in params:
        kw.setdefault("spatial_dims", len(input_shape) - 1)
    model = models.build(config.model.name, **kw)
    if config.model.bn_momentum is not None:
        models.set_batchnorm_momentum(model, config.model.bn_momentum)
    return model


def _input_shape(ds, config: TrainConfig):
    spec = ds.element_spec[0]
    shape = list(spec.shape[1:])
    if any(s is None for s in shape):
        pre = config.data.preprocessing
        if pre.size is not None and shape[-1] is not None:
            return tuple(pre.size) + (shape[-1],)
        for batch in ds.take(1):
            return tuple(int(s) for s in batch[0].shape[1:])
    return tuple(int(s) for s in shape)


class _Data:
    """Training / validation streams for one run."""

    def __init__(self, config: TrainConfig):
        from medtf.data import build_dataset

        self.config = config
        self.build = build_dataset
        self.manifest = read_manifest(config.records)
        self._probe = self.epoch(0)
        card = int(self._probe.cardinality())
        n = split_size(self.manifest, config.train_split)
        bs = int(config.data.batch_size)
        if card >= 0 and not config.data.repeat:
            steps, self.exact = card, True
        else:
            steps = n // bs if config.data.drop_remainder else math.ceil(n / bs)
            if config.data.patch is not None:
                steps = steps * int(config.data.patch.samples_per_volume)
            self.exact = False
        if config.steps_per_epoch:
            steps = min(steps, int(config.steps_per_epoch)) if self.exact else int(config.steps_per_epoch)
        self.steps_per_epoch = max(1, int(steps))
        has_val = split_size(self.manifest, config.val_split) > 0
        self.val = (self.build(config.records, config.val_split, config.data, training=False, seed=config.seed)
                    if has_val else None)

    def epoch(self, e: int):
        c = self.config
        return self.build(c.records, c.train_split, c.data, training=True, seed=epoch_seed(c.seed, e))

    def stream(self, start_epoch: int, skip: int, end_epoch: int):
        """Epochs ``start_epoch..end_epoch-1`` chained, each exactly ``steps_per_epoch`` batches, minus the
        first ``skip`` batches of the first one."""
        parts = []
        for e in range(start_epoch, end_epoch):
            ds = self._probe if e == 0 else self.epoch(e)
            ds = ds.take(self.steps_per_epoch) if self.exact else ds.repeat().take(self.steps_per_epoch)
            if e == start_epoch and skip:
                ds = ds.skip(skip)
            parts.append(ds)
        out = parts[0]
        for p in parts[1:]:
            out = out.concatenate(p)
        return out


def make_run_dir(config: TrainConfig, resume: bool) -> pathlib.Path:
    """The run folder: ``output_dir/run_name``; without a run_name, the newest run in ``output_dir`` when
    resuming, else a new ``output_dir/<model>-<task>-<timestamp>`` (not created here)."""
    out = pathlib.Path(config.output_dir)
    if config.run_name:
        return out / config.run_name
    if resume:
        runs = sorted((p for p in out.glob("*") if (p / CONFIG_FILE).exists()), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise FileNotFoundError(f"--resume: no run folder with {CONFIG_FILE} in {out}; set run_name")
        return runs[-1]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return out / f"{config.model.name}-{config.task}-{stamp}"


def predict_dataset(model, ds):
    """(y_true, y_pred) NumPy arrays over a finite ``(x, y[, w])`` dataset."""
    ys, ps = [], []
    for batch in ds:
        x, y = batch[0], batch[1]
        ps.append(np.asarray(model(x, training=False)))
        ys.append(np.asarray(y))
    return np.concatenate(ys), np.concatenate(ps)


def _tensorboard_available() -> bool:
    import importlib.util
    import warnings

    if importlib.util.find_spec("tensorboard") is None:
        warnings.warn("TensorBoard logging skipped: the `tensorboard` package is not installed "
                      "(pip install tensorboard)", RuntimeWarning, stacklevel=3)
        return False
    return True


def train(config: TrainConfig, *, resume: bool = False, run_dir=None, callbacks=()) -> pathlib.Path:
    """Train one model and write its run folder.

    Args:
        config: the training config (``records`` must point at a records folder).
        resume: continue from ``RUN/checkpoints/backup`` (exactly at the last backed-up batch) when present.
        run_dir: explicit run folder (default ``output_dir/run_name``; with ``resume`` and no run_name,
            the newest run in ``output_dir``).
        callbacks: extra Keras callbacks, run after medtf's own (e.g. timing, custom logging).

    Returns:
        The run folder (``config.yaml``, ``model.keras``, ``model.json``, ``history.csv``, ``logs/``).

    Raises:
        FileNotFoundError / ValueError: missing records or invalid config (messages name the key/path).
    """
    import keras
    import tensorflow as tf

    from medtf.training.losses import get_loss
    from medtf.training.metrics import monitor_mode, task_metrics
    from medtf.training.precision import apply_policy, select_policy
    from medtf.training.schedules import make_optimizer, make_schedule

    config = resolve_config(config)
    run = pathlib.Path(run_dir) if run_dir is not None else make_run_dir(config, resume)
    if config.run_name is None:
        config = config.replace(run_name=run.name)
    run.mkdir(parents=True, exist_ok=True)
    backup = run / BACKUP_DIR
    history_path = run / HISTORY_FILE
    if not resume and cb.read_resume_state(backup) is not None:
        raise FileExistsError(f"{run}: holds an interrupted run; pass --resume to continue it or choose another run_name")
    atomic_write_text(run / CONFIG_FILE, config.to_yaml())

    keras.utils.set_random_seed(int(config.seed))
    if config.deterministic_ops:
        tf.config.experimental.enable_op_determinism()
    policy = apply_policy(select_policy(config.precision))

    data = _Data(config)
    input_shape = _input_shape(data._probe, config)
    strategy = _strategy()
    mode = monitor_mode(config.monitor, config.monitor_mode)
    with strategy.scope():
        metrics = task_metrics(config.task, num_classes=int(config.data.num_classes or 1),
                               label_mode=config.data.label_mode)
        names = ["loss"] + [m.name for m in metrics]
        allowed = names + [f"val_{n}" for n in names]
        if config.monitor not in allowed:
            raise ValueError(f"monitor {config.monitor!r} is not logged for task {config.task!r} "
                             f"(label_mode {config.data.label_mode!r}); choose one of {allowed}")
        model = build_model(config, input_shape)
        lr = make_schedule(config.schedule, config.optimizer.learning_rate,
                           steps_per_epoch=data.steps_per_epoch, epochs=config.epochs)
        loss = get_loss(config.loss.name, task=config.task, class_weights=config.loss.class_weights,
                        **config.loss.kwargs)
        model.compile(optimizer=make_optimizer(config.optimizer, lr), loss=loss,
                      metrics=metrics,
                      steps_per_execution=int(config.steps_per_execution), jit_compile=config.jit_compile)

    start_epoch, skip = 0, 0
    if resume:
        state = cb.restore_backup(model, backup)
        if state is not None:
            start_epoch, skip = int(state["epoch"]), int(state["batch"])
            print(f"resuming {run.name} at epoch {start_epoch + 1}, batch {skip} "
                  f"(step {state['global_step']})", file=sys.stderr)
        elif (run / MODEL_FILE).exists() and (run / "model.json").exists():
            print(f"{run}: already complete; nothing to resume", file=sys.stderr)
            return run
    cb.truncate_history(history_path, start_epoch)

    extra_callbacks = list(callbacks)
    ema = cb.defer_ema_finalize(model)

    def callbacks(first_batch: int, append: bool):
        c = [keras.callbacks.CSVLogger(str(history_path), append=append),
             cb.ResumableModelCheckpoint(str(run / MODEL_FILE), history_path, mode, monitor=config.monitor)]
        if ema:  # validation scores the averaged weights
            c.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
        if config.early_stopping_patience is not None:
            c.append(cb.ResumableEarlyStopping(history_path, mode, monitor=config.monitor,
                                               patience=int(config.early_stopping_patience)))
        if config.tensorboard and _tensorboard_available():
            c.append(keras.callbacks.TensorBoard(str(run / "logs"), update_freq="epoch", profile_batch=0))
        c.append(cb.ResumeCheckpoint(backup, config.backup_every_steps, start_batch=first_batch))
        if os.environ.get(KILL_ENV):
            c.append(cb.InterruptAfterBatches(int(os.environ[KILL_ENV])))
        return c + extra_callbacks

    if config.val_split and data.val is None and config.monitor.startswith("val_"):
        raise ValueError(f"monitor {config.monitor!r} needs a validation split; {config.val_split!r} is empty")
    fit_kw = dict(validation_data=data.val, verbose=int(config.verbose), shuffle=False)  # the stream is shuffled
    append = history_path.exists() and start_epoch > 0
    stopped = False
    if start_epoch < config.epochs and skip:
        # finish the interrupted epoch from its next batch, then continue with whole epochs
        model.fit(data.stream(start_epoch, skip, start_epoch + 1), initial_epoch=start_epoch, epochs=start_epoch + 1,
                  steps_per_epoch=data.steps_per_epoch - skip, callbacks=callbacks(skip, append), **fit_kw)
        stopped = bool(model.stop_training)
        start_epoch, skip, append = start_epoch + 1, 0, True
    if start_epoch < config.epochs and not stopped:
        model.fit(data.stream(start_epoch, 0, config.epochs), initial_epoch=start_epoch, epochs=config.epochs,
                  steps_per_epoch=data.steps_per_epoch, callbacks=callbacks(0, append), **fit_kw)

    if not (run / MODEL_FILE).exists():  # monitor never produced a value: keep the last model
        with cb.ema_weights(model):
            model.save(str(run / MODEL_FILE))
    best = load_model(run)
    threshold = None
    if config.task == "binary" and data.val is not None:
        y, p = predict_dataset(best, data.val)
        threshold = choose_threshold(y, p[..., -1] if p.ndim > 1 else p, config.threshold)
    manifest = data.manifest
    info = RunInfo(
        name=config.model.name,
        task=config.task,
        class_names=_class_names(config, manifest),
        input_shape=input_shape,
        spatial_dims=len(input_shape) - 1,
        preprocessing=config.data.preprocessing,
        conversion=conversion_spec(manifest) or Preprocessing(),
        threshold=threshold,
        threshold_method=config.threshold if threshold is not None else None,
        records=str(config.records),
        data=config.data.to_dict(),
        label_mode=config.data.label_mode,
        extra={"policy": policy, "seed": int(config.seed), "monitor": config.monitor},
    )
    info.save(run)
    shutil.rmtree(backup, ignore_errors=True)
    return run
