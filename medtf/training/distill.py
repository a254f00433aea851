"""Knowledge distillation: a student trained on a teacher run's softened outputs and the labels.

``medtf distill TEACHER_RUN CONFIG`` (or :func:`distill`) trains the model of ``CONFIG`` as a normal run
(:func:`medtf.training.trainer.train`: same data pipeline, callbacks, checkpoints, ``--resume``, run folder with
``model.keras`` and ``model.json``, so ``medtf evaluate`` / ``medtf export`` work on it) with the per-batch loss
(Hinton, Vinyals & Dean 2015, *Distilling the Knowledge in a Neural Network*)::

    alpha × L_labels(y, s) + (1 - alpha) × T² × KL(t_T ‖ s_T)

* ``L_labels`` is the config's loss on the labels (``loss: auto``: cross-entropy; Dice + CE for segmentation).
* ``t_T``, ``s_T``: the teacher's and the student's outputs at temperature ``T``. medtf heads output
  probabilities, so the logits are recovered from them in float32 (softmax: ``log p``, exact up to a constant
  that the softmax cancels; sigmoid: ``log p − log(1 − p)``; probabilities clipped to ``[1e-7, 1 − 1e-7]``).
  Softmax heads (multiclass, multi-channel segmentation): ``KL = Σ_c t_c (log t_c − log s_c)`` per example /
  pixel. Sigmoid heads (binary, multilabel, ordinal, one-channel segmentation): the Bernoulli KL of each unit,
  averaged over the units. Segmentation averages over the pixels. ``T²`` keeps the soft term's gradients on
  the scale of the label term's as ``T`` changes.
* The teacher runs in inference mode on the *same augmented batch* the student trains on (the student's
  ``train_step`` calls it; nothing is precomputed), resized to the teacher's input size when the two differ.
  The teacher's weights are not trained.
* Validation (``val_loss``, the monitored metric, the best checkpoint) scores the student on the labels alone.

What the config does not say comes from the teacher's ``model.json``: ``records``, ``task`` and the whole
``data`` block (preprocessing, augmentation, batch size), merged under the config's own keys. The student must
see what the teacher was trained to see: the two ``data.preprocessing`` blocks must agree except ``size``.
The student's ``model.json`` records the teacher and the settings under ``distill``.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from medtf.training.config import DistillConfig, TrainConfig, load_config

__all__ = ["distill", "load_distill_config", "distillation_loss", "output_activation", "EPS"]

#: probabilities are clipped to [EPS, 1 - EPS] before their logits are taken
EPS = 1e-7
#: tasks a teacher can be distilled for
DISTILL_TASKS = ("binary", "multiclass", "multilabel", "ordinal", "segmentation")


def output_activation(task: str, channels: int) -> str:
    """``"softmax"`` or ``"sigmoid"``: the activation of a medtf model's output for ``task`` (see
    :mod:`medtf.models.heads`; U-Nets use softmax for several classes and sigmoid for one channel)."""
    if task == "multiclass" or (task == "segmentation" and int(channels) > 1):
        return "softmax"
    return "sigmoid"


def distillation_loss(teacher_probs, student_probs, *, temperature: float, activation: str):
    """Per-example ``T² × KL(teacher_T ‖ student_T)`` (shape ``(batch,)``) from two probability tensors.

    Args:
        teacher_probs: the teacher's output probabilities ``(batch, ..., units)``.
        student_probs: the student's, same shape.
        temperature: ``T`` > 0.
        activation: ``"softmax"`` (KL over the last axis) or ``"sigmoid"`` (Bernoulli KL per unit); both are
            then averaged over every other non-batch axis (units, pixels).

    Returns:
        float32 tensor ``(batch,)``.
    """
    import tensorflow as tf

    t = tf.clip_by_value(tf.cast(teacher_probs, tf.float32), EPS, 1.0 - EPS)
    s = tf.clip_by_value(tf.cast(student_probs, tf.float32), EPS, 1.0 - EPS)
    T = float(temperature)
    if activation == "softmax":
        lt = tf.nn.log_softmax(tf.math.log(t) / T, axis=-1)
        ls = tf.nn.log_softmax(tf.math.log(s) / T, axis=-1)
        kl = tf.reduce_sum(tf.exp(lt) * (lt - ls), axis=-1)
    elif activation == "sigmoid":
        a = (tf.math.log(t) - tf.math.log1p(-t)) / T
        b = (tf.math.log(s) - tf.math.log1p(-s)) / T
        q = tf.sigmoid(a)
        kl = (q * (tf.math.log_sigmoid(a) - tf.math.log_sigmoid(b))
              + (1.0 - q) * (tf.math.log_sigmoid(-a) - tf.math.log_sigmoid(-b)))
    else:
        raise ValueError(f"activation must be 'softmax' or 'sigmoid'. Received: {activation!r}")
    axes = list(range(1, len(kl.shape)))
    per_example = tf.reduce_mean(kl, axis=axes) if axes else kl
    return (T * T) * per_example


def _first(out):
    """The main output of a model's outputs (U-Nets with deep supervision return a list)."""
    return out[0] if isinstance(out, (list, tuple)) else out


