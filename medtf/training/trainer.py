"""``train(config) -> run_dir``: one reproducible, resumable training run.

Data order is a pure function of (seed, epoch): each epoch's training stream is a fresh
``medtf.data.build_dataset(..., training=True, seed=f(seed, epoch))`` and the epochs are chained
(``steps_per_epoch`` fixed), so ``--resume`` can restart exactly at the batch the last backup covered.
"""

from __future__ import annotations

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
    """Fill in what the records decide: task (restoration when the manifest says the records carry paired
    targets), label_mode, num_classes; check the records exist.

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
    if task is None and manifest.get("targets") and data.label_mode in ("sparse", "image"):
        task = "restoration"  # records with paired targets (tfrecord-convert --targets)
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


STRATEGIES = ("default", "mirrored", "multiworker")


def load_cluster(path) -> dict:
    """Read a ``TF_CONFIG``-style JSON file (``--cluster FILE``):
    ``{"cluster": {"worker": ["host1:port", ...], ["chief": [...]]}, "task": {"type": "worker", "index": 0}}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or without a cluster with workers and this process's task (type and index).
    """
    import json

    path = pathlib.Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--cluster {path}: no such file") from None
    except ValueError as exc:
        raise ValueError(f"--cluster {path}: not JSON ({exc})") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker") or not all(
            isinstance(v, list) and all(isinstance(a, str) and ":" in a for a in v) for v in cluster.values()):
        raise ValueError(f'--cluster {path}: expected {{"cluster": {{"worker": ["host:port", ...]}}, "task": ...}}. '
                         f"Received cluster: {cluster!r}")
    if (not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int)
            or not 0 <= task["index"] < len(cluster[task["type"]])):
        raise ValueError(f'--cluster {path}: "task" must name this process, e.g. {{"type": "worker", "index": 0}}, '
                         f"with a type and index present in the cluster. Received: {task!r}")
    return {"cluster": cluster, "task": {"type": task["type"], "index": task["index"]}}


def _strategy(kind: str = "default", cluster: dict | None = None):
    """The ``tf.distribute`` strategy of a run: one device (default), ``MirroredStrategy`` (the local GPUs) or
    ``MultiWorkerMirroredStrategy`` (the cluster of ``cluster``, else of ``$TF_CONFIG``). Create it before any
    other TensorFlow work: the collective strategy must configure the runtime first."""
    import tensorflow as tf

    if kind not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}. Received: {kind!r}")
    if kind == "default":
        if cluster is not None:
            raise ValueError("a cluster needs strategy 'multiworker'")
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if cluster is not None:
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster["cluster"]), task_type=cluster["task"]["type"],
            task_id=cluster["task"]["index"], rpc_layer="grpc")
    elif os.environ.get("TF_CONFIG"):
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    else:
        raise ValueError("strategy 'multiworker' needs the cluster: set the TF_CONFIG environment variable or pass "
                         "--cluster FILE (docs/scale.md)")
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)


def _num_workers(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("chief", [])) + len(spec.get("worker", [])))


def _is_chief(strategy) -> bool:
    """Whether this process writes the run folder (the chief, or worker 0 of a cluster without a chief)."""
    return bool(strategy.extended.should_checkpoint)


def _shard_by_data(ds, strategy):
    """Distributed runs split every global batch between the workers by element (``AutoShardPolicy.DATA``): each
    worker reads the same seeded stream and keeps its part, so steps per epoch and batch order stay the run's."""
    import tensorflow as tf

    if ds is None or _num_workers(strategy) == 1:
        return ds
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _distributed_fixes(model, strategy, element_spec) -> None:
    """What Keras 3 (3.15, TF 2.21) needs to train under a ``tf.distribute`` strategy as it trains on one device.

    * ``fit`` and ``evaluate`` start by pulling one batch from the input to learn its shapes and then restart the
      input: the shuffled stream would be consumed once before training, so the batch order would no longer be
      the run's (seed, epoch) order and a resumed run would not see the batches the interrupted one would have.
      The model, metrics and optimizer are built here from ``element_spec`` instead, and that step is skipped.
      (With several workers the step would also fail: it averages the batch with ``strategy.reduce`` over a
      tuple, which the collective strategy rejects; tensorflow/tensorflow#72388.)
    * Batch normalisation normalises with the statistics of the global batch (``synchronized=True``): each
      replica would otherwise update its moving mean and variance from its own part of the batch, and the
      replicas' models would drift apart (the trainable weights stay equal through the gradient all-reduce).
    * With several workers, every step's logs are averaged across workers with
      ``strategy.reduce("MEAN", v, axis=0)``, which fails on scalars: the steps return them with shape [1] and
      the mean across workers comes out a scalar. The metrics themselves are the global ones (their variables
      are summed across workers when read).
    """
    import keras
    import tensorflow as tf

    if strategy.num_replicas_in_sync > 1:
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    with strategy.scope():
        model._symbolic_build(data_batch=element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    if _num_workers(strategy) == 1:
        return

    def as_vectors(logs):
        return tf.nest.map_structure(lambda v: tf.reshape(v, [1]) if getattr(v, "shape", None) is not None
                                     and v.shape.rank == 0 else v, logs)

    train_step, test_step = model.train_step, model.test_step
    model.train_step = lambda data: as_vectors(train_step(data))
    model.test_step = lambda data: as_vectors(test_step(data))


def _worker_dir(run: pathlib.Path, strategy, start_epoch: int) -> pathlib.Path:
    """A non-chief worker's temporary folder for its checkpoints, logs and history (removed at the end). It starts
    from the chief's history and best model, so its callbacks decide (early stopping, best model) as the chief's."""
    import tempfile

    resolver = strategy.cluster_resolver
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f"medtf-{run.name}-{resolver.task_type}{resolver.task_id}-"))
    for name in (HISTORY_FILE, MODEL_FILE):
        if (run / name).exists():
            shutil.copyfile(run / name, folder / name)
    cb.truncate_history(folder / HISTORY_FILE, start_epoch)
    return folder


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


