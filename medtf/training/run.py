"""The run folder contract: ``model.json`` (:class:`RunInfo`) and the trained model.

A run folder written by ``medtf train`` holds::

    RUN/config.yaml      resolved training config (``medtf.training.config.TrainConfig``)
    RUN/model.keras      best model (by the monitored metric)
    RUN/model.json       RunInfo: what inference needs (task, classes, input shape, preprocessing, threshold)
    RUN/history.csv      per-epoch metrics
    RUN/checkpoints/     backups for ``--resume``
    RUN/logs/            TensorBoard logs

This module does not import TensorFlow or Keras at import time, so edge / serving code can read
``model.json`` without them. Always read and write ``model.json`` through :class:`RunInfo`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
from typing import Any

import warnings

from medtf.preprocess import Chain, Preprocessing

SCHEMA = "medtf.model/v1"
TASKS = ("binary", "multiclass", "multilabel", "ordinal", "segmentation", "restoration")
MODEL_JSON = "model.json"
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.csv"


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """``model.json``: everything needed to run a trained model on new images.

    Attributes:
        name: model builder name in ``medtf.models`` (e.g. ``"simple_cnn"``).
        task: one of :data:`TASKS`.
        class_names: names of the output classes (for ordinal: the grades; binary: [negative, positive]).
        input_shape: model input shape without the batch axis ((H, W, C) or (D, H, W, C)).
        spatial_dims: 2 or 3.
        preprocessing: the training stage (``data.preprocessing``: record values → model input).
        conversion: the conversion stage the records were made with (``tfrecord-convert``'s resample /
            window / size, from the records' manifest); None for runs written before it was stored.
            ``chain`` = conversion → preprocessing is what raw input goes through.
        threshold: binary operating point chosen on the validation split, or None.
        records: records directory the model was trained on (informational), or None.
        medtf_version: medtf version that wrote the run.
        data: the training ``DataConfig`` as a dict (informational; lets evaluation rebuild datasets).
        label_mode: how labels were encoded for training (from the data config), or None.
        threshold_method: how ``threshold`` was chosen (e.g. ``"youden"``, ``"sensitivity:0.9"``), or None.
        extra: any other keys found in ``model.json`` (kept for forward compatibility).
        schema: always ``"medtf.model/v1"``.
    """

    name: str
    task: str
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    spatial_dims: int
    preprocessing: Preprocessing = dataclasses.field(default_factory=Preprocessing)
    conversion: Preprocessing | None = None
    threshold: float | None = None
    records: str | None = None
    medtf_version: str = ""
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    label_mode: str | None = None
    threshold_method: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    schema: str = SCHEMA

    def __post_init__(self):
        if self.schema != SCHEMA:
            raise ValueError(f"model.json schema must be {SCHEMA!r}. Received: {self.schema!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}. Received: {self.task!r}")
        if int(self.spatial_dims) not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3. Received: {self.spatial_dims!r}")
        if isinstance(self.preprocessing, dict):
            object.__setattr__(self, "preprocessing", Preprocessing.from_dict(self.preprocessing))
        if isinstance(self.conversion, dict):
            object.__setattr__(self, "conversion", Preprocessing.from_dict(self.conversion, where="conversion"))
        if not self.medtf_version:
            from medtf import __version__

            object.__setattr__(self, "medtf_version", __version__)
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "spatial_dims", int(self.spatial_dims))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def chain(self) -> Chain:
        """Raw input → model input: the conversion stage (when known), then the training stage.

        Runs written before the conversion stage was stored keep their old behaviour: without a size,
        the training stage resizes to the model input (see :meth:`warn_if_incomplete`).
        """
        pre = self.preprocessing
        if self.conversion is None and pre.size is None and self.task not in ("segmentation", "restoration"):
            spatial = tuple(self.input_shape[:-1])
            if spatial and all(s and s > 0 for s in spatial):
                pre = dataclasses.replace(pre, size=spatial)
        return Chain.of(self.conversion, pre)

    def missing_conversion(self) -> str | None:
        """For runs written before the conversion stage was stored: what the records' conversion did that
        raw input will not get (from the old ``intensity`` note), or None when nothing is missing."""
        if self.conversion is not None:
            return None
        intensity = self.extra.get("intensity") or {}
        if intensity.get("kind") == "window":
            wins = " + ".join(f"{w:g}/{l:g}" for w, l in intensity.get("windows", []))
            return f"the conversion window {wins} (tfrecord-convert --window)"
        return "the conversion stage (tfrecord-convert --window/--spacing/--size, if any were used)"

    def warn_if_incomplete(self) -> None:
        """Warn (once per call) when raw input cannot be preprocessed like the records were."""
        missing = self.missing_conversion()
        if missing:
            warnings.warn(
                f"model.json of {self.name!r} has no conversion spec (written before medtf stored it): raw inputs are "
                f"preprocessed with the training stage only and do not get {missing}. Retrain with this "
                "version to store it.", UserWarning, stacklevel=2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``model.json`` document)."""
        d = {
            "schema": self.schema,
            "name": self.name,
            "task": self.task,
            "class_names": list(self.class_names),
            "input_shape": list(self.input_shape),
            "spatial_dims": self.spatial_dims,
            "preprocessing": self.preprocessing.to_dict(),
            "conversion": None if self.conversion is None else self.conversion.to_dict(),
            "threshold": self.threshold,
            "threshold_method": self.threshold_method,
            "records": self.records,
            "medtf_version": self.medtf_version,
            "data": dict(self.data),
            "label_mode": self.label_mode,
        }
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunInfo":
        """Inverse of :meth:`to_dict`; unknown keys go to ``extra``.

        Raises:
            ValueError: a required key is missing or a value is invalid.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        missing = [k for k in ("name", "task", "class_names", "input_shape", "spatial_dims") if k not in d]
        if missing:
            raise ValueError(f"model.json is missing required key(s) {missing}. Received keys: {sorted(d)}")
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["extra"] = {k: v for k, v in d.items() if k not in known}
        kwargs["preprocessing"] = Preprocessing.from_dict(d.get("preprocessing") or {})
        kwargs["conversion"] = (None if d.get("conversion") is None
                                else Preprocessing.from_dict(d["conversion"], where="conversion"))
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def save(self, run_dir) -> pathlib.Path:
        """Write ``run_dir/model.json`` atomically (temp file + rename). Returns the path."""
        run_dir = pathlib.Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / MODEL_JSON
        atomic_write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, run_dir) -> "RunInfo":
        """Read ``run_dir/model.json`` (``run_dir`` may also be the model.json path itself).

        Raises:
            FileNotFoundError: no model.json there.
            ValueError: the file is not valid model.json.
        """
        path = pathlib.Path(run_dir)
        if path.is_dir():
            path = path / MODEL_JSON
        if not path.exists():
            raise FileNotFoundError(f"{path}: no model.json (expected a run folder written by `medtf train`)")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def custom_objects() -> dict[str, Any]:
    """Import the medtf modules that register Keras serializables (layers, losses, metrics).

    Returns the dict of medtf custom objects (for ``keras.saving.load_model(custom_objects=...)``).
    """
    import importlib

    objs: dict[str, Any] = {}
    for mod in ("medtf.layers", "medtf.models", "medtf.training.losses", "medtf.training.metrics"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        getter = getattr(m, "custom_objects", None)
        if callable(getter):
            objs.update(getter())
    return objs


def load_model(run_dir, *, compile: bool = False):
    """Load ``run_dir/model.keras`` with medtf's custom objects registered.

    Args:
        run_dir: a run folder (or the ``.keras`` file itself).
        compile: also restore the training loss/metrics (needs the medtf losses; off by default).

    Returns:
        The ``keras.Model``.

    Raises:
        FileNotFoundError: no model file.
    """
    import keras

    path = pathlib.Path(run_dir)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained model (expected RUN/{MODEL_FILE} written by `medtf train`)")
    return keras.saving.load_model(str(path), custom_objects=custom_objects(), compile=compile)