def _main_shape(shape) -> tuple:
    """The first shape of a Keras ``input_shape`` / ``output_shape`` (a list of shapes for several)."""
    return tuple(shape[0] if isinstance(shape, list) else shape)


def _teacher_defaults(info) -> dict[str, Any]:
    d: dict[str, Any] = {"task": info.task}
    if info.data:
        d["data"] = dict(info.data)
    if info.records:
        d["records"] = str(info.records)
    return d


def load_distill_config(path, teacher_run=None, overrides=()) -> TrainConfig:
    """Read a student config for distillation: the teacher's ``records``, ``task`` and ``data`` fill in what the
    file does not say, and ``distill.teacher`` is set to the teacher's run folder.

    Args:
        path: the student's YAML config.
        teacher_run: the teacher's run folder; None = the config's ``distill.teacher``.
        overrides: ``--set key=value`` items (applied last).

    Returns:
        The :class:`TrainConfig`, with ``distill`` set (defaults ``temperature`` 4, ``alpha`` 0.5 when the file has
        no ``distill`` block).

    Raises:
        FileNotFoundError: no such config, or no ``model.json`` in the teacher run.
        ValueError: invalid config (dotted key named), or no teacher given.
    """
    from medtf.training.run import RunInfo

    path = pathlib.Path(path)
    plain = load_config(path, overrides)
    teacher = teacher_run if teacher_run is not None else (plain.distill.teacher if plain.distill else None)
    if not teacher:
        raise ValueError(f"{path}: no teacher run: pass TEACHER_RUN (medtf distill TEACHER_RUN CONFIG) or set "
                         "distill.teacher in the config")
    teacher = pathlib.Path(teacher).expanduser().resolve()
    info = RunInfo.load(teacher)
    config = load_config(path, overrides, defaults=_teacher_defaults(info))
    settings = config.distill or DistillConfig()
    return config.replace(distill=dataclasses.replace(settings, teacher=str(teacher)))


def _check_compatible(info, config: TrainConfig, teacher_run) -> None:
    """The teacher can score the student's batches for the student's task (before any training work)."""
    if config.task not in DISTILL_TASKS:
        raise ValueError(f"distill: task {config.task!r} cannot be distilled; expected one of {DISTILL_TASKS}")
    if info.task != config.task:
        raise ValueError(f"distill: the teacher {teacher_run} was trained for task {info.task!r}, the student config "
                         f"is for {config.task!r}; they must match")
    mine = config.data.preprocessing.to_dict()
    theirs = info.preprocessing.to_dict()
    diff = sorted(k for k in set(mine) | set(theirs) if k != "size" and mine.get(k) != theirs.get(k))
    if diff:
        raise ValueError(f"distill: data.preprocessing differs from the teacher's ({teacher_run}) in {diff}: student "
                         f"{ {k: mine.get(k) for k in diff} }, teacher { {k: theirs.get(k) for k in diff} }; the "
                         "teacher must see the student's batches as it saw its own (only size may differ)")


