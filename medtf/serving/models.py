"""Served models: one interface over a SavedModel, a ``.tflite`` (edge runtime) and a run's Keras model.

A :class:`ServedModel` knows what inference needs (name, version, task, class names, threshold, the
preprocessing :class:`~medtf.preprocess.Chain`, input shape) and exposes the two signatures every medtf
export has, with TF Serving's names:

* ``serving_default``: ``image`` = raw pixels / modality values (float32, ``[N, spatial..., C_raw]``), plus
  ``spacing`` (``[N, spatial_dims]``, mm) when the chain resamples → ``predictions``;
* ``predict_preprocessed``: ``x`` = the model input → ``predictions``.

For a SavedModel both are the SavedModel's own signatures (the chain runs in the graph,
``medtf.preprocess.tf_ops``); for a ``.tflite`` or a Keras run, ``serving_default`` applies the chain with the
NumPy reference (``medtf.preprocess.apply_chain``) image by image. :meth:`ServedModel.run` is the
preprocessed call the DICOM path uses (the chain applied with the NumPy reference first, exactly as
``medtf predict`` does).

Which file a path means (:func:`resolve`): a SavedModel version folder (``…/<name>/<version>/`` with
``saved_model.pb``), a model base folder (``…/<name>/`` holding numeric version folders: the highest is
served, TF Serving's default policy), a ``.tflite`` file, or a run folder (``model.json``): its
``export/savedmodel/<name>/`` when present, else its ``export/*.tflite`` (fp32 first). The model's name is
the base folder's name (the last part of TF Serving's ``model_base_path``), the ``.tflite`` metadata's
``name``, or the run folder's name.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import pathlib
import threading
from typing import Any

import numpy as np

from medtf.preprocess import Chain, apply_chain

SERVING_DEFAULT = "serving_default"
PREPROCESSED = "predict_preprocessed"
_TFLITE_ORDER = ("fp32", "fp16", "dynamic", "int8")


class ModelError(ValueError):
    """A path is not a servable model (the message says what was expected)."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One signature tensor: dtype name (NumPy) and shape (None = any size)."""

    dtype: str
    shape: tuple[int | None, ...]


@dataclasses.dataclass(frozen=True)
class Signature:
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


def _raw_channels(chain: Chain, input_channels: int) -> int:
    """Channels of the raw input the chain expects (the rule of ``export_saved_model``)."""
    maps = any(s.channels is not None or s.intensity == "window" for s in chain.steps)
    return 1 if maps else int(input_channels)


def _output_dtype_shape(shape) -> TensorInfo:
    return TensorInfo("float32", tuple(None if (s is None or int(s) < 0) else int(s) for s in shape))


