"""Edge runtime: run an exported ``.tflite`` on DICOM/PNG/NumPy inputs **without TensorFlow or Keras**.

Dependencies: NumPy, ``ai_edge_litert`` (or ``tflite_runtime`` where only that exists), pydicom for
DICOM, and OpenCV or Pillow for PNG/JPEG when installed (a minimal built-in PNG decoder otherwise).

The model's preprocessing (``medtf.data.spec.Preprocessing``, stored in the metadata) is applied in
NumPy: intensity → channels → size, with a bilinear resize that reproduces
``tf.image.resize(..., "bilinear")`` (half-pixel centres, no antialiasing) and a centre
crop-or-pad that reproduces ``tf.image.resize_with_crop_or_pad``.

Example::

    from medtf.export.edge import predict_files, benchmark
    results = predict_files("model_int8.tflite", ["a.dcm", "b.png"])
    stats = benchmark("model_int8.tflite", runs=100, threads=2)
"""

from __future__ import annotations

import importlib
import pathlib
import struct
import time
import zlib
from typing import Any, Iterable

import numpy as np

from medtf.data.spec import Preprocessing, apply_intensity_numpy, crop_or_pad_numpy, resize_numpy
from medtf.export.metadata import load_metadata


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
def _is_dicom(path: pathlib.Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def read_dicom(path) -> np.ndarray:
    """Modality values of a DICOM file as float32, channels last: (H, W, 1|3) or (F, H, W, 1|3).

    Uses the same decoder as the converter (``medtf.io.dicom.decode_pixels``: NumPy + pydicom only), so
    inference sees exactly the values training saw: MONOCHROME1 inverted over the stored range
    (2^BitsStored − 1 − v) before the Modality LUT (HU for CT), colour converted to RGB.

    Raises:
        ValueError: the file has no pixel data or cannot be decoded (message names the path).
    """
    import pydicom

    from medtf.io.dicom import decode_pixels
    from medtf.io.types import ReadError, ReadOptions

    path = pathlib.Path(path)
    try:
        ds = pydicom.dcmread(str(path))
        x, _ = decode_pixels(path, ds, ReadOptions())
    except ReadError as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types
        raise ValueError(f"{path}: cannot read DICOM ({type(exc).__name__})") from None
    return np.asarray(x, dtype=np.float32)


def _png_decode(data: bytes, path) -> np.ndarray:
    """Minimal PNG decoder (non-interlaced, 8/16-bit gray, gray+alpha, RGB, RGBA)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif ctype == b"IDAT":
            idat.append(chunk)
        elif ctype == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path}: PNG without IHDR")
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    if channels is None or depth not in (8, 16) or interlace:
        raise ValueError(
            f"{path}: unsupported PNG (color type {color}, bit depth {depth}, interlace {interlace}); "
            "install opencv-python-headless or Pillow to read it"
        )
    bpp = channels * depth // 8
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for r in range(height):
        ftype, line = raw[r, 0], raw[r, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        else:
            cur = np.zeros(stride, dtype=np.int32)
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = prev[i]
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) // 2
                else:  # Paeth
                    c = prev[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                cur[i] = (line[i] + pred) & 0xFF
        out[r] = cur
        prev = cur
    buf = out.astype(np.uint8)
    if depth == 16:
        img = buf.reshape(height, width * channels, 2)
        img = (img[..., 0].astype(np.uint16) << 8) | img[..., 1]
    else:
        img = buf
    return img.reshape(height, width, channels)


def read_image(path) -> np.ndarray:
    """Read one input as float32 channels-last modality values.

    DICOM (``.dcm`` or the ``DICM`` magic), PNG/JPEG/TIFF (OpenCV or Pillow; a built-in PNG decoder
    otherwise), ``.npy`` (already channels last or 2D gray). Alpha channels are dropped.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unsupported or undecodable file (the message names it).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such input file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        x = np.load(path, allow_pickle=False).astype(np.float32)
        return x[..., None] if x.ndim == 2 else x
    if _is_dicom(path):
        return read_dicom(path)
    if suffix not in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        raise ValueError(f"{path}: unsupported input type {suffix!r} (expected .dcm, .png, .jpg, .tif or .npy)")
    img = None
    try:
        import cv2

        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is not None and img.ndim == 3:
            img = img[..., 2::-1] if img.shape[-1] >= 3 else img  # BGR(A) → RGB, drop alpha
    except ImportError:
        try:
            from PIL import Image as _PIL

            with _PIL.open(path) as im:
                img = np.asarray(im)
        except ImportError:
            if suffix != ".png":
                raise ValueError(f"{path}: reading {suffix} needs opencv-python-headless or Pillow") from None
            img = _png_decode(path.read_bytes(), path)
    if img is None:
        raise ValueError(f"{path}: cannot decode image")
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] in (2, 4):  # drop alpha
        img = img[..., :-1]
    return img.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# preprocessing (NumPy twin of the graph ops)
