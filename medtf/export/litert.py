"""Keras model → LiteRT/TFLite flatbuffers: fp32, fp16, dynamic range, full int8.

Conversion goes through a temporary SavedModel (Keras 3 ``ExportArchive``) with one batch-1
signature whose input is named ``image``, so every artifact has the same I/O names.

Rules learned the hard way (see docs/export.md):

* a model built under a mixed-precision policy does not convert: :func:`float32_model` rebuilds it
  from its config under float32 and copies the weights;
* full int8 is calibrated on a representative set of *preprocessed* training examples (≥ 200 by
  default) and has int8 (default) or uint8 input/output tensors;
* ``--target tflite-runtime-2.14`` (older Jetson images): TF 2.21's dynamic-range kernels
  (FULLY_CONNECTED v12 with per-channel int8 weights, hybrid TRANSPOSE_CONV) do not exist there, so
  dynamic range is refused for that target; fp32, fp16 and full int8 run.
"""

from __future__ import annotations

import pathlib
import tempfile
import warnings
from typing import Any

import numpy as np

from medtf.export import metadata as _meta

#: TFLite formats this module writes.
FORMATS = ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8")
#: Runtimes an artifact can be made for.
TARGETS = ("ai-edge-litert", "tflite-runtime-2.14")
#: Formats known not to run on a target, with the reason (measured, see docs/compat.md).
INCOMPATIBLE = {
    ("tflite-runtime-2.14", "tflite-dynamic"): (
        "TF 2.21 writes dynamic-range models with FULLY_CONNECTED version 12 (per-channel int8 weights) and "
        "hybrid TRANSPOSE_CONV (int8 weights, float32 input), kernels tflite-runtime 2.14 does not have; "
        "use tflite-int8 (full integer, runs there and is faster) or tflite-fp16/tflite-fp32"
    ),
}
MIN_CALIBRATION = 200


class ExportError(RuntimeError):
    """An export could not be produced (the message says why and what to do)."""


def _is_float32(model) -> bool:
    for layer in _all_layers(model):
        policy = getattr(layer, "dtype_policy", None)
        if policy is not None and (policy.compute_dtype != "float32" or policy.variable_dtype not in (None, "float32")):
            return False
    return True


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers") and layer is not model:
            yield from _all_layers(layer)