class ServedModel(abc.ABC):
    """Base class; subclasses implement :meth:`run` and, when they have one, a graph ``serving_default``.

    Attributes:
        name, version, task, class_names, threshold, chain, input_shape, spatial_dims, kind
        ("savedmodel" | "tflite" | "keras"), path (what was loaded).
    """

    kind = "model"

    def __init__(self, *, name: str, version: int, task: str, class_names, threshold, chain: Chain,
                 input_shape, path, output_shape=None, raw_channels: int | None = None):
        self.name = str(name)
        self.version = int(version)
        self.task = str(task)
        self.class_names = [str(c) for c in (class_names or [])]
        self.threshold = None if threshold is None else float(threshold)
        self.chain = chain
        self.input_shape = tuple(int(v) for v in input_shape)
        self.spatial_dims = len(self.input_shape) - 1
        self.path = pathlib.Path(path)
        self.output_shape = tuple(output_shape) if output_shape is not None else None
        self.raw_channels = (int(raw_channels) if raw_channels is not None
                             else _raw_channels(chain, self.input_shape[-1]))
        self.resamples = any(s.spacing is not None for s in chain.steps)
        self.resizes = any(s.size is not None for s in chain.steps)

    # ------------------------------------------------------------------ description
    @property
    def dense(self) -> bool:
        return self.task in ("segmentation", "restoration")

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (no paths beyond the model's own folder name)."""
        return {"name": self.name, "version": str(self.version), "kind": self.kind, "task": self.task,
                "class_names": list(self.class_names), "threshold": self.threshold,
                "input_shape": list(self.input_shape), "preprocessing": self.chain.describe()}

    def signatures(self) -> dict[str, Signature]:
        raw_spatial = tuple([None] * self.spatial_dims) if self.resizes else self.input_shape[:-1]
        out = {"predictions": _output_dtype_shape((None, *(self.output_shape or ())))}
        inputs = {"image": TensorInfo("float32", (None, *raw_spatial, self.raw_channels))}
        if self.resamples:
            inputs["spacing"] = TensorInfo("float32", (None, self.spatial_dims))
        return {SERVING_DEFAULT: Signature(inputs, out),
                PREPROCESSED: Signature({"x": TensorInfo("float32", (None, *self.input_shape))}, out)}

    def metadata(self) -> dict[str, Any]:
        """``GetModelMetadata``'s ``metadata`` field: ``{"signature_def": {"signature_def": {...}}}``."""
        defs = {}
        for sig_name, sig in self.signatures().items():
            defs[sig_name] = {
                "inputs": {k: _tensor_info_json(k, v, f"{sig_name}_{k}:0") for k, v in sig.inputs.items()},
                "outputs": {k: _tensor_info_json(k, v, f"StatefulPartitionedCall:{i}")
                            for i, (k, v) in enumerate(sig.outputs.items())},
                "method_name": "tensorflow/serving/predict",
                "defaults": {},
            }
        return {"signature_def": {"signature_def": defs}}

    # ------------------------------------------------------------------ inference
    @abc.abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed float32 batch ``(N, *input_shape)`` → float32 outputs (each backend implements it)."""

    def __call__(self, x, training: bool = False) -> np.ndarray:  # the Keras-style call sliding windows use
        return self.run(np.asarray(x, np.float32))

    def preprocess(self, image: np.ndarray, spacing=None) -> np.ndarray:
        """Raw channels-last image → model input with the stored chain (NumPy reference).

        Raises:
            ValueError: the chain does not fit the image or lands on another shape than the model's.
        """
        x = apply_chain(np.asarray(image), self.chain, spacing)
        if not self.dense and tuple(x.shape) != self.input_shape:
            raise ValueError(f"preprocessing ({self.chain.describe()}) produced shape {tuple(x.shape)} but the "
                             f"model expects {self.input_shape}")
        return x

    def call(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a signature on a dict of batched inputs; returns ``{"predictions": array}``.

        Raises:
            KeyError: unknown signature; ValueError: an input that does not fit.
        """
        if signature == PREPROCESSED:
            return {"predictions": self.run(inputs["x"])}
        if signature != SERVING_DEFAULT:
            raise KeyError(signature)
        images = inputs["image"]
        spacing = inputs.get("spacing")
        xs = [self.preprocess(images[i], None if spacing is None else tuple(float(v) for v in spacing[i]))
              for i in range(len(images))]
        return {"predictions": self.run(np.stack(xs)) if xs else np.zeros((0,), np.float32)}

    def close(self) -> None:
        """Release what the backend holds (no-op by default)."""


def _tensor_info_json(name: str, info: TensorInfo, tensor_name: str) -> dict:
    return {"dtype": "DT_FLOAT" if info.dtype == "float32" else f"DT_{info.dtype.upper()}",
            "tensor_shape": {"dim": [{"size": str(-1 if s is None else s), "name": ""} for s in info.shape],
                             "unknown_rank": False},
            "name": tensor_name}


# ----------------------------------------------------------------------------------------------
# SavedModel
# ----------------------------------------------------------------------------------------------
class SavedModelModel(ServedModel):
    """A SavedModel version folder written by ``medtf export`` (``medtf.json`` beside ``saved_model.pb``)."""

    kind = "savedmodel"

    def __init__(self, version_dir, name: str | None = None):
        import tensorflow as tf

        from medtf.export.saved_model import as_chain

        version_dir = pathlib.Path(version_dir)
        doc_path = version_dir / "medtf.json"
        if not doc_path.is_file():
            raise ModelError(f"{version_dir}: no medtf.json beside the SavedModel (export it with `medtf export`)")
        doc = json.loads(doc_path.read_text())
        if "task" not in doc:
            raise ModelError(f"{doc_path}: no task stored (export it again with `medtf export`)")
        self._loaded = tf.saved_model.load(str(version_dir))
        self._sigs = dict(self._loaded.signatures)
        if SERVING_DEFAULT not in self._sigs or PREPROCESSED not in self._sigs:
            raise ModelError(f"{version_dir}: the SavedModel lacks the {SERVING_DEFAULT!r} / {PREPROCESSED!r} "
                             "signatures medtf export writes")
        chain = as_chain(doc.get("preprocessing_chain") if doc.get("preprocessing_chain") is not None
                         else doc.get("preprocessing"))
        x_spec = self._sigs[PREPROCESSED].structured_input_signature[1]["x"]
        out_spec = next(iter(self._sigs[PREPROCESSED].structured_outputs.values()))
        super().__init__(name=name or doc.get("name") or version_dir.parent.name,
                         version=int(version_dir.name) if version_dir.name.isdigit() else int(doc.get("version", 1)),
                         task=doc["task"], class_names=doc.get("class_names"), threshold=doc.get("threshold"),
                         chain=chain, input_shape=x_spec.shape[1:], path=version_dir,
                         output_shape=tuple(out_spec.shape[1:]), raw_channels=doc.get("raw_channels"))
        self._tf = tf

    def signatures(self) -> dict[str, Signature]:
        out = {}
        for sig_name in (SERVING_DEFAULT, PREPROCESSED):
            fn = self._sigs[sig_name]
            ins = {k: TensorInfo(v.dtype.name, tuple(v.shape.as_list()))
                   for k, v in fn.structured_input_signature[1].items()}
            outs = {k: TensorInfo(v.dtype.name, tuple(v.shape.as_list())) for k, v in fn.structured_outputs.items()}
            out[sig_name] = Signature(ins, outs)
        return out

    def metadata(self) -> dict[str, Any]:
        """The SavedModel's own SignatureDefs, printed as TF Serving prints them (proto JSON)."""
        from google.protobuf import json_format
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2

        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString((self.path / "saved_model.pb").read_bytes())
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in sm.meta_graphs[0].signature_def.items():
            sig_map.signature_def[key].CopyFrom(value)
        doc = json_format.MessageToDict(sig_map, preserving_proto_field_name=True,
                                        always_print_fields_with_no_presence=True)
        return {"signature_def": doc}

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self._sigs[PREPROCESSED](x=self._tf.constant(np.asarray(x, np.float32)))
        return np.asarray(next(iter(out.values())).numpy(), np.float32)

    def call(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fn = self._sigs[signature]  # KeyError: unknown signature
        want = fn.structured_input_signature[1]
        kwargs = {k: self._tf.constant(np.asarray(inputs[k]), dtype=want[k].dtype) for k in want}
        return {k: np.asarray(v.numpy()) for k, v in fn(**kwargs).items()}


# ----------------------------------------------------------------------------------------------
# .tflite (edge runtime)
# ----------------------------------------------------------------------------------------------
class TFLiteModel(ServedModel):
    """A ``.tflite`` with medtf metadata, run by the edge runtime (one interpreter call at a time)."""

    kind = "tflite"

    def __init__(self, path, name: str | None = None, threads: int = 2):
        from medtf.export.edge import EdgeModel

        path = pathlib.Path(path)
        try:
            self._edge = EdgeModel(path, threads=threads)
        except (FileNotFoundError, ValueError) as exc:
            raise ModelError(str(exc)) from None
        md = self._edge.metadata
        stem = path.stem
        for fmt in _TFLITE_ORDER + ("int8-qat", "int8-pqat", "pruned"):
            if stem.endswith("_" + fmt):
                stem = stem[: -len(fmt) - 1]
        out = (md.get("output") or {}).get("shape")
        super().__init__(name=name or md.get("name") or stem, version=int(md.get("version") or 1),
                         task=self._edge.task, class_names=self._edge.class_names, threshold=self._edge.threshold,
                         chain=self._edge.chain, input_shape=self._edge.input_shape, path=path,
                         output_shape=tuple(out[1:]) if out else None)
        self._lock = threading.Lock()  # an interpreter is not thread-safe

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._edge.run(x)


# ----------------------------------------------------------------------------------------------
# Keras run (offline: medtf predict)
# ----------------------------------------------------------------------------------------------
class KerasRunModel(ServedModel):
    """A run folder's ``model.keras`` with its ``model.json`` (what ``medtf predict`` runs)."""

    kind = "keras"

    def __init__(self, run_dir, name: str | None = None):
        from medtf.training.run import RunInfo, load_model

        run_dir = pathlib.Path(run_dir)
        try:
            info = RunInfo.load(run_dir)
        except (FileNotFoundError, ValueError) as exc:
            raise ModelError(str(exc)) from None
        info.warn_if_incomplete()
        self.info = info
        self._model = load_model(run_dir)
        super().__init__(name=name or run_dir.resolve().name, version=1, task=info.task,
                         class_names=info.class_names, threshold=info.threshold, chain=info.chain,
                         input_shape=info.input_shape, path=run_dir,
                         output_shape=tuple(self._model.outputs[0].shape[1:]))

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._model(np.asarray(x, np.float32), training=False), np.float32)


# ----------------------------------------------------------------------------------------------
# resolving paths
# ----------------------------------------------------------------------------------------------
def _versions(base: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()
                  and (p / "saved_model.pb").is_file())


def resolve(path) -> tuple[str, pathlib.Path, str]:
    """(kind, file or version folder, default name) for a path given to ``medtf serve``.

    Raises:
        FileNotFoundError: the path does not exist.
        ModelError: nothing servable there (the message says what to run).
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix == ".tflite":
            return "tflite", path, ""
        raise ModelError(f"{path}: expected a .tflite file, a SavedModel folder or a run folder")
    if (path / "saved_model.pb").is_file():
        return "savedmodel", path, path.parent.name if path.name.isdigit() else path.name
    if _versions(path):
        return "savedmodel", path / str(_versions(path)[-1]), path.name
    if (path / "model.json").is_file():
        sm = path / "export" / "savedmodel"
        bases = sorted(p for p in sm.iterdir() if p.is_dir() and _versions(p)) if sm.is_dir() else []
        if len(bases) > 1:
            wanted = [b for b in bases if b.name == path.resolve().name]
            if len(wanted) != 1:
                raise ModelError(f"{path}: several exported SavedModels ({[b.name for b in bases]}); "
                                 "give the one to serve (RUN/export/savedmodel/<name>)")
            bases = wanted
        if bases:
            return "savedmodel", bases[0] / str(_versions(bases[0])[-1]), bases[0].name
        for fmt in _TFLITE_ORDER:
            hits = sorted((path / "export").glob(f"*_{fmt}.tflite")) if (path / "export").is_dir() else []
            if hits:
                return "tflite", hits[0], path.resolve().name
        raise ModelError(f"{path}: a run folder without an export; run `medtf export {path} --format savedmodel` "
                         "first")
    raise ModelError(f"{path}: not a SavedModel folder (saved_model.pb or numeric version folders), a .tflite "
                     "or a run folder (model.json)")


def load(path, name: str | None = None, *, threads: int = 2) -> ServedModel:
    """Load what :func:`resolve` finds at ``path`` (see the module docstring).

    Raises:
        FileNotFoundError, ModelError: see :func:`resolve`.
    """
    kind, target, default = resolve(path)
    if kind == "tflite":
        return TFLiteModel(target, name=name or default or None, threads=threads)
    return SavedModelModel(target, name=name or default or None)