def train(config: TrainConfig, *, resume: bool = False, run_dir=None, callbacks=(),
          overwrite: bool = False, strategy: str = "default", cluster: dict | None = None,
          prepare_model=None, info_extra: dict | None = None) -> pathlib.Path:
    """Train one model and write its run folder.

    Args:
        config: the training config (``records`` must point at a records folder).
        resume: continue from ``RUN/checkpoints/backup`` (exactly at the last backed-up batch) when present.
        run_dir: explicit run folder (default ``output_dir/run_name``; with ``resume`` and no run_name,
            the newest run in ``output_dir``).
        callbacks: extra Keras callbacks, run after medtf's own (e.g. timing, custom logging).
        strategy: "default" (one device), "mirrored" (``tf.distribute.MirroredStrategy`` over the local GPUs) or
            "multiworker" (``tf.distribute.MultiWorkerMirroredStrategy``; every worker runs this same call with
            its own ``TF_CONFIG`` / ``cluster``; the data are split between workers by element; only the chief
            writes the run folder, the other workers write to temporary folders; ``output_dir`` must be a folder
            every worker sees, and ``resume`` restarts every worker from the chief's backup). See docs/scale.md.
        cluster: this worker's ``TF_CONFIG`` as a dict (:func:`load_cluster`), instead of ``$TF_CONFIG``.
        prepare_model: called with the compiled model before training (e.g. :mod:`medtf.training.distill` gives it
            its distillation ``train_step``); a config with a ``distill`` block and no ``prepare_model`` is an
            error: :func:`medtf.training.distill.distill` trains it (``medtf train`` dispatches to it).
        info_extra: extra keys for the run's ``model.json`` (e.g. the distillation teacher and settings).
        overwrite: replace a finished run in the run folder (the whole folder is removed first, so a run
            folder never mixes artifacts — model, evaluations, exports — of two trainings).

    Returns:
        The run folder (``config.yaml``, ``model.keras``, ``model.json``, ``history.csv``, ``logs/``).

    Raises:
        FileNotFoundError / ValueError: missing records or invalid config (messages name the key/path).
        FileExistsError: the run folder holds a finished run and neither ``resume`` nor ``overwrite`` is set.
    """
    import keras
    import tensorflow as tf

    from medtf.training.losses import get_loss
    from medtf.training.metrics import monitor_mode, task_metrics
    from medtf.training.precision import apply_policy, select_policy
    from medtf.training.schedules import make_optimizer, make_schedule

    if config.distill is not None and prepare_model is None:  # distill builds on train(): no import back here
        raise ValueError("this config has a 'distill:' block: train it with `medtf distill` / `medtf train` or "
                         "medtf.training.distill.distill(config)")
    config = resolve_config(config)
    dist = _strategy(strategy, cluster)  # before any other TensorFlow work (collectives configure the runtime)
    chief = _is_chief(dist)
    run = pathlib.Path(run_dir) if run_dir is not None else make_run_dir(config, resume)
    if config.run_name is None:
        config = config.replace(run_name=run.name)
    finished = (run / "model.json").exists()  # written last: an interrupted run has none
    if finished and not resume:
        if not overwrite:
            raise FileExistsError(f"{run}: holds a finished run; pass --overwrite to replace it (its evaluations "
                                  "and exports are removed too) or choose another run_name")
        if chief:
            shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True, exist_ok=True)
    backup = run / BACKUP_DIR
    history_path = run / HISTORY_FILE
    if not resume and cb.read_resume_state(backup) is not None:
        raise FileExistsError(f"{run}: holds an interrupted run; pass --resume to continue it or choose another run_name")
    if chief:
        atomic_write_text(run / CONFIG_FILE, config.to_yaml())

    keras.utils.set_random_seed(int(config.seed))
    if config.deterministic_ops:
        tf.config.experimental.enable_op_determinism()
    policy = apply_policy(select_policy(config.precision))

    data = _Data(config)
    input_shape = _input_shape(data._probe, config)
    mode = monitor_mode(config.monitor, config.monitor_mode)
    with dist.scope():
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
    if strategy != "default":
        _distributed_fixes(model, dist, data._probe.element_spec)
    if prepare_model is not None:
        prepare_model(model)

    start_epoch, skip = 0, 0
    if resume:  # every worker restarts from the chief's backup
        with dist.scope():
            state = cb.restore_backup(model, backup)
        if state is not None:
            start_epoch, skip = int(state["epoch"]), int(state["batch"])
            print(f"resuming {run.name} at epoch {start_epoch + 1}, batch {skip} "
                  f"(step {state['global_step']})", file=sys.stderr)
        elif (run / MODEL_FILE).exists() and (run / "model.json").exists():
            print(f"{run}: already complete; nothing to resume", file=sys.stderr)
            return run
    # the chief writes the run folder; any other worker runs the same callbacks into a temporary folder
    out = run if chief else _worker_dir(run, dist, start_epoch)
    history_path = out / HISTORY_FILE
    cb.truncate_history(history_path, start_epoch)

    extra_callbacks = list(callbacks)
    ema = cb.defer_ema_finalize(model)

    def callbacks(first_batch: int, append: bool):
        c = [keras.callbacks.CSVLogger(str(history_path), append=append),
             cb.ResumableModelCheckpoint(str(out / MODEL_FILE), history_path, mode, monitor=config.monitor)]
        if ema:  # validation scores the averaged weights
            c.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
        if config.early_stopping_patience is not None:
            c.append(cb.ResumableEarlyStopping(history_path, mode, monitor=config.monitor,
                                               patience=int(config.early_stopping_patience)))
        if config.tensorboard and _tensorboard_available():
            c.append(keras.callbacks.TensorBoard(str(out / "logs"), update_freq="epoch", profile_batch=0))
        c.append(cb.ResumeCheckpoint(out / BACKUP_DIR, config.backup_every_steps, start_batch=first_batch))
        if os.environ.get(KILL_ENV):
            c.append(cb.InterruptAfterBatches(int(os.environ[KILL_ENV])))
        return c + extra_callbacks

    if config.val_split and data.val is None and config.monitor.startswith("val_"):
        raise ValueError(f"monitor {config.monitor!r} needs a validation split; {config.val_split!r} is empty")
    fit_kw = dict(validation_data=_shard_by_data(data.val, dist), verbose=int(config.verbose),
                  shuffle=False)  # the stream is shuffled
    append = history_path.exists() and start_epoch > 0
    stopped = False
    if start_epoch < config.epochs and skip:
        # finish the interrupted epoch from its next batch, then continue with whole epochs
        model.fit(_shard_by_data(data.stream(start_epoch, skip, start_epoch + 1), dist), initial_epoch=start_epoch,
                  epochs=start_epoch + 1,
                  steps_per_epoch=data.steps_per_epoch - skip, callbacks=callbacks(skip, append), **fit_kw)
        stopped = bool(model.stop_training)
        start_epoch, skip, append = start_epoch + 1, 0, True
    if start_epoch < config.epochs and not stopped:
        model.fit(_shard_by_data(data.stream(start_epoch, 0, config.epochs), dist), initial_epoch=start_epoch,
                  epochs=config.epochs,
                  steps_per_epoch=data.steps_per_epoch, callbacks=callbacks(0, append), **fit_kw)

    if not (out / MODEL_FILE).exists():  # monitor never produced a value: keep the last model
        with cb.ema_weights(model):
            model.save(str(out / MODEL_FILE))
    if not chief:  # a worker's files were only there to keep its steps in step with the chief's
        shutil.rmtree(out, ignore_errors=True)
        return run
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
        extra={"policy": policy, "seed": int(config.seed), "monitor": config.monitor,
               # paired restoration targets: the model takes the input resized to the target grid (k per axis)
               **({"target_scale": manifest.get("target_scale")} if manifest.get("targets") else {}),
               **(info_extra or {})},
    )
    info.save(run)
    shutil.rmtree(backup, ignore_errors=True)
    return run
