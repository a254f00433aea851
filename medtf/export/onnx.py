"""Keras model → ONNX (fp32) for ONNX Runtime and TensorRT (the Jetson GPU route), and an ONNX Runtime runner.

TF-TRT is gone from TensorFlow since 2.18, so on a Jetson's GPU a TensorFlow model goes ONNX → TensorRT
(``trtexec``, docs/export.md). :func:`export_onnx` writes ``<name>.onnx`` and the same metadata sidecar
JSON as the TFLite formats (``medtf.export.metadata``); the document is also stored inside the file as
the ONNX ``metadata_props`` entry :data:`METADATA_NAME`.

The graph input ``image`` takes the same preprocessed tensor as the Keras model, channels last (NHWC /
NDHWC, float32) with a dynamic batch axis; the output ``predictions`` is the model's first output
(float32). Mixed-precision models are rebuilt in float32 first (``litert.float32_model``).

Route (measured, see docs/export.md): the model's inference call is traced into a ``tf.function``,
frozen with ``tf2onnx.tf_loader.from_function`` given only the real input, and converted with
``tf2onnx.convert.from_graph_def``. Keras's own ``model.export(path, format="onnx")`` calls tf2onnx's
``from_function``, which lists every tensor the traced function captures as a graph input: the
EfficientNet backbone's ``Normalization`` layer keeps its mean/variance as captured tensors, so that
export gets two extra required inputs and cannot be run on ``image`` alone. tf2onnx also writes a bilinear
resize to a non-integer ratio as ``Resize(scales=...)`` that ONNX rounds down to the wrong size;
:func:`_fix_resize_sizes` rewrites those nodes to explicit sizes.

:class:`OnnxModel` (ONNX Runtime + NumPy + ``medtf.preprocess``; no TensorFlow or Keras) runs an exported
file on preprocessed or raw inputs, like ``medtf.export.edge.EdgeModel`` for ``.tflite`` files.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any

import numpy as np

from medtf.export import metadata as _meta

#: The format name used by ``medtf export`` and in parity reports.
FORMAT = "onnx"
#: ONNX opset written by default (TensorRT 8.6's parser takes opsets up to 17).
DEFAULT_OPSET = 17
#: Key of the ``metadata_props`` entry holding the metadata JSON inside the ``.onnx`` file.
METADATA_NAME = _meta.METADATA_NAME
INPUT_NAME = "image"
OUTPUT_NAME = "predictions"


class OnnxExportError(RuntimeError):
    """The ONNX export could not be produced (the message says which op or step failed and what to do)."""


def _require(module: str):
    from medtf._optional import require

    return require(module, "onnx")


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
def _input_spec(model) -> tuple:
    if len(model.inputs) != 1:
        raise OnnxExportError(
            f"model {model.name!r} has {len(model.inputs)} inputs ({[t.name for t in model.inputs]}); ONNX export "
            "takes models with one image input"
        )
    return tuple(None if s is None else int(s) for s in model.inputs[0].shape[1:])


def _unknown_ops(model_proto) -> list[str]:
    """``domain::op`` of nodes ONNX does not define (TF ops tf2onnx left in the graph)."""
    import onnx

    bad = set()
    for node in model_proto.graph.node:
        domain = node.domain or ""
        if domain not in ("", "ai.onnx", "ai.onnx.ml") or not onnx.defs.has(node.op_type, domain):
            bad.add(f"{domain + '::' if domain else ''}{node.op_type}")
    return sorted(bad)


def _fix_resize_sizes(model_proto) -> list[str]:
    """Give ``Resize`` nodes whose constant ``scales`` do not reproduce TensorFlow's integer size explicit ``sizes``.

    tf2onnx turns ``ResizeBilinear(x, size=(5, 5))`` on a static 3×3 input into ``Resize(scales=5/3)``; ONNX
    (and ONNX Runtime) take ``floor(3 · float32(5/3)) = floor(4.9999998) = 4`` as the output size, so the graph
    is wrong (and does not load when a later op needs 5). Such nodes get ``sizes = Concat(Shape(x)[:2],
    round(spatial · scale))`` instead: the batch stays dynamic and the coordinate mapping uses the exact
    ratio, as TensorFlow does. Nodes whose scales give the right size are left alone.

    Returns:
        Names of the nodes rewritten.
    """
    import math

    import onnx
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model_proto)
    shapes = {vi.name: _dims(vi) for vi in [*inferred.graph.value_info, *inferred.graph.input]}
    inits = {t.name: t for t in model_proto.graph.initializer}
    new_nodes, fixed = [], []
    for node in model_proto.graph.node:
        if (node.op_type == "Resize" and len(node.input) >= 3 and node.input[2] in inits
                and (len(node.input) < 4 or not node.input[3])):
            dims = shapes.get(node.input[0])
            scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            if dims and len(dims) == len(scales) and all(d is not None for d in dims[2:]) \
                    and scales[0] == 1 and scales[1] == 1:
                want = [int(round(d * s)) for d, s in zip(dims[2:], scales[2:])]
                # ONNX shape inference and ONNX Runtime: floor(dim · scale) with the float32 scale widened
                if any(math.floor(d * s) != w for d, s, w in zip(dims[2:], scales[2:], want)):
                    base = f"{node.name}_medtf_sizes"
                    consts = {f"{base}_start": [0], f"{base}_end": [2], f"{base}_spatial": want}
                    for cname, val in consts.items():
                        model_proto.graph.initializer.append(numpy_helper.from_array(np.asarray(val, np.int64), cname))
                    new_nodes += [
                        onnx.helper.make_node("Shape", [node.input[0]], [f"{base}_shape"], name=f"{base}_shape"),
                        onnx.helper.make_node("Slice", [f"{base}_shape", f"{base}_start", f"{base}_end"],
                                              [f"{base}_nc"], name=f"{base}_nc"),
                        onnx.helper.make_node("Concat", [f"{base}_nc", f"{base}_spatial"], [base], name=base, axis=0),
                    ]
                    node.input[:] = [node.input[0], node.input[1], "", base]
                    fixed.append(node.name)
        new_nodes.append(node)
    if fixed:
        del model_proto.graph.node[:]
        model_proto.graph.node.extend(new_nodes)
        used = {i for n in model_proto.graph.node for i in n.input}
        keep = [t for t in model_proto.graph.initializer if t.name in used]
        del model_proto.graph.initializer[:]
        model_proto.graph.initializer.extend(keep)
    return fixed


def _check_loads(model_proto, name: str) -> None:
    """Open the graph with ONNX Runtime (when installed) so a graph it cannot load fails the export."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    try:
        ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise OnnxExportError(f"ONNX conversion of {name!r}: ONNX Runtime cannot load the graph: "
                              f"{str(exc).splitlines()[0]}") from exc