def _force_float32(obj):
    """Rewrite every dtype policy in a serialized config to float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy", "DTypePolicyMap") and "config" in obj:
            return {**obj, "class_name": "DTypePolicy", "config": {"name": "float32"}}
        out = {}
        for k, v in obj.items():
            if k == "dtype" and isinstance(v, str) and v in ("mixed_float16", "mixed_bfloat16", "float16", "bfloat16"):
                out[k] = "float32"
            else:
                out[k] = _force_float32(v)
        return out
    if isinstance(obj, list):
        return [_force_float32(v) for v in obj]
    return obj


def float32_model(model):
    """``model`` itself when it is all float32, else a float32 rebuild with the same weights.

    Mixed-precision models do not convert to TFLite; this rebuilds the architecture from its config
    with every dtype policy set to float32 and copies the (float32 master) weights.

    Raises:
        ExportError: the model cannot be rebuilt from its config (custom layer not registered).
    """
    import keras

    if _is_float32(model):
        return model
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        config = _force_float32(keras.saving.serialize_keras_object(model))
        try:
            clone = keras.saving.deserialize_keras_object(config)
        except Exception as exc:  # noqa: BLE001
            raise ExportError(
                f"cannot rebuild {model.name!r} in float32 from its config ({type(exc).__name__}: {exc}); "
                "register custom layers with keras.saving.register_keras_serializable"
            ) from exc
        clone.set_weights([np.asarray(w, dtype=np.float32) if np.issubdtype(np.asarray(w).dtype, np.floating)
                           else w for w in model.get_weights()])
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return clone


def _input_shape(model) -> tuple[int, ...]:
    shape = tuple(model.inputs[0].shape[1:])
    if any(s is None for s in shape):
        raise ExportError(
            f"model {model.name!r} has a dynamic input shape {shape}; edge export needs a fixed size "
            "(set Preprocessing.size / build the model with a fixed input_shape)"
        )
    return tuple(int(s) for s in shape)


def write_conversion_savedmodel(model, directory, batch: int | None = 1) -> str:
    """A SavedModel with one signature ``serving_default``: ``image`` → ``predictions`` (float32)."""
    import keras
    import tensorflow as tf

    shape = _input_shape(model)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(image):
        out = model(image, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return {"predictions": tf.cast(out, tf.float32)}

    archive.add_endpoint(
        "serving_default", serve,
        input_signature=[tf.TensorSpec([batch, *shape], tf.float32, name="image")],
    )
    archive.write_out(str(directory), verbose=False)
    return str(directory)


def _representative(calibration, limit: int | None):
    """Representative-dataset generator: ``calibration`` is an array (N, ...) or an iterable of batches."""
    batches = [calibration] if isinstance(calibration, np.ndarray) else calibration

    def gen():
        n = 0
        for batch in batches:
            for row in np.asarray(batch, dtype=np.float32):
                yield [row[None]]
                n += 1
                if limit is not None and n >= limit:
                    return
    return gen


def _count(calibration) -> int:
    if isinstance(calibration, np.ndarray):
        return int(calibration.shape[0])
    return sum(int(np.asarray(c).shape[0]) for c in calibration)


def convert(model, format: str, *, calibration=None, io_dtype: str = "int8",
            target: str = "ai-edge-litert", min_calibration: int = MIN_CALIBRATION,
            max_calibration: int | None = 1000, float_ops: tuple[str, ...] = (),
            float_nodes: tuple[str, ...] = ()) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer.

    Args:
        model: a Keras 3 model with a fixed input shape (rebuilt in float32 when mixed precision).
        format: one of :data:`FORMATS`.
        calibration: for "tflite-int8": preprocessed inputs, an array (N, *input_shape) or an iterable
            of such batches (N ≥ ``min_calibration``).
        io_dtype: "int8" | "uint8" (input/output tensors of the int8 model) or "float32" (float I/O
            with int8 internals).
        target: one of :data:`TARGETS`.
        min_calibration: fewest calibration examples accepted.
        max_calibration: at most this many are used.
        float_ops: for "tflite-int8": TFLite builtin op names kept in float32 (selective quantization through
            ``tf.lite.experimental.QuantizationDebugger``), e.g. ``("LOGISTIC", "MUL", "MEAN")`` for
            EfficientNet's swish and squeeze-excitation; the rest stays int8. XNNPACK runs the float ops. The
            file then has float32 input and output whatever ``io_dtype`` says (the debugger's quantizer keeps
            float I/O), i.e. what ``io_dtype="float32"`` gives without ``float_ops``.
        float_nodes: for "tflite-int8": the same for single nodes, named by their output tensor in the fp32
            flatbuffer (e.g. only the head's sigmoid of a model whose swish also uses LOGISTIC).

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: bad ``format``/``target``/``io_dtype`` or too few calibration examples.
        ExportError: the format cannot run on ``target``, or conversion failed.
    """
    import tensorflow as tf

    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}. Received: {format!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}. Received: {target!r}")
    if (target, format) in INCOMPATIBLE:
        raise ExportError(f"{format} cannot run on {target}: {INCOMPATIBLE[(target, format)]}")
    if io_dtype not in ("int8", "uint8", "float32"):
        raise ValueError(f"io_dtype must be 'int8', 'uint8' or 'float32'. Received: {io_dtype!r}")
    model = float32_model(model)
    with tempfile.TemporaryDirectory(prefix="medtf-convert-") as tmp:
        write_conversion_savedmodel(model, tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serving_default"])
        if format == "tflite-fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif format == "tflite-dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif format == "tflite-int8":
            if calibration is None:
                raise ValueError("tflite-int8 needs `calibration`: preprocessed training inputs (N, *input_shape)")
            n = _count(calibration) if isinstance(calibration, (np.ndarray, list, tuple)) else None
            if n is not None and n < min_calibration:
                raise ValueError(
                    f"tflite-int8 needs at least {min_calibration} calibration examples. Received: {n}"
                )
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = _representative(calibration, max_calibration)
            # float fallback only for the named ops/nodes (selective quantization): every other op int8
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
                [tf.lite.OpsSet.TFLITE_BUILTINS] if float_ops or float_nodes else [])
            if io_dtype != "float32":
                dt = tf.int8 if io_dtype == "int8" else tf.uint8
                converter.inference_input_type = dt
                converter.inference_output_type = dt
        try:
            if format == "tflite-int8" and (float_ops or float_nodes):
                options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops),
                                                                        denylisted_nodes=list(float_nodes))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    debugger = tf.lite.experimental.QuantizationDebugger(
                        converter=converter, debug_dataset=_representative(calibration, 8), debug_options=options)
                    return bytes(debugger.get_nondebug_quantized_model())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return bytes(converter.convert())
        except Exception as exc:  # noqa: BLE001 - converter errors are diverse
            raise ExportError(f"{format} conversion of {model.name!r} failed: {type(exc).__name__}: {exc}") from exc


