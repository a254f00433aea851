"""Training configuration: YAML ⇄ frozen dataclasses, with ``--set a.b=value`` overrides.

Example ``train.yaml``::

    records: data/records          # relative paths resolve against the YAML file's folder
    task: binary                    # binary | multiclass | multilabel | ordinal | segmentation | restoration
    model: {name: simple_cnn, kwargs: {spatial_dims: 2}}
    data: {batch_size: 32, preprocessing: {intensity: scale, scale: 255}}   # medtf.data.DataConfig
    loss: {name: auto}              # or focal, dice_ce, tversky, ... (see medtf.training.losses)
    optimizer: {learning_rate: 1.0e-3, weight_decay: 1.0e-4, clipnorm: 1.0}
    schedule: {name: cosine, warmup_epochs: 1}
    epochs: 20
    monitor: val_auc
    early_stopping_patience: 5

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping

import yaml

TASKS = ("binary", "multiclass", "multilabel", "ordinal", "segmentation", "restoration")


def _did_you_mean(name, choices) -> str:
    import difflib

    close = difflib.get_close_matches(str(name), sorted(choices), n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _as_int(value, key: str) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{key} must be an integer. Received: {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be an integer. Received: {value!r}") from None


def _check_keys(cls, d: Mapping, where: str) -> None:
    if not isinstance(d, Mapping):
        raise ValueError(f"config section {where or 'top level'!r} must be a mapping. Received: {d!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    for k in d:
        if k not in names:
            path = f"{where}.{k}" if where else str(k)
            raise ValueError(f"unknown config key {path!r}{_did_you_mean(k, names)}; expected one of {sorted(names)}")


def validate_model(model: "ModelConfig") -> None:
    """Check the builder name and its keyword arguments against the builder's signature (imports the
    model builders, not the data).

    Raises:
        ValueError: unknown model name (with the closest names) or a kwarg the builder does not take
            (named as ``model.kwargs.<key>``).
    """
    import inspect

    from medtf.models.registry import available, get_builder

    names = available()
    if model.name not in names:
        raise ValueError(f"model.name: unknown model {model.name!r}{_did_you_mean(model.name, names)}; "
                         f"expected one of {names}")
    params = inspect.signature(get_builder(model.name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for k in model.kwargs:
        if k not in params:
            raise ValueError(f"model.kwargs.{k}: not a parameter of the {model.name!r} builder"
                             f"{_did_you_mean(k, params)}; expected some of {sorted(params)}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which ``medtf.models`` builder and its extra keyword arguments.

    ``input_shape``/``num_classes``/``task`` are filled in by the trainer from the data unless given here.
    ``bn_momentum`` (null: the builder's) sets the momentum of every BatchNormalization layer. Keras' 0.99
    keeps ``0.99**steps`` of the initial moving variance (1.0): after the few hundred steps a small dataset
    trains for, that residue can still outweigh real variances and the inference-mode model gives every
    input the same output while training-mode metrics look fine. 0.9 forgets it within ~100 steps.
    """

    name: str = "simple_cnn"
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    bn_momentum: float | None = None

    def __post_init__(self):
        if self.bn_momentum is not None:
            m = float(self.bn_momentum)
            if not 0.0 <= m < 1.0:
                raise ValueError(f"model.bn_momentum must be in [0, 1) or null. Received: {self.bn_momentum}")
            object.__setattr__(self, "bn_momentum", m)

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "model") -> "ModelConfig":
        _check_keys(cls, d, where)
        return cls(name=str(d.get("name", cls.name)), kwargs=dict(d.get("kwargs") or {}),
                   bn_momentum=d.get("bn_momentum"))


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss name (``medtf.training.losses.LOSSES`` or "auto" = chosen from the task) and parameters.

    Attributes:
        name: "auto" | "crossentropy" | "focal" | "dice" | "dice_ce" | "tversky" | "focal_tversky"
            | "l1_ssim" | "ordinal" | "mae" | "mse".
        class_weights: per-class weights (cross-entropy / focal / Dice / ordinal), or None.
        kwargs: extra parameters (e.g. gamma, alpha, beta, smooth, ssim_weight).
    """

    name: str = "auto"
    class_weights: tuple[float, ...] | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "loss") -> "LossConfig":
        _check_keys(cls, d, where)
        cw = d.get("class_weights")
        return cls(
            name=str(d.get("name", cls.name)),
            class_weights=None if cw is None else tuple(float(v) for v in cw),
            kwargs=dict(d.get("kwargs") or {}),
        )


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with gradient clipping (``clipnorm`` per variable, or ``global_clipnorm``).

    ``ema_momentum`` (e.g. 0.99) keeps an exponential moving average of the weights (Keras' ``use_ema``):
    validation, the best-model checkpoint and the saved ``model.keras`` use the averaged weights, training
    continues on the raw ones. It steadies small, noisy datasets where the best epoch is a coin toss.
    """

    name: str = "adamw"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    clipnorm: float | None = 1.0
    global_clipnorm: float | None = None
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    ema_momentum: float | None = None

    def __post_init__(self):
        for k in ("learning_rate", "weight_decay", "clipnorm", "global_clipnorm", "beta_1", "beta_2", "epsilon",
                  "ema_momentum"):
            v = getattr(self, k)
            if v is not None:
                try:
                    object.__setattr__(self, k, float(v))
                except (TypeError, ValueError):
                    raise ValueError(f"optimizer.{k} must be a number. Received: {v!r}") from None
        if self.name not in ("adamw", "adam", "sgd"):
            raise ValueError(f"optimizer.name must be 'adamw', 'adam' or 'sgd'. Received: {self.name!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"optimizer.learning_rate must be > 0. Received: {self.learning_rate}")
        if self.ema_momentum is not None and not 0.0 < self.ema_momentum < 1.0:
            raise ValueError(f"optimizer.ema_momentum must be in (0, 1) or null. Received: {self.ema_momentum}")

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "optimizer") -> "OptimizerConfig":
        _check_keys(cls, d, where)
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule: linear warmup then cosine decay (``keras.optimizers.schedules.CosineDecay``).

    Attributes:
        name: "cosine" or "constant".
        warmup_epochs: warmup length in epochs (converted to steps), used when ``warmup_steps`` is None.
        warmup_steps: warmup length in optimizer steps (overrides ``warmup_epochs``).
        alpha: final learning rate as a fraction of the peak.
        initial_fraction: learning rate at step 0 as a fraction of the peak when warming up.
    """

    name: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None
    alpha: float = 0.0
    initial_fraction: float = 0.0

    def __post_init__(self):
        for k in ("warmup_epochs", "alpha", "initial_fraction"):
            object.__setattr__(self, k, float(getattr(self, k)))
        if self.warmup_steps is not None:
            object.__setattr__(self, "warmup_steps", int(self.warmup_steps))
        if self.name not in ("cosine", "constant"):
            raise ValueError(f"schedule.name must be 'cosine' or 'constant'. Received: {self.name!r}")

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "schedule") -> "ScheduleConfig":
        _check_keys(cls, d, where)
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation (``medtf distill``, :mod:`medtf.training.distill`): the student is trained on
    ``alpha × label loss + (1 - alpha) × T² × KL(teacher_T ‖ student_T)`` (Hinton et al. 2015), the teacher's
    and the student's outputs softened with temperature ``T``.

    Attributes:
        temperature: softening temperature ``T`` (> 0; 1 = the outputs as they are).
        alpha: weight of the label loss in [0, 1] (0: teacher only, 1: labels only).
        teacher: the teacher's run folder (``medtf distill TEACHER_RUN`` overrides it); a relative path written in
            the file resolves against the file's folder.
    """

    temperature: float = 4.0
    alpha: float = 0.5
    teacher: str | None = None

    def __post_init__(self):
        for k in ("temperature", "alpha"):
            v = getattr(self, k)
            if isinstance(v, bool):
                raise ValueError(f"distill.{k} must be a number. Received: {v!r}")
            try:
                object.__setattr__(self, k, float(v))
            except (TypeError, ValueError):
                raise ValueError(f"distill.{k} must be a number. Received: {v!r}") from None
        if not self.temperature > 0:
            raise ValueError(f"distill.temperature must be > 0. Received: {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"distill.alpha must be in [0, 1]. Received: {self.alpha}")
        if self.teacher is not None:
            object.__setattr__(self, "teacher", str(self.teacher))

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "distill") -> "DistillConfig":
        _check_keys(cls, d, where)
        return cls(**d)