def convert(model, *, opset: int = DEFAULT_OPSET):
    """Convert a Keras model to an ONNX ``ModelProto`` (fp32, input ``image`` with a dynamic batch).

    Args:
        model: a Keras 3 model with one input (rebuilt in float32 when mixed precision).
        opset: ONNX opset (≥ 13).

    Returns:
        The ``onnx.ModelProto``, checked with ``onnx.checker`` and opened with ONNX Runtime (when installed).

    Raises:
        ImportError: tf2onnx / onnx missing (names the extra).
        ValueError: bad ``opset``.
        OnnxExportError: the model has several inputs, an op does not convert (named), or the graph is invalid.
    """
    import tensorflow as tf

    from medtf.export.litert import float32_model

    if not isinstance(opset, int) or opset < 13:
        raise ValueError(f"opset must be an int >= 13. Received: {opset!r}")
    onnx = _require("onnx")
    tf2onnx = _require("tf2onnx")
    from tf2onnx import tf_loader

    model = float32_model(model)
    shape = _input_spec(model)

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32, name=INPUT_NAME)])
    def serve(image):
        out = model(image, training=False)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return {OUTPUT_NAME: tf.cast(out, tf.float32)}

    tf_logger = tf.get_logger()
    level = tf_logger.level
    tf_logger.setLevel("ERROR")  # tf2onnx freezes through TF1-era helpers that log deprecation warnings
    try:
        concrete = serve.get_concrete_function()
        # only the image is a graph input: the tensors the trace captures (variables, and constants such as
        # keras.layers.Normalization's mean/variance) are frozen into initializers
        inputs = [t.name for t in concrete.inputs[:1]]
        outputs = [t.name for t in concrete.outputs]
        rename = tf2onnx.convert.tensor_names_from_structed(concrete, inputs, outputs)
        frozen = tf_loader.from_function(concrete, inputs, outputs)
        proto, _ = tf2onnx.convert.from_graph_def(frozen, name=model.name, input_names=inputs, output_names=outputs,
                                                  tensors_to_rename=rename, opset=opset)
    except Exception as exc:  # noqa: BLE001 - converter errors are diverse
        raise OnnxExportError(f"ONNX conversion of {model.name!r} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        tf_logger.setLevel(level)
    bad = _unknown_ops(proto)
    if bad:
        raise OnnxExportError(
            f"ONNX conversion of {model.name!r}: tf2onnx {tf2onnx.__version__} (opset {opset}) could not convert "
            f"the TensorFlow op(s) {bad}; rewrite the layer with ops ONNX has, or try another --onnx-opset"
        )
    _fix_resize_sizes(proto)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001
        raise OnnxExportError(f"ONNX conversion of {model.name!r} gave an invalid graph: {exc}") from exc
    _check_loads(proto, model.name)
    return proto


def _dims(value_info) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def tensor_specs(model_proto) -> tuple[dict, dict]:
    """(input spec, output spec) of an ONNX graph: name, shape (None = dynamic), dtype, quantization (None)."""
    import onnx

    specs = []
    for vi in (model_proto.graph.input[0], model_proto.graph.output[0]):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        specs.append({"name": vi.name, "shape": _dims(vi), "dtype": np.dtype(dtype).name, "quantization": None})
    return specs[0], specs[1]


def export_onnx(
    model,
    path,
    *,
    preprocessing: dict | None = None,
    conversion: dict | None = None,
    task: str = "multiclass",
    class_names=(),
    threshold: float | None = None,
    source_run: str | None = None,
    source_sha256: str | None = None,
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Convert, store the metadata inside the file, write ``path`` and ``path.json`` (atomically).

    Args:
        model: the Keras model.
        path: output ``.onnx`` path.
        preprocessing: the training stage (``Preprocessing.to_dict()``) applied before the model.
        conversion: the conversion stage (``RunInfo.conversion``) applied before it on raw input.
        task, class_names, threshold: from the run's model.json.
        source_run, source_sha256, name: provenance.
        opset: ONNX opset.

    Returns:
        The sidecar metadata (with sha256 and size).

    Raises:
        ImportError, ValueError, OnnxExportError: see :func:`convert`.
    """
    path = pathlib.Path(path)
    proto = convert(model, opset=opset)
    import onnx
    import tf2onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    in_spec, out_spec = tensor_specs(proto)
    doc = _meta.build_metadata(
        format=FORMAT, task=task, class_names=class_names, preprocessing=preprocessing, conversion=conversion,
        input_spec=in_spec, output_spec=out_spec, spatial_dims=len(in_spec["shape"]) - 2, threshold=threshold,
        source_run=source_run, source_sha256=source_sha256, quantization={"mode": "fp32"},
        target="onnxruntime", name=name,
        extra={"onnx": {"opset": opset, "converter": f"tf2onnx {tf2onnx.__version__}", "layout": "channels_last",
                        "dynamic_batch": in_spec["shape"][0] is None}},
    )
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {METADATA_NAME: json.dumps(doc, sort_keys=True)})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(proto.SerializeToString())
    os.replace(tmp, path)
    _meta.write_sidecar(path, doc)
    return load_onnx_metadata(path)


# ----------------------------------------------------------------------------------------------
# runtime (no TensorFlow)
# ----------------------------------------------------------------------------------------------
def check_onnx_file(path) -> None:
    """Raise a one-line error unless ``path`` exists and is named ``.onnx``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an ``.onnx`` file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"{path}: expected an .onnx model file from `medtf export --format onnx`")


def load_onnx_metadata(path, *, verify: bool = True) -> dict:
    """Metadata of an exported ``.onnx``: the sidecar JSON, else the document stored in the file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: no metadata, or the sidecar's sha256 does not match the file.
    """
    path = pathlib.Path(path)
    check_onnx_file(path)
    if _meta.sidecar_path(path).is_file():
        return _meta.load_metadata(path, verify=verify)
    ort = _require("onnxruntime")
    props = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    if METADATA_NAME not in props:
        raise ValueError(f"{path}: no metadata (expected the sidecar {_meta.sidecar_path(path).name} or a "
                         f"'{METADATA_NAME}' metadata_props entry); export it with `medtf export --format onnx`")
    return json.loads(props[METADATA_NAME])


def session(path, *, threads: int = 2):
    """An ONNX Runtime ``InferenceSession`` on the CPU with ``threads`` intra-op threads."""
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An exported ``.onnx`` file and its metadata: run preprocessed inputs, or raw images through the chain.

    Args:
        path: the ``.onnx`` file.
        metadata: the metadata dict; read from the sidecar / the file when None.
        threads: ONNX Runtime intra-op threads.
        batch_size: rows per ONNX Runtime call in :meth:`run`.

    Raises:
        FileNotFoundError, ValueError: missing file or metadata.
        ImportError: onnxruntime missing.
    """

    def __init__(self, path, metadata: dict | None = None, *, threads: int = 2, batch_size: int = 32):
        from medtf.export.edge import chain_from_metadata

        self.path = pathlib.Path(path)
        check_onnx_file(self.path)
        self.metadata = metadata if metadata is not None else load_onnx_metadata(self.path)
        self.session = session(self.path, threads=threads)
        self._in = self.session.get_inputs()[0]
        self._out = self.session.get_outputs()[0]
        self.batch_size = int(batch_size)
        self.chain, _ = chain_from_metadata(self.metadata)
        self.task = self.metadata.get("task", "multiclass")

    @property
    def input_shape(self) -> tuple:
        """Model input shape without the batch axis (None for dynamic sizes)."""
        return tuple(d if isinstance(d, int) else None for d in self._in.shape[1:])

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run preprocessed float32 inputs (N, *input_shape) in batches; returns float32 outputs (N, ...)."""
        x = np.asarray(x, dtype=np.float32)
        want = self.input_shape
        if x.ndim != len(want) + 1 or any(w is not None and w != g for w, g in zip(want, x.shape[1:])):
            shown = ", ".join("?" if w is None else str(w) for w in want)
            raise ValueError(f"{self.path.name}: input must have shape (N, {shown}). Received: {x.shape}")
        outs = [self.session.run([self._out.name], {self._in.name: x[i:i + self.batch_size]})[0]
                for i in range(0, len(x), self.batch_size)]
        return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0,), np.float32)

    def preprocess(self, image: np.ndarray, spacing=None) -> np.ndarray:
        """Raw channels-last image (and its spacing when the chain resamples) → model input."""
        from medtf.preprocess import apply_chain

        x = apply_chain(image, self.chain, spacing)
        want = self.input_shape
        if len(x.shape) != len(want) or any(w is not None and w != g for w, g in zip(want, x.shape)):
            raise ValueError(f"{self.path.name}: preprocessing ({self.chain.describe()}) produced shape {x.shape} but "
                             f"the model expects {want}; the stored preprocessing does not fit this input")
        return x