# ----------------------------------------------------------------------------------------------
def resize_bilinear(image: np.ndarray, size) -> np.ndarray:
    """Resize channels-last (H, W, C) or (D, H, W, C) to ``size`` like ``tf.image.resize`` bilinear
    (half-pixel centres, no antialiasing, float32): ``medtf.data.spec.resize_numpy``."""
    return resize_numpy(np.asarray(image, dtype=np.float32), size)  # raises ValueError on a size/rank mismatch


def crop_or_pad(image: np.ndarray, size) -> np.ndarray:
    """Centre crop / zero pad channels-last ``image`` to ``size`` (``tf.image.resize_with_crop_or_pad``)."""
    return crop_or_pad_numpy(np.asarray(image, dtype=np.float32), size)


def preprocess(image: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Apply ``spec`` (intensity → channels → size) to one channels-last image; float32 out.

    Uses ``medtf.data.spec.apply_numpy`` (the project's NumPy reference) when it exists, else the
    equivalent steps below.
    """
    from medtf.data import spec as _spec

    reference = getattr(_spec, "apply_numpy", None)
    if reference is not None:
        return np.asarray(reference(image, spec), dtype=np.float32)
    x = apply_intensity_numpy(image, spec)
    if spec.size is not None:
        if spec.resize == "resize":
            x = resize_bilinear(x, spec.size)
        else:
            x = crop_or_pad(x, spec.size)
    return x.astype(np.float32)


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
        self.metadata = metadata if metadata is not None else load_metadata(self.path)
        cls, self.runtime, self.runtime_version = load_interpreter_class(runtime)
        self.interpreter = cls(model_path=str(self.path), num_threads=int(threads))
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        pre = self.metadata.get("preprocessing")
        self.preprocessing = Preprocessing.from_dict(pre) if pre else Preprocessing()
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

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """Raw channels-last image → model input (float32, ``input_shape``)."""
        x = preprocess(image, self.preprocessing)
        if x.shape != self.input_shape:
            raise ValueError(
                f"{self.path.name}: preprocessing produced shape {x.shape} but the model expects "
                f"{self.input_shape}; the stored preprocessing (size/channels) does not fit this input"
            )
        return x

    def interpret(self, output: np.ndarray) -> dict[str, Any]:
        """One output → {"probabilities", "prediction", "label"} (or {"mask", "probabilities"})."""
        out = np.asarray(output, dtype=np.float32)
        task = self.task
        if task == "segmentation":
            mask = (out[..., 0] > 0.5).astype(np.uint8) if out.shape[-1] == 1 else np.argmax(out, -1).astype(np.uint8)
            return {"mask": mask, "probabilities": out}
        if task == "restoration":
            return {"image": out}
        res: dict[str, Any] = {"probabilities": [float(v) for v in out.reshape(-1)]}
        if task == "binary":
            thr = 0.5 if self.threshold is None else float(self.threshold)
            pred = int(out.reshape(-1)[0] >= thr)
            res["threshold"] = thr
        elif task == "multilabel":
            pred = [i for i, v in enumerate(out.reshape(-1)) if v >= 0.5]
        elif task == "ordinal":
            pred = int(np.sum(out.reshape(-1) >= 0.5))
        else:
            pred = int(np.argmax(out))
        res["prediction"] = pred
        if self.class_names:
            if isinstance(pred, list):
                res["label"] = [self.class_names[i] for i in pred if i < len(self.class_names)]
            elif pred < len(self.class_names):
                res["label"] = self.class_names[pred]
        return res

    def predict_image(self, image: np.ndarray) -> dict[str, Any]:
        """Raw image → interpreted prediction."""
        return self.interpret(self.run(self.preprocess(image)[None])[0])


def predict_files(tflite_path, inputs: Iterable, *, metadata: dict | None = None, threads: int = 2,
                  runtime: str | None = None) -> list[dict]:
    """Predict every input file (DICOM, PNG/JPEG, .npy) with an exported model.

    Args:
        tflite_path: the ``.tflite`` file (metadata from its sidecar JSON or flatbuffer).
        inputs: paths.
        metadata: override the stored metadata.
        threads: interpreter threads.
        runtime: force "ai_edge_litert" or "tflite_runtime".

    Returns:
        One dict per input: {"input": path, "probabilities", "prediction", "label"} (classification),
        {"input", "mask", "probabilities"} (segmentation), or {"input", "error"} when the input
        could not be read (the others are still predicted).
    """
    model = EdgeModel(tflite_path, metadata, threads=threads, runtime=runtime)
    results = []
    for path in inputs:
        try:
            image = read_image(path)
        except (OSError, ValueError) as exc:
            results.append({"input": str(path), "error": str(exc)})
            continue
        res = model.predict_image(image)
        res["input"] = str(path)
        results.append(res)
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
    ms = times * 1e3
    return {
        "runtime": name,
        "runtime_version": ver,
        "threads": int(threads),
        "runs": int(runs),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "throughput_per_s": float(1e3 / np.median(ms)),
        "size_bytes": path.stat().st_size,
        "input_shape": list(shape),
        "input_dtype": np.dtype(det["dtype"]).name,
    }