def _data_config_cls():
    try:
        from medtf.data import DataConfig  # the data engineer's frozen dataclass (lazy re-export)
    except ImportError:
        from medtf.data.config import DataConfig
    return DataConfig


def data_config_from_dict(d: Mapping | None):
    """Build a ``medtf.data.DataConfig`` from a dict (via its ``from_dict`` when it has one)."""
    cls = _data_config_cls()
    d = dict(d or {})
    if hasattr(cls, "from_dict"):
        return cls.from_dict(d)
    _check_keys(cls, d, "data")
    return cls(**d)


def data_config_to_dict(dc) -> dict[str, Any]:
    """Inverse of :func:`data_config_from_dict` (plain JSON/YAML types)."""
    if hasattr(dc, "to_dict"):
        return dict(dc.to_dict())
    return _plain(dataclasses.asdict(dc))


def _plain(v):
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _plain(v.to_dict() if hasattr(v, "to_dict") else dataclasses.asdict(v))
    return v


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A complete, resolved training run description.

    Attributes:
        records: records directory (manifest.json + shards).
        task: binary | multiclass | multilabel | ordinal | segmentation | restoration; None = inferred
            from the records manifest (binary for 2 labels, multiclass for more, segmentation with masks).
        model: builder name + kwargs.
        data: ``medtf.data.DataConfig`` (batch size, preprocessing, augmentation...).
        loss, optimizer, schedule: see their classes.
        epochs: number of epochs.
        seed: global seed (Keras/NumPy/TF) and data-order seed.
        precision: None/"auto" (hardware decides) or a Keras policy (see ``medtf.training.precision``).
        monitor: metric that selects the best checkpoint and drives early stopping (e.g. "val_auc").
        monitor_mode: "auto" | "min" | "max".
        early_stopping_patience: epochs without improvement before stopping; None disables it.
        output_dir: parent folder of run folders.
        run_name: run folder name; None → "<model>-<task>-<timestamp>".
        folds: K for patient-grouped K-fold (``medtf train --folds K``); None/0/1 = single run.
        train_split, val_split, test_split: split names in the records manifest.
        threshold: binary operating point rule on the validation split: "youden" or
            "sensitivity:<target>" (e.g. "sensitivity:0.9").
        backup_every_steps: BackupAndRestore frequency in steps (mid-epoch ``--resume``); None → each epoch.
        steps_per_epoch: cap on training steps per epoch (None = one full pass).
        steps_per_execution: Keras ``steps_per_execution``.
        tensorboard: write TensorBoard logs to RUN/logs.
        jit_compile: Keras ``jit_compile`` ("auto", true or false).
        verbose: Keras fit verbosity (1 = progress bar).
        deterministic_ops: ``tf.config.experimental.enable_op_determinism()`` (bit-exact reruns; slower).
        distill: knowledge distillation from a teacher run (:class:`DistillConfig`), or None (plain training).
    """

    records: str = ""
    task: str | None = None
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: Any = None
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    epochs: int = 10
    seed: int = 0
    precision: str | None = None
    monitor: str = "val_loss"
    monitor_mode: str = "auto"
    early_stopping_patience: int | None = None
    output_dir: str = "runs"
    run_name: str | None = None
    folds: int | None = None
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    threshold: str = "youden"
    backup_every_steps: int | None = None
    steps_per_epoch: int | None = None
    steps_per_execution: int = 1
    tensorboard: bool = True
    jit_compile: Any = "auto"
    verbose: int = 1
    deterministic_ops: bool = False
    distill: DistillConfig | None = None

    def __post_init__(self):
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}. Received: {self.task!r}")
        if self.monitor_mode not in ("auto", "min", "max"):
            raise ValueError(f"monitor_mode must be 'auto', 'min' or 'max'. Received: {self.monitor_mode!r}")
        if int(self.epochs) < 1:
            raise ValueError(f"epochs must be >= 1. Received: {self.epochs}")
        if self.folds is not None and int(self.folds) not in (0, 1) and int(self.folds) < 2:
            raise ValueError(f"folds must be >= 2 (or 0/1/null for a single run). Received: {self.folds}")
        t = self.threshold
        if not (t == "youden" or (isinstance(t, str) and t.startswith("sensitivity:"))):
            raise ValueError(f"threshold must be 'youden' or 'sensitivity:<0..1>'. Received: {t!r}")
        if t.startswith("sensitivity:"):
            v = float(t.split(":", 1)[1])
            if not 0 < v <= 1:
                raise ValueError(f"threshold target sensitivity must be in (0, 1]. Received: {v}")
        if isinstance(self.distill, Mapping):
            object.__setattr__(self, "distill", DistillConfig.from_dict(self.distill))
        if self.data is None:
            object.__setattr__(self, "data", data_config_from_dict({}))
        elif isinstance(self.data, Mapping):
            object.__setattr__(self, "data", data_config_from_dict(self.data))

    # ---------------------------------------------------------------- dict / YAML
    @classmethod
    def from_dict(cls, d: Mapping, *, base_dir=None) -> "TrainConfig":
        """Build from a (YAML-loaded) dict.

        Args:
            d: the mapping.
            base_dir: folder that relative ``records``/``output_dir`` paths are resolved against; None
                leaves them as given.

        Raises:
            ValueError: unknown key (named with its dotted path) or invalid value.
        """
        d = dict(d or {})
        _check_keys(cls, d, "")
        kw: dict[str, Any] = {}
        sections = {"model": ModelConfig, "loss": LossConfig, "optimizer": OptimizerConfig, "schedule": ScheduleConfig,
                    "distill": DistillConfig}
        for k, v in d.items():
            if k == "distill" and v is None:
                kw[k] = None
            elif k in sections:
                kw[k] = sections[k].from_dict(v or {}, k)
            elif k == "data":
                if v is not None and not isinstance(v, Mapping):
                    raise ValueError(f"config section 'data' must be a mapping. Received: {v!r}")
                kw[k] = data_config_from_dict(v)
            else:
                kw[k] = v
        for k in ("epochs", "seed", "steps_per_execution", "verbose"):
            if k in kw:
                kw[k] = _as_int(kw[k], k)
        for k in ("early_stopping_patience", "backup_every_steps", "steps_per_epoch", "folds"):
            if kw.get(k) is not None:
                kw[k] = _as_int(kw[k], k)
        if base_dir is not None:
            for k in ("records", "output_dir"):
                if kw.get(k):
                    p = pathlib.Path(str(kw[k])).expanduser()
                    kw[k] = str(p if p.is_absolute() else (pathlib.Path(base_dir) / p).resolve())
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict; ``TrainConfig.from_dict(c.to_dict()) == c``."""
        d = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "data":
                d[f.name] = data_config_to_dict(v)
            else:
                d[f.name] = _plain(v)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, *, base_dir=None) -> "TrainConfig":
        d = yaml.safe_load(text) or {}
        if not isinstance(d, Mapping):
            raise ValueError(f"training config must be a YAML mapping. Received: {type(d).__name__}")
        return cls.from_dict(d, base_dir=base_dir)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def parse_overrides(items) -> list[tuple[list[str], Any]]:
    """``["a.b=1", "c=[1, 2]"]`` → [(["a", "b"], 1), (["c"], [1, 2])]; values are parsed as YAML.

    Raises:
        ValueError: an item is not ``key=value``.
    """
    out = []
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--set expects key=value (e.g. optimizer.learning_rate=3e-4). Received: {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ValueError(f"--set key must be dotted names like 'a.b'. Received: {key!r}")
        value = yaml.safe_load(raw) if raw.strip() else None
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                value = float(value) if any(c in value.lower() for c in ".e") and value.strip() else value
            except ValueError:
                pass
        if isinstance(value, str) and raw.strip().lower() in ("none", "null", "~"):
            value = None
        out.append((key.split("."), value))
    return out


def apply_overrides(d: Mapping, items) -> dict[str, Any]:
    """Return a deep copy of ``d`` with ``--set`` overrides applied (missing sections are created)."""
    import copy

    d = copy.deepcopy(dict(d))
    for path, value in parse_overrides(items):
        node = d
        for p in path[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            elif not isinstance(nxt, dict):
                raise ValueError(f"--set {'.'.join(path)}: {p!r} is not a section (it is {nxt!r})")
            node = nxt
        node[path[-1]] = value
    return d


def _merge(base: Mapping, top: Mapping) -> dict[str, Any]:
    """``top`` over ``base``, recursively where both hold a mapping."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), Mapping) and isinstance(v, Mapping) else v
    return out


def load_config(path, overrides=(), *, defaults: Mapping | None = None) -> TrainConfig:
    """Read a YAML config file, apply ``--set`` overrides and validate everything before any work starts.

    Relative ``records``/``output_dir`` paths written in the file resolve against the file's folder; the same
    keys given with ``--set`` resolve against the current directory. Unknown keys anywhere (including
    ``data.preprocessing`` and ``model.kwargs``, checked against the builder's signature), unknown model
    names (with the closest valid ones) and wrong value types are reported as one line naming the
    dotted key.

    ``defaults`` (e.g. a distillation teacher's records, task and data) fill in what the file does not say:
    they are merged under the file's keys (mapping by mapping), before ``--set`` overrides.

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid YAML/keys/values (message names the file and the dotted key).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training config not found (expected a YAML file)")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(d, Mapping):
        raise ValueError(f"{path}: training config must be a YAML mapping. Received: {type(d).__name__}")
    # paths written in the file resolve against the file's folder; paths given with --set against the
    # current directory (where the user typed them)
    d = dict(d)
    for k in PATH_KEYS:
        if d.get(k):
            d[k] = _resolve(d[k], path.parent)
    if isinstance(d.get("distill"), Mapping) and d["distill"].get("teacher"):
        d["distill"] = {**d["distill"], "teacher": _resolve(d["distill"]["teacher"], path.parent)}
    if defaults:
        d = _merge(defaults, d)
    d = apply_overrides(d, overrides)
    for keys, value in parse_overrides(overrides):
        if len(keys) == 1 and keys[0] in PATH_KEYS and value:
            d[keys[0]] = _resolve(value, pathlib.Path.cwd())
    try:
        config = TrainConfig.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    try:
        validate_model(config.model)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return config


#: config keys holding paths (resolved against the config's folder, or the current directory for --set)
PATH_KEYS = ("records", "output_dir")


def _resolve(value, base: pathlib.Path) -> str:
    p = pathlib.Path(str(value)).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())
