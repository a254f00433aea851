"""Quantization-aware training (QAT) and pruning with tensorflow-model-optimization, isolated.

``tensorflow-model-optimization`` (tfmot) 0.8.1 only works with tf-keras (Keras 2): it refuses Keras 3
models, and ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is imported. medtf therefore runs
this path in a **subprocess** (``python -m medtf.export.qat``) and the calling process keeps Keras 3:

1. the caller saves the Keras 3 model's architecture (its serialized config, rebuilt in float32) and
   weights (``model.weights.h5``) plus the training / calibration arrays to a temp folder;
2. the subprocess translates the Keras 3 config to a tf-keras functional config (input layers,
   inbound-node format, dtype policies, Keras-3-only arguments), builds it with tf-keras, loads the
   ``.weights.h5`` (tf-keras reads a Keras 3 ``.weights.h5`` but not a ``.keras``; if the layer
   paths do not line up it copies weights layer by layer by name instead) and checks the rebuilt
   model reproduces the Keras 3 outputs (max |Δ| ≤ 1e-4);
3. it annotates every layer tfmot's default 8-bit registry supports (others stay float and are
   quantized by calibration at conversion), optionally prunes (``prune_low_magnitude``, polynomial
   decay to the target sparsity, stripped afterwards; with QAT, the prune-preserving scheme),
   fine-tunes for ``epochs`` and converts to full-int8 TFLite (int8 or uint8 I/O);
4. the caller embeds medtf metadata and writes the sidecar (``medtf.export.litert.export_tflite``).

Supported: 2D classifiers built from standard Keras layers (``simple_cnn``, ``efficientnet``...).
Not supported (tfmot limits): ``Conv3D`` QAT, custom layers, nested sub-models.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------------------------
# caller side (Keras 3 process)
# ----------------------------------------------------------------------------------------------


def _run_subprocess(workdir: pathlib.Path, args: list[str], timeout: float | None) -> dict:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", "medtf.export.qat", "--workdir", str(workdir), *args]
    proc = subprocess.run(cmd, env=env, timeout=timeout, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = proc.stdout
    (workdir / "qat.log").write_text(log)
    summary_path = workdir / "summary.json"
    if proc.returncode != 0 or not summary_path.is_file():
        tail = "\n".join(log.strip().splitlines()[-15:])
        raise RuntimeError(f"QAT/pruning subprocess failed (exit {proc.returncode}):\n{tail}")
    return json.loads(summary_path.read_text())


def _fine_tune(model, out_path, *, qat: bool, prune: float | None, x_train, y_train, calibration, task: str,
               epochs: int, batch_size: int, learning_rate: float, io_dtype: str, metadata: dict | None,
               timeout: float | None, keep_workdir: bool) -> dict[str, Any]:
    import keras

    from medtf.export import litert

    if task not in ("binary", "multiclass", "multilabel", "ordinal"):
        raise ValueError(f"QAT/pruning supports classification tasks only. Received task={task!r}")
    if prune is not None and not 0.0 < float(prune) < 1.0:
        raise ValueError(f"prune sparsity must be in (0, 1). Received: {prune}")
    if len(model.inputs[0].shape) != 4:
        raise ValueError(
            f"QAT/pruning supports 2D models only (tfmot cannot quantize Conv3D); "
            f"model input shape is {tuple(model.inputs[0].shape)}"
        )
    model = litert.float32_model(model)
    x_train = np.asarray(x_train, np.float32)
    y_train = np.asarray(y_train, np.float32)
    if y_train.ndim == 1:
        y_train = y_train[:, None]
    calibration = np.asarray(calibration, np.float32)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="medtf-qat-"))
    try:
        model.save_weights(tmp / "model.weights.h5")
        (tmp / "arch.json").write_text(json.dumps(keras.saving.serialize_keras_object(model)))
        names, arrays = [], {}
        for layer in model.layers:
            for j, w in enumerate(layer.get_weights()):
                arrays[f"w{len(names)}_{j}"] = w
            names.append([layer.name, len(layer.get_weights())])
        np.savez(tmp / "layer_weights.npz", **arrays)
        (tmp / "layer_names.json").write_text(json.dumps(names))
        ref_x = calibration[:8]
        ref_y = np.asarray(model.predict(ref_x, verbose=0), np.float32)
        np.savez(tmp / "data.npz", x_train=x_train, y_train=y_train, calibration=calibration, ref_x=ref_x, ref_y=ref_y)
        fmt = "tflite-int8" if qat or io_dtype != "float32" else "tflite-fp32"
        args = ["--task", task, "--epochs", str(int(epochs)), "--batch-size", str(int(batch_size)),
                "--learning-rate", str(float(learning_rate)), "--io-dtype", io_dtype]
        if qat:
            args.append("--qat")
        if prune is not None:
            args += ["--prune", str(float(prune))]
        summary = _run_subprocess(tmp, args, timeout)
        data = (tmp / "model.tflite").read_bytes()
        quant = {"qat": bool(qat), "fine_tune_epochs": int(epochs), "sparsity_target": prune,
                 "sparsity_achieved": summary.get("sparsity_achieved"),
                 "weights_transfer": summary.get("weights_transfer"),
                 "calibration_examples": int(min(len(calibration), 1000))}
        meta = dict(metadata or {})
        litert.export_tflite(model, out_path, fmt, tflite_bytes=data, quantization=quant,
                             **{k: v for k, v in meta.items() if k in (
                                 "preprocessing", "conversion", "task", "class_names", "threshold", "source_run",
                                 "source_sha256", "name", "target")})
        summary["path"] = str(out_path)
        summary["format"] = fmt
        return summary
    finally:
        if not keep_workdir:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def quantization_aware_int8(model, out_path, *, x_train, y_train, calibration, task: str, epochs: int = 1,
                            batch_size: int = 32, learning_rate: float = 1e-4, prune: float | None = None,
                            io_dtype: str = "int8", metadata: dict | None = None, timeout: float | None = None,
                            keep_workdir: bool = False) -> dict[str, Any]:
    """Fine-tune ``model`` with QAT (optionally pruned too) and write a full-int8 ``.tflite``.

    Args:
        model: a Keras 3 2D classifier (standard layers; mixed precision is rebuilt in float32).
        out_path: the ``.tflite`` to write (plus ``.json`` sidecar).
        x_train, y_train: preprocessed training inputs and targets shaped like the model output
            (binary: (N, 1) 0/1; multiclass: one-hot; multilabel: multi-hot; ordinal: cumulative).
        calibration: preprocessed inputs for calibrating layers QAT leaves in float (≥ 1 example).
        task: binary | multiclass | multilabel | ordinal.
        epochs: fine-tuning epochs (the run config's).
        batch_size, learning_rate: fine-tuning settings.
        prune: target sparsity in (0, 1) to prune while fine-tuning, or None.
        io_dtype: "int8" | "uint8" | "float32" model I/O.
        metadata: export metadata keys (preprocessing, task, class_names, threshold, source_run, name).
        timeout: seconds before the subprocess is killed.
        keep_workdir: keep the temp folder (logs) for debugging.

    Returns:
        Summary: {"weights_transfer", "transfer_max_abs_diff", "annotated_layers", "float_layers",
        "history", "sparsity_achieved", "path", "format"}.

    Raises:
        ValueError: unsupported model/task/sparsity.
        RuntimeError: the subprocess failed (its log tail is in the message).
    """
    return _fine_tune(model, out_path, qat=True, prune=prune, x_train=x_train, y_train=y_train,
                      calibration=calibration, task=task, epochs=epochs, batch_size=batch_size,
                      learning_rate=learning_rate, io_dtype=io_dtype, metadata=metadata, timeout=timeout,
                      keep_workdir=keep_workdir)


def prune(model, out_path, sparsity: float, *, x_train, y_train, calibration, task: str, epochs: int = 1,
          batch_size: int = 32, learning_rate: float = 1e-4, io_dtype: str = "int8", metadata: dict | None = None,
          timeout: float | None = None) -> dict[str, Any]:
    """Prune ``model`` to ``sparsity`` while fine-tuning, strip, and convert (int8 PTQ, or fp32 when
    ``io_dtype="float32"``). Same arguments as :func:`quantization_aware_int8`; returns its summary."""
    return _fine_tune(model, out_path, qat=False, prune=sparsity, x_train=x_train, y_train=y_train,
                      calibration=calibration, task=task, epochs=epochs, batch_size=batch_size,
                      learning_rate=learning_rate, io_dtype=io_dtype, metadata=metadata, timeout=timeout,
                      keep_workdir=False)


# ----------------------------------------------------------------------------------------------
# Keras 3 config → tf-keras config (pure Python, testable without tf-keras)
# ----------------------------------------------------------------------------------------------
_BASE_KWARGS = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size", "weights",
                "activity_regularizer", "autocast", "dynamic"}


def _tensor_history(obj, out: list):
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            h = obj["config"]["keras_history"]
            out.append([h[0], int(h[1]), int(h[2]), {}])
        else:
            for v in obj.values():
                _tensor_history(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _tensor_history(v, out)


def _clean_value(key: str, value):
    if key == "dtype":
        return "float32"
    if key.endswith("_initializer") and isinstance(value, dict):
        return {"class_name": value.get("class_name", "GlorotUniform"), "config": {}}
    if key.endswith("_regularizer") or key.endswith("_constraint"):
        return None
    if isinstance(value, dict) and "class_name" in value and "module" in value:
        return {"class_name": value["class_name"], "config": value.get("config", {})}
    return value


def translate_config(serialized: dict, allowed_kwargs=None) -> dict:
    """Translate a Keras 3 serialized functional model to a tf-keras ``Model.from_config`` config.

    Args:
        serialized: ``keras.saving.serialize_keras_object(model)`` (or the ``get_config()`` dict).
        allowed_kwargs: ``callable(class_name) -> set | None`` giving the constructor arguments the
            tf-keras layer accepts (unknown keys are dropped); None keeps every key.

    Returns:
        The tf-keras functional config.

    Raises:
        ValueError: the model is not functional or uses nested models.
    """
    cfg = serialized.get("config", serialized)
    if "layers" not in cfg:
        raise ValueError("QAT needs a functional model (config without 'layers')")
    layers = []
    for entry in cfg["layers"]:
        cls = entry["class_name"]
        if cls in ("Functional", "Sequential", "Model"):
            raise ValueError(f"QAT does not support nested models (layer {entry.get('name')!r} is a {cls})")
        lc = dict(entry["config"])
        if cls == "InputLayer":
            shape = lc.pop("batch_shape", None) or lc.pop("batch_input_shape", None)
            lc = {"batch_input_shape": shape, "dtype": "float32", "sparse": bool(lc.get("sparse", False)),
                  "ragged": bool(lc.get("ragged", False)), "name": lc["name"]}
        else:
            lc = {k: _clean_value(k, v) for k, v in lc.items()}
            allowed = allowed_kwargs(cls) if allowed_kwargs else None
            if allowed is not None:
                lc = {k: v for k, v in lc.items() if k in allowed or k in _BASE_KWARGS}
        nodes = []
        for node in entry.get("inbound_nodes", []):
            if isinstance(node, dict):
                hist: list = []
                _tensor_history(node.get("args", []), hist)
                nodes.append(hist)
            else:  # already tf-keras format
                nodes.append(node)
        layers.append({"class_name": cls, "config": lc, "name": entry.get("name", lc.get("name")),
                       "inbound_nodes": nodes})

    def _io(v):
        if v and isinstance(v[0], str):
            return [v]
        return v

    return {"name": cfg.get("name", "model"), "layers": layers, "input_layers": _io(cfg["input_layers"]),
            "output_layers": _io(cfg["output_layers"])}


# ----------------------------------------------------------------------------------------------
# subprocess side (tf-keras process)
# ----------------------------------------------------------------------------------------------
def _allowed_kwargs_tf_keras(tf_keras):
    import inspect

    cache: dict[str, set | None] = {}

    def allowed(cls_name: str):
        if cls_name not in cache:
            cls = getattr(tf_keras.layers, cls_name, None)
            if cls is None:
                raise ValueError(f"layer class {cls_name!r} does not exist in tf-keras; QAT cannot rebuild it")
            params = inspect.signature(cls.__init__).parameters
            cache[cls_name] = {p for p in params if p not in ("self", "args", "kwargs")}
        return cache[cls_name]

    return allowed


def _subprocess_main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medtf.export.qat")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    ap.add_argument("--io-dtype", default="int8")
    ap.add_argument("--qat", action="store_true")
    ap.add_argument("--prune", type=float, default=None)
    args = ap.parse_args(argv)

    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        print("TF_USE_LEGACY_KERAS=1 must be set before TensorFlow is imported", file=sys.stderr)
        return 2
    import tensorflow as tf
    import tf_keras
    import tensorflow_model_optimization as tfmot

    work = pathlib.Path(args.workdir)
    data = np.load(work / "data.npz")
    serialized = json.loads((work / "arch.json").read_text())
    cfg = translate_config(serialized, _allowed_kwargs_tf_keras(tf_keras))
    model = tf_keras.Model.from_config(cfg)
    summary: dict[str, Any] = {"tf_keras": tf_keras.__version__, "tfmot": tfmot.__version__}

    def max_diff():
        return float(np.max(np.abs(model.predict(data["ref_x"], verbose=0) - data["ref_y"])))

    transfer = "weights.h5"
    try:
        model.load_weights(str(work / "model.weights.h5"))
        diff = max_diff()
    except Exception as exc:  # noqa: BLE001
        print(f"load_weights(.weights.h5) failed: {type(exc).__name__}: {exc}")
        diff = float("inf")
    if not diff <= 1e-4:
        transfer = "by-layer-name"
        arrays = np.load(work / "layer_weights.npz")
        names = json.loads((work / "layer_names.json").read_text())
        for i, (name, count) in enumerate(names):
            if count:
                model.get_layer(name).set_weights([arrays[f"w{i}_{j}"] for j in range(count)])
        diff = max_diff()
    summary["weights_transfer"] = transfer
    summary["transfer_max_abs_diff"] = diff
    print(f"rebuilt under tf-keras; weights via {transfer}; max |Δ| vs Keras 3 = {diff:.2e}", flush=True)
    if not diff <= 1e-4:
        print("the tf-keras rebuild does not reproduce the Keras 3 model", file=sys.stderr)
        return 3

    sigmoid = args.task in ("binary", "multilabel", "ordinal")
    loss = tf_keras.losses.BinaryCrossentropy() if sigmoid else tf_keras.losses.CategoricalCrossentropy()
    x, y = data["x_train"], data["y_train"]
    steps = int(np.ceil(len(x) / args.batch_size)) * max(1, args.epochs)
    callbacks = []
    prunable = []
    if args.prune is not None:
        sched = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=args.prune,
                                                     begin_step=0, end_step=max(1, int(steps * 0.8)), frequency=10)
        from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

        def annotate_prune(layer):
            if prune_registry.PruneRegistry.supports(layer) and layer.get_weights():
                if hasattr(layer, "kernel") or hasattr(layer, "depthwise_kernel"):
                    prunable.append(layer.name)
                return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=sched)
            return layer

        model = tf_keras.models.clone_model(model, clone_function=annotate_prune)  # wraps the built layers
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
        model.compile(optimizer=tf_keras.optimizers.Adam(args.learning_rate), loss=loss)
        hist = model.fit(x, y, epochs=max(1, args.epochs), batch_size=args.batch_size, callbacks=callbacks, verbose=2)
        summary["prune_history"] = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        model = tfmot.sparsity.keras.strip_pruning(model)
        kernels = [w for name in prunable for w in model.get_layer(name).get_weights()[:1]]
        zeros = sum(int(np.sum(k == 0)) for k in kernels)
        total = sum(int(k.size) for k in kernels)
        summary["sparsity_achieved"] = zeros / max(total, 1)
        summary["pruned_layers"] = prunable
        print(f"pruned {len(prunable)} layers to sparsity {summary['sparsity_achieved']:.3f}", flush=True)

    if args.qat:
        from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
            default_8bit_quantize_registry,
        )

        registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
        annotated, floats = [], []

        def annotate(layer):
            if isinstance(layer, tf_keras.layers.InputLayer):
                return layer
            # BatchNormalization is folded into the preceding convolution by tfmot's layout transforms
            # only when it is annotated too (the registry alone does not list it)
            if registry.supports(layer) or isinstance(layer, tf_keras.layers.BatchNormalization):
                annotated.append(layer.name)
                return tfmot.quantization.keras.quantize_annotate_layer(layer)
            floats.append(layer.name)
            return layer

        ann_model = tf_keras.models.clone_model(model, clone_function=annotate)  # keeps the built layers
        with tfmot.quantization.keras.quantize_scope():
            if args.prune is not None:
                scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
                model = tfmot.quantization.keras.quantize_apply(ann_model, scheme)
            else:
                model = tfmot.quantization.keras.quantize_apply(ann_model)
        summary["annotated_layers"] = len(annotated)
        summary["float_layers"] = floats
        print(f"QAT: {len(annotated)} layers quantization-aware, {len(floats)} left float "
              f"({', '.join(floats[:8])}{'…' if len(floats) > 8 else ''})", flush=True)
        model.compile(optimizer=tf_keras.optimizers.Adam(args.learning_rate), loss=loss)
        hist = model.fit(x, y, epochs=max(1, args.epochs), batch_size=args.batch_size, verbose=2)
        summary["history"] = {k: [float(v) for v in vals] for k, vals in hist.history.items()}

    calib = data["calibration"]

    def rep():
        for row in calib[:1000]:
            yield [row[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if args.qat or args.io_dtype != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = rep
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if args.io_dtype != "float32":
            dt = tf.int8 if args.io_dtype == "int8" else tf.uint8
            converter.inference_input_type = dt
            converter.inference_output_type = dt
    (work / "model.tflite").write_bytes(converter.convert())
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    print("converted", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_subprocess_main())