def parse_float_ops(text: str) -> tuple[str, ...]:
    """``"logistic, MUL"`` → ``("LOGISTIC", "MUL")``, each checked against the TFLite builtin operator names."""
    names = {k for k in vars(_meta.schema_module().BuiltinOperator) if not k.startswith("_")}
    ops = tuple(dict.fromkeys(o.strip().upper() for o in str(text).split(",") if o.strip()))
    if not ops:
        raise ValueError("expected TFLite op names such as LOGISTIC or LOGISTIC,MUL,MEAN")
    unknown = [o for o in ops if o not in names]
    if unknown:
        import difflib

        hints = [difflib.get_close_matches(o, sorted(names), n=1) for o in unknown]
        hint = "; ".join(f"{o} (did you mean {h[0]}?)" if h else o for o, h in zip(unknown, hints))
        raise ValueError(f"not TFLite builtin ops: {hint}")
    return ops


def tensor_specs(tflite_bytes: bytes) -> tuple[dict, dict]:
    """(input spec, output spec) of a flatbuffer: name, shape, dtype, quantization (scale, zero point)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=tflite_bytes)
    specs = []
    for det in (interp.get_input_details()[0], interp.get_output_details()[0]):
        scale, zp = det["quantization"]
        specs.append({
            "name": det["name"],
            "shape": [int(v) for v in det["shape"]],
            "dtype": np.dtype(det["dtype"]).name,
            "quantization": [float(scale), int(zp)] if scale else None,
        })
    return specs[0], specs[1]


def op_versions(tflite_bytes: bytes) -> dict[str, int]:
    """{builtin op name: highest version} used by a flatbuffer (for runtime compatibility checks)."""
    schema = _meta.schema_module()
    model = schema.Model.GetRootAs(bytearray(tflite_bytes), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out: dict[str, int] = {}
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        op = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(op, str(op))
        out[name] = max(out.get(name, 0), code.Version())
    return out


def export_tflite(
    model,
    path,
    format: str,
    *,
    preprocessing: dict | None = None,
    conversion: dict | None = None,
    task: str = "multiclass",
    class_names=(),
    threshold: float | None = None,
    calibration=None,
    io_dtype: str = "int8",
    target: str = "ai-edge-litert",
    source_run: str | None = None,
    source_sha256: str | None = None,
    name: str | None = None,
    quantization: dict | None = None,
    tflite_bytes: bytes | None = None,
    float_ops: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Convert (unless ``tflite_bytes`` is given), embed metadata, write ``path`` and ``path.json``.

    Args:
        model: the Keras model (used for conversion and its input spec).
        path: output ``.tflite`` path.
        format: one of :data:`FORMATS`.
        preprocessing: the training stage (``Preprocessing.to_dict()``) the edge runtime applies.
        conversion: the conversion stage (``RunInfo.conversion``) applied before it on raw input.
        task, class_names, threshold: from the run's model.json.
        calibration, io_dtype, target: see :func:`convert`.
        source_run, source_sha256, name: provenance.
        quantization: extra quantization facts (QAT, sparsity...) for the metadata.
        tflite_bytes: an already converted flatbuffer (QAT/pruning path).
        float_ops: for "tflite-int8": ops kept in float32 (see :func:`convert`), recorded in the metadata.

    Returns:
        The sidecar metadata (with sha256 and size).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tflite_bytes is None:
        tflite_bytes = convert(model, format, calibration=calibration, io_dtype=io_dtype, target=target,
                               float_ops=tuple(float_ops))
    in_spec, out_spec = tensor_specs(tflite_bytes)
    quant = {"mode": format.replace("tflite-", "")}
    if format == "tflite-int8":
        quant["io_dtype"] = in_spec["dtype"]
        if calibration is not None and isinstance(calibration, (np.ndarray, list, tuple)):
            quant["calibration_examples"] = min(_count(calibration), 1000)
        if float_ops:
            quant["float_ops"] = list(float_ops)
    quant.update(quantization or {})
    spatial = len(in_spec["shape"]) - 2
    doc = _meta.build_metadata(
        format=format, task=task, class_names=class_names, preprocessing=preprocessing, conversion=conversion,
        input_spec=in_spec, output_spec=out_spec, spatial_dims=spatial, threshold=threshold,
        source_run=source_run, source_sha256=source_sha256, quantization=quant, target=target, name=name,
    )
    data = _meta.embed_metadata(tflite_bytes, doc)
    path.write_bytes(data)
    _meta.write_sidecar(path, doc)
    return _meta.load_metadata(path)