def predict(path, x: np.ndarray, *, threads: int = 2) -> np.ndarray:
    """Outputs of an ``.onnx`` file (float32) on preprocessed inputs, via ONNX Runtime (CPU)."""
    return OnnxModel(path, metadata={}, threads=threads).run(x)


def benchmark(path, *, runs: int = 100, warmup: int = 10, threads: int = 2) -> dict[str, Any]:
    """Latency of batch-1 ONNX Runtime (CPU) inference on a random input of the model's shape.

    The batch axis is set to 1; a file with other dynamic sizes (a variable bag or image size) is refused.

    Returns:
        {"runtime", "runtime_version", "threads", "runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms",
         "throughput_per_s", "size_bytes", "input_shape", "input_dtype"}.

    Raises:
        ValueError: ``runs`` < 1 or a dynamic size other than the batch.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1. Received: {runs}")
    ort = _require("onnxruntime")
    path = pathlib.Path(path)
    check_onnx_file(path)
    sess = session(path, threads=threads)
    inp = sess.get_inputs()[0]
    shape = [1] + [d if isinstance(d, int) else None for d in inp.shape[1:]]
    if any(d is None for d in shape):
        raise ValueError(f"{path.name}: input {inp.name} has dynamic sizes {inp.shape}; cannot pick a benchmark input")
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    feed = {inp.name: x}
    for _ in range(max(0, warmup)):
        sess.run(None, feed)
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times[i] = time.perf_counter() - t0
    from medtf.export.edge import latency_report

    return latency_report(times, runtime="onnxruntime", version=ort.__version__, threads=threads, path=path,
                          shape=shape, dtype="float32")