def _attach(student, teacher, *, temperature: float, alpha: float, activation: str) -> None:
    """Give ``student`` (compiled) a ``train_step`` that adds the distillation term (an instance attribute: the
    saved model stays a plain functional model)."""
    import keras
    import tensorflow as tf

    s_shape, t_shape = _main_shape(student.input_shape), _main_shape(teacher.input_shape)
    if len(s_shape) != len(t_shape) or s_shape[-1] != t_shape[-1]:
        raise ValueError(f"distill: the student's input {tuple(s_shape[1:])} and the teacher's "
                         f"{tuple(t_shape[1:])} differ in rank or channels")
    s_out, t_out = _main_shape(student.output_shape), _main_shape(teacher.output_shape)
    if s_out[-1] != t_out[-1]:
        raise ValueError(f"distill: the student predicts {s_out[-1]} units, the teacher {t_out[-1]}; they must match")
    t_spatial = tuple(t_shape[1:-1])
    resize_to = None
    if all(v is not None for v in t_spatial) and tuple(s_shape[1:-1]) != t_spatial:
        if len(t_spatial) != 2:
            raise ValueError(f"distill: the teacher takes {t_spatial} volumes and the student "
                             f"{tuple(s_shape[1:-1])}; 3D inputs must have the same size")
        resize_to = t_spatial
    alpha, temperature = float(alpha), float(temperature)
    tracker = getattr(student, "_loss_tracker", None)  # Keras' "loss" log entry

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_teacher = x if resize_to is None else tf.image.resize(x, resize_to, method="bilinear")
        soft = tf.stop_gradient(tf.cast(_first(teacher(x_teacher, training=False)), tf.float32))
        with tf.GradientTape() as tape:
            y_pred = student(x, training=True)
            probs = _first(y_pred)
            if soft.shape.rank > 2 and soft.shape[1:-1] != probs.shape[1:-1]:  # segmentation at another size
                soft = tf.image.resize(soft, tf.shape(probs)[1:-1], method="bilinear")
            total = student.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            reg = tf.add_n([tf.cast(v, tf.float32) for v in student.losses]) if student.losses else 0.0
            kd = distillation_loss(soft, probs, temperature=temperature, activation=activation)
            if sample_weight is not None:
                kd = kd * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
            loss = alpha * (total - reg) + (1.0 - alpha) * tf.reduce_mean(kd) + reg
            if tracker is not None:
                tracker.update_state(loss, sample_weight=tf.shape(x)[0])
            scaled = student.optimizer.scale_loss(loss)
        weights = student.trainable_weights
        student.optimizer.apply_gradients(zip(tape.gradient(scaled, weights), weights))
        return student.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    student.train_step = train_step


def distill(config: TrainConfig, teacher_run=None, *, resume: bool = False, run_dir=None, callbacks=(),
            overwrite: bool = False, strategy: str = "default", cluster: dict | None = None) -> pathlib.Path:
    """Train ``config``'s model as a student of the teacher run (module docstring) and write a normal run folder.

    Args:
        config: the student's config (:func:`load_distill_config` fills in the teacher's records, task and data);
            its ``distill`` block gives temperature and alpha (defaults 4 and 0.5 when absent).
        teacher_run: the teacher's run folder (``model.keras`` + ``model.json``); None = ``config.distill.teacher``.
        resume, run_dir, callbacks, overwrite: as :func:`medtf.training.trainer.train`.
        strategy, cluster: only ``"default"`` (one device) is supported.

    Returns:
        The student's run folder; its ``model.json`` holds ``distill: {teacher, teacher_model, temperature, alpha}``.

    Raises:
        FileNotFoundError: no teacher run / records.
        ValueError: no teacher, a task that cannot be distilled, or a teacher that does not match the student
            (task, preprocessing, channels, output units), folds or a distributed strategy.
    """
    from medtf.training.run import RunInfo, load_model
    from medtf.training.trainer import resolve_config, train

    settings = config.distill or DistillConfig()
    teacher_run = teacher_run if teacher_run is not None else settings.teacher
    if not teacher_run:
        raise ValueError("distill: no teacher run (pass teacher_run or set distill.teacher)")
    teacher_run = pathlib.Path(teacher_run).expanduser().resolve()
    if strategy != "default" or cluster is not None:
        raise ValueError(f"distill: runs on one device (strategy 'default'). Received strategy {strategy!r}")
    if config.folds and int(config.folds) >= 2:
        raise ValueError("distill: folds are not supported (the teacher's own splits decide what it has seen)")
    info = RunInfo.load(teacher_run)
    if not config.records and info.records:
        config = config.replace(records=str(info.records))
    if config.task is None:
        config = config.replace(task=info.task)
    settings = dataclasses.replace(settings, teacher=str(teacher_run))
    config = config.replace(distill=settings)
    _check_compatible(info, resolve_config(config), teacher_run)
    teacher = load_model(teacher_run)
    teacher.trainable = False

    def prepare(model):
        channels = _main_shape(model.output_shape)[-1]
        _attach(model, teacher, temperature=settings.temperature, alpha=settings.alpha,
                activation=output_activation(config.task, channels))

    record = {"distill": {"teacher": str(teacher_run), "teacher_model": info.name,
                          "teacher_input_shape": list(info.input_shape), "temperature": settings.temperature,
                          "alpha": settings.alpha}}
    return train(config, resume=resume, run_dir=run_dir, callbacks=callbacks, overwrite=overwrite,
                 prepare_model=prepare, info_extra=record)
