"""Edge runtime: run an exported ``.tflite`` on DICOM/PNG/NumPy inputs **without TensorFlow or Keras**.

Dependencies: NumPy, ``ai_edge_litert`` (or ``tflite_runtime`` where only that exists), and what
``medtf.io`` needs for the input format (pydicom for DICOM, nibabel for NIfTI, OpenCV for PNG/JPEG/TIFF).

The model's preprocessing chain (``medtf.preprocess.Chain``: the records' conversion stage, then the
training stage, stored in the metadata) is applied from RAW input with the NumPy reference of
``medtf.preprocess`` — the same code the converter ran — so a DICOM file, a DICOM series folder or a
NIfTI volume gets exactly the numbers its records got. Segmentation masks are put back on the source
grid. Decisions follow ``medtf.interpret`` (tie rule ``p >= threshold``).

Example::

    from medtf.export.edge import predict_files, benchmark
    results = predict_files("model_int8.tflite", ["a.dcm", "b.png"])
    stats = benchmark("model_int8.tflite", runs=100, threads=2)
"""

from __future__ import annotations

import importlib
import pathlib
import time
from typing import Any, Iterable

import numpy as np

from medtf.export.metadata import load_metadata
from medtf.interpret import interpret as interpret_output
from medtf.interpret import segmentation_labels
from medtf.preprocess import Chain, Preprocessing, apply_chain, chain_map, crop_or_pad as _crop_or_pad
from medtf.preprocess import resize as _resize
from medtf.preprocess import to_source_grid


# ----------------------------------------------------------------------------------------------
# interpreter
# ----------------------------------------------------------------------------------------------
def load_interpreter_class(prefer: str | None = None):
    """(Interpreter class, runtime name, version): ``ai_edge_litert`` first, then ``tflite_runtime``.

    Args:
        prefer: "ai_edge_litert" or "tflite_runtime" to force one.

    Raises:
        ImportError: neither runtime is installed.
    """
    order = ["ai_edge_litert", "tflite_runtime"]
    if prefer:
        if prefer not in order:
            raise ValueError(f"runtime must be one of {order}. Received: {prefer!r}")
        order = [prefer]
    for name in order:
        try:
            mod = importlib.import_module(f"{name}.interpreter")
        except ImportError:
            continue
        try:
            from importlib.metadata import version

            ver = version(name.replace("_", "-"))
        except Exception:  # pragma: no cover - metadata missing
            ver = getattr(importlib.import_module(name), "__version__", "unknown")
        return mod.Interpreter, name, ver
    raise ImportError(
        "no TFLite runtime found: install `ai-edge-litert` (pip install medtf[edge]) or `tflite-runtime`"
    )


