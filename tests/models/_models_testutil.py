"""Helpers shared by the model tests (small configurations, one eager training step, TFLite round trips)."""

from __future__ import annotations

import numpy as np


def train_step(model, x, y, loss_fn):
    """One eager optimisation step (no tracing: fast for 100s of layers); returns (loss, changed fraction)."""
    import keras
    import tensorflow as tf

    opt = keras.optimizers.Adam(1e-3)
    before = [v.numpy().copy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        outs = out if isinstance(out, (list, tuple)) else [out]
        loss = tf.add_n([tf.reduce_mean(loss_fn(y, o)) for o in outs])
    grads = tape.gradient(loss, model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing, f"variables without gradient: {missing[:5]}"
    opt.apply(grads, model.trainable_variables)
    changed = np.mean([not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)])
    return float(loss), float(changed)


def tflite_convert(model, *, int8: bool = False, representative=None, int8_only: bool = True):
    """``TFLiteConverter.from_keras_model``; int8: representative-dataset full-integer quantisation."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        if int8_only:
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    return conv.convert()


def tflite_run(blob: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a converted model on ai-edge-litert through its signature.

    Args:
        blob: the flatbuffer.
        feeds: Keras input name → float array (int8 inputs are quantised with the tensor's scale/zero point).

    Returns:
        Outputs in signature order (``output_0``, ``output_1``...), dequantised to float when int8.
    """
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=blob).get_signature_runner()
    details_in = runner.get_input_details()
    assert set(details_in) == set(feeds), (sorted(details_in), sorted(feeds))
    args = {}
    for key, x in feeds.items():
        d = details_in[key]
        if d["dtype"] == np.int8:
            scale, zero = d["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127)
        args[key] = np.asarray(x).astype(d["dtype"])
    out = runner(**args)
    details_out = runner.get_output_details()
    results = []
    for key in sorted(out, key=lambda k: int(k.rsplit("_", 1)[-1])):
        y = out[key]
        if details_out[key]["dtype"] == np.int8:
            scale, zero = details_out[key]["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(y)
    return results


def tflite_ops(blob: bytes) -> list[tuple[str, list]]:
    """(op name, input dtypes) of every op in a converted model."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # without the default (XNNPACK) delegate, so the listing shows the model's own ops, not DELEGATE nodes
    interp = Interpreter(model_content=blob,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = []
    for op in interp._get_ops_details():  # noqa: SLF001 - the only op listing the runtime offers
        dtypes = [tensors[i]["dtype"] for i in op["inputs"] if i >= 0 and i in tensors]
        ops.append((op["op_name"], dtypes))
    return ops