# ----------------------------------------------------------------------------------------------
# reading inputs
# ----------------------------------------------------------------------------------------------
def read_image(path) -> np.ndarray:
    """Raw values of one input file as float32 channels last, read exactly as ``tfrecord-convert`` reads it
    (``medtf.io``: DICOM with MONOCHROME1 and the Modality LUT, NIfTI, PNG/JPEG/TIFF); ``.npy`` as stored.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unsupported or undecodable file (the message names it).
    """
    from medtf.io.inputs import site_pseudonymizer

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such input file")
    try:
        (_, _, array, _, _), *_ = _images_of(path, 3 if path.suffix.lower() in (".nii", ".gz") else 2, False,
                                             site_pseudonymizer())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return np.asarray(array, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# preprocessing (NumPy twin of the graph ops)
# ----------------------------------------------------------------------------------------------
def resize_bilinear(image: np.ndarray, size) -> np.ndarray:
    """Resize channels-last (H, W, C) or (D, H, W, C) to ``size`` like ``tf.image.resize`` bilinear
    (half-pixel centres, no antialiasing, float32): ``medtf.preprocess.resize``."""
    return _resize(np.asarray(image, dtype=np.float32), size)


def crop_or_pad(image: np.ndarray, size) -> np.ndarray:
    """Centre crop / zero pad channels-last ``image`` to ``size`` (``tf.image.resize_with_crop_or_pad``)."""
    return _crop_or_pad(np.asarray(image, dtype=np.float32), size)


def preprocess(image: np.ndarray, spec: Preprocessing | Chain, spacing=None) -> np.ndarray:
    """Apply a stage or a whole chain to one channels-last raw image (``medtf.preprocess.apply_chain``)."""
    return apply_chain(image, spec, spacing)


def chain_from_metadata(metadata: dict) -> tuple[Chain, str | None]:
    """(chain, missing): the artifact's preprocessing chain, and for artifacts written before the conversion
    stage was stored, what is missing (else None)."""
    pre = Preprocessing.from_dict(metadata.get("preprocessing") or {})
    if "conversion" not in metadata and "preprocessing" in metadata:
        return Chain.of(pre), "the conversion stage (tfrecord-convert --window/--spacing/--size)"
    conv = metadata.get("conversion")
    return Chain.of(None if conv is None else Preprocessing.from_dict(conv, where="conversion"), pre), None


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------
def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """float → int8/uint8 with the tensor's (scale, zero_point), round-half-to-even and saturation."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((np.asarray(q, np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def check_tflite_file(path) -> None:
    """Raise a one-line error unless ``path`` is a readable TFLite flatbuffer (``TFL3`` identifier).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a ``.tflite`` model (a PNG, a DICOM, a truncated file...).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ValueError(f"{path}: not a .tflite model (no TFLite flatbuffer identifier); pass the model file "
                         "from `medtf export` first, then the inputs")


class EdgeModel:
    """A ``.tflite`` file and its metadata, ready to predict on raw images.

    Args:
        tflite_path: the model file.
        metadata: the metadata dict; read from the sidecar / flatbuffer when None.
        threads: interpreter threads.
        runtime: force "ai_edge_litert" or "tflite_runtime".

    Raises:
        FileNotFoundError, ValueError: missing file or metadata (see ``load_metadata``).
    """

    def __init__(self, tflite_path, metadata: dict | None = None, *, threads: int = 2, runtime: str | None = None):
        self.path = pathlib.Path(tflite_path)
        check_tflite_file(self.path)
        self.metadata = metadata if metadata is not None else load_metadata(self.path)
        cls, self.runtime, self.runtime_version = load_interpreter_class(runtime)
        self.interpreter = cls(model_path=str(self.path), num_threads=int(threads))
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self.chain, missing = chain_from_metadata(self.metadata)
        if missing:
            import warnings

            warnings.warn(f"{self.path.name}: its metadata has no conversion spec (exported before medtf stored "
                          f"it): raw inputs do not get {missing}", UserWarning, stacklevel=2)
        self.preprocessing = self.chain.steps[-1] if self.chain.steps else Preprocessing()
        self.task = self.metadata.get("task", "multiclass")
        self.class_names = list(self.metadata.get("class_names") or [])
        self.threshold = self.metadata.get("threshold")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Model input shape without the batch axis."""
        return tuple(int(v) for v in self._in["shape"][1:])

    @property
    def input_dtype(self):
        return self._in["dtype"]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run preprocessed float32 inputs (N, *input_shape); returns float32 outputs (N, ...).

        Quantises inputs / dequantises outputs for int8/uint8 I/O using the tensors' parameters.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(
                f"{self.path.name}: input must have shape (N, {', '.join(map(str, self.input_shape))}). "
                f"Received: {x.shape}"
            )
        outs = []
        in_scale, in_zp = self._in["quantization"]
        out_scale, out_zp = self._out["quantization"]
        for row in x:
            item = row[None]
            if self._in["dtype"] in (np.int8, np.uint8):
                item = quantize(item, in_scale, in_zp, self._in["dtype"])
            else:
                item = item.astype(self._in["dtype"])
            self.interpreter.set_tensor(self._in["index"], item)
            self.interpreter.invoke()
            y = self.interpreter.get_tensor(self._out["index"])
            if self._out["dtype"] in (np.int8, np.uint8):
                y = dequantize(y, out_scale, out_zp)
            outs.append(np.asarray(y, dtype=np.float32)[0])
        return np.stack(outs)

    def preprocess(self, image: np.ndarray, spacing=None) -> np.ndarray:
        """Raw channels-last image (and its spacing, needed when the chain resamples) → model input."""
        x = preprocess(image, self.chain, spacing)
        if x.shape != self.input_shape:
            raise ValueError(
                f"{self.path.name}: preprocessing ({self.chain.describe()}) produced shape {x.shape} but the "
                f"model expects {self.input_shape}; the stored preprocessing does not fit this input"
            )
        return x

    def interpret(self, output: np.ndarray) -> dict[str, Any]:
        """One output → the ``medtf.interpret`` dict (classification), {"mask", "probabilities"}
        (segmentation, model grid) or {"image"} (restoration)."""
        out = np.asarray(output, dtype=np.float32)
        if self.task == "segmentation":
            return {"mask": segmentation_labels(out), "probabilities": out}
        if self.task == "restoration":
            return {"image": out}
        return interpret_output(out, self.task, class_names=self.class_names, threshold=self.threshold)

    def predict_image(self, image: np.ndarray, spacing=None) -> dict[str, Any]:
        """Raw image → interpreted prediction; a segmentation mask comes back on the input's grid."""
        res = self.interpret(self.run(self.preprocess(image, spacing)[None])[0])
        if "mask" in res:
            amap = chain_map(self.chain, np.asarray(image).shape[:-1], spacing)
            res["mask"] = to_source_grid(res["mask"], amap)
        return res


def _images_of(path: pathlib.Path, spatial_dims: int, voi: bool, pseudonymizer):
    """[(name, suffix, array, spacing, image)] of one input (file or folder); raises ValueError/OSError.

    ``name`` is the unit's pseudonymous key (``medtf.io``), ``suffix`` what picks the image inside the
    input (``#<unit>`` in a folder, ``#<index>``, ``#slice<k>``)."""
    if path.suffix.lower() == ".npy" and path.is_file():
        x = np.load(path, allow_pickle=False).astype(np.float32)
        return [(pseudonymizer.source(path.name), "", x[..., None] if x.ndim == spatial_dims else x, None, None)]
    from medtf.io.inputs import iter_inputs

    rejected: list = []
    items = list(iter_inputs([str(path)], spatial_dims=spatial_dims, voi=voi, rejected=rejected,
                             pseudonymizer=pseudonymizer))
    if not items:
        reason = rejected[0][1] if rejected else "no readable image"
        raise ValueError(reason)
    out = []
    many = len(items) > 1
    for unit, image in items:
        tag = f"#{unit.key}" if many and path.is_dir() else ""
        idx = f"#{image.index}" if image.index else ""
        a = np.asarray(image.array)
        if a.ndim - 1 == spatial_dims + 1 and spatial_dims == 2:  # a volume for a 2D model: slice by slice
            out += [(unit.key + idx + f"#slice{k}", tag + idx + f"#slice{k}", a[k], tuple(image.spacing)[1:], image)
                    for k in range(a.shape[0])]
        else:
            out.append((unit.key + idx, tag + idx, a, tuple(image.spacing), image))
    return out


def predict_files(tflite_path, inputs: Iterable, *, metadata: dict | None = None, threads: int = 2,
                  runtime: str | None = None, show_paths: bool = False) -> list[dict]:
    """Predict every input (DICOM files or series folders, NIfTI, PNG/JPEG/TIFF, .npy) with an exported model.

    Args:
        tflite_path: the ``.tflite`` file (metadata from its sidecar JSON or flatbuffer).
        inputs: files or folders.
        metadata: override the stored metadata.
        threads: interpreter threads.
        runtime: force "ai_edge_litert" or "tflite_runtime".
        show_paths: add ``"path"`` (the path as given) to each result. Off by default: file and folder
            names are identifiers, so results name inputs by their keyed pseudonym (``"input"``, the same
            as the records' ``source`` under the site's key).

    Returns:
        One dict per image: {"input", "probability"/"probabilities", "prediction", "label", ...}
        (classification, ``medtf.interpret``), {"input", "mask", "probabilities", "geometry"}
        (segmentation; the mask on the input's grid), or {"input", "error"} when the input could not be
        read or predicted (the others are still predicted).
    """
    from medtf.io.inputs import site_pseudonymizer

    model = EdgeModel(tflite_path, metadata, threads=threads, runtime=runtime)
    sd = int(model.metadata.get("spatial_dims") or (len(model.input_shape) - 1))
    pz = site_pseudonymizer()
    results = []

    def entry(name, shown, **fields):
        row = {"input": name}
        if show_paths:
            row["path"] = shown
        row.update(fields)
        return row

    for path in inputs:
        path = pathlib.Path(path)
        try:
            if not path.exists():
                raise FileNotFoundError("no such input file or folder")
            images = _images_of(path, sd, model.chain.voi, pz)
        except (OSError, ValueError) as exc:
            reason = str(exc).replace(str(path), "<input>")
            results.append(entry(pz.source(path.name), str(path), error=reason))
            continue
        for name, tag, array, spacing, image in images:
            try:
                res = model.predict_image(array.astype(np.float32) if array.dtype.kind != "f" else array, spacing)
            except ValueError as exc:
                results.append(entry(name, f"{path}{tag}", error=str(exc).replace(str(path), "<input>")))
                continue
            row = entry(name, f"{path}{tag}")
            row.update(res)
            if image is not None and "mask" in res:
                row["geometry"] = {"spacing": list(image.spacing), "origin": image.origin, "direction": image.direction}
            results.append(row)
    return results


def benchmark(tflite_path, *, runs: int = 100, warmup: int = 10, threads: int = 2,
              runtime: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Latency of batch-1 inference on a random input of the model's shape.

    Args:
        tflite_path: the model.
        runs: timed invocations (≥ 1).
        warmup: untimed invocations first.
        threads: interpreter threads.
        runtime: force "ai_edge_litert" or "tflite_runtime".
        progress: print a progress line.

    Returns:
        {"runtime", "runtime_version", "threads", "runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
         "min_ms", "throughput_per_s", "size_bytes", "input_shape", "input_dtype"}.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1. Received: {runs}")
    cls, name, ver = load_interpreter_class(runtime)
    path = pathlib.Path(tflite_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    interp = cls(model_path=str(path), num_threads=int(threads))
    interp.allocate_tensors()
    det = interp.get_input_details()[0]
    rng = np.random.default_rng(0)
    shape = tuple(int(v) for v in det["shape"])
    if np.issubdtype(det["dtype"], np.integer):
        info = np.iinfo(det["dtype"])
        x = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(det["dtype"])
    else:
        x = rng.random(shape).astype(det["dtype"])
    interp.set_tensor(det["index"], x)
    for _ in range(max(0, warmup)):
        interp.invoke()
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times[i] = time.perf_counter() - t0
        if progress and (i + 1) % max(1, runs // 10) == 0:
            print(f"  {i + 1}/{runs} runs", flush=True)
    return latency_report(times, runtime=name, version=ver, threads=threads, path=path, shape=shape,
                          dtype=np.dtype(det["dtype"]).name)


def latency_report(times, *, runtime: str, version: str, threads: int, path, shape, dtype: str) -> dict:
    """One latency record (the keys ``bench_device.py`` and ``medtf edge bench`` print) from per-run seconds."""
    ms = np.asarray(times, dtype=np.float64) * 1e3
    return {
        "runtime": runtime,
        "runtime_version": version,
        "threads": int(threads),
        "runs": int(ms.size),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "throughput_per_s": float(1e3 / np.median(ms)),
        "size_bytes": pathlib.Path(path).stat().st_size,
        "input_shape": list(shape),
        "input_dtype": dtype,
    }
