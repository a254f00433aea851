"""SavedModel export in TF-Serving layout, with the model's preprocessing inside the graph.

``<out>/<name>/<version>/`` holds a SavedModel with two signatures:

* ``serving_default``: ``image`` = raw pixels / modality values (float32, batch × H × W × C of any
  H, W — or D × H × W × C for 3D — with C = the raw channel count) → window / normalisation /
  channels / resize (the model's :class:`~medtf.data.spec.Preprocessing`) → model →
  ``predictions`` (float32);
* ``predict_preprocessed``: ``x`` = already preprocessed input of the model's shape → ``predictions``;

plus ``assets.extra/tf_serving_warmup_requests`` (a TFRecord of ``PredictionLog`` protos from
``tensorflow_serving.apis``) and ``<out>/models.config`` (an example model server config), and the
metadata sidecar ``<out>/<name>/<version>/medtf.json``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from medtf.data.spec import Preprocessing


# ----------------------------------------------------------------------------------------------
# graph preprocessing (batch-aware twin of medtf.export.edge.preprocess / apply_intensity_numpy)
# ----------------------------------------------------------------------------------------------
def _window_tf(x, width: float, level: float):
    import tensorflow as tf

    c, w = level - 0.5, width - 1.0
    if w <= 0:
        return tf.cast(x > c, tf.float32)
    return tf.clip_by_value((x - c) / w + 0.5, 0.0, 1.0)


def preprocess_graph(x, spec: Preprocessing, spatial_dims: int):
    """Apply ``spec`` to a batch ``x`` (N, *spatial, C) float32 with graph ops (intensity → channels → size).

    Matches :func:`medtf.export.edge.preprocess` (NumPy) to float32 rounding; a test checks it.
    """
    import tensorflow as tf

    x = tf.cast(x, tf.float32)
    channels = x.shape[-1]
    if spec.intensity == "window":
        base = tf.reduce_mean(x, axis=-1) if (channels is None or channels > 1) else x[..., 0]
        x = tf.stack([_window_tf(base, w, l) for w, l in spec.windows], axis=-1)
    elif spec.intensity == "zscore":
        axes = list(range(1, spatial_dims + 2))
        mean = spec.mean if spec.mean is not None else tf.reduce_mean(x, axis=axes, keepdims=True)
        std = spec.std if spec.std is not None else tf.math.reduce_std(x, axis=axes, keepdims=True)
        x = (x - mean) / tf.maximum(std, 1e-6)
    elif spec.intensity == "range":
        lo, hi = spec.value_range
        x = (tf.clip_by_value(x, lo, hi) - lo) / max(hi - lo, 1e-6)
    elif spec.intensity == "scale":
        x = x / float(spec.scale)
    if spec.channels is not None:
        have = x.shape[-1]
        if have is None:
            raise ValueError("the raw channel count must be known to map channels")
        if have != spec.channels:
            if have == 1:
                x = tf.repeat(x, spec.channels, axis=-1)
            elif spec.channels == 1:
                x = tf.reduce_mean(x, axis=-1, keepdims=True)
            else:
                raise ValueError(f"cannot map {have} channels to {spec.channels}")
    if spec.size is not None:
        size = list(spec.size)
        if spec.resize == "resize":
            x = _resize_graph(x, size)
        else:
            x = _crop_or_pad_graph(x, size)
    return x


def _resize_graph(x, size):
    import tensorflow as tf

    if len(size) == 2:
        return tf.image.resize(x, size, method="bilinear")
    # 3D: (N, D, H, W, C) — resize H, W per slice, then D (separable = trilinear)
    shape = tf.shape(x)
    n, d, c = shape[0], shape[1], shape[4]
    flat = tf.reshape(x, tf.stack([n * d, shape[2], shape[3], c]))
    flat = tf.image.resize(flat, size[1:], method="bilinear")
    x = tf.reshape(flat, tf.stack([n, d, size[1] * size[2], c]))
    x = tf.image.resize(x, [size[0], size[1] * size[2]], method="bilinear")
    return tf.reshape(x, tf.stack([n, size[0], size[1], size[2], c]))


def _crop_or_pad_graph(x, size):
    import tensorflow as tf

    if len(size) == 2:
        return tf.image.resize_with_crop_or_pad(x, size[0], size[1])
    shape = tf.shape(x)
    for axis, out in enumerate(size, start=1):
        n = shape[axis]
        crop_start = tf.maximum(n - out, 0) // 2
        x = tf.gather(x, tf.range(crop_start, crop_start + tf.minimum(n, out)), axis=axis)
        before = tf.maximum(out - n, 0) // 2
        after = tf.maximum(out - n, 0) - before
        pads = [tf.zeros([2], tf.int32)] * 5
        pads[axis] = tf.stack([before, after])
        x = tf.pad(x, tf.stack(pads))
    return tf.ensure_shape(x, [None, *size, x.shape[-1]])


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
def _first_output(out):
    if isinstance(out, dict):
        return next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        return out[0]
    return out


def export_saved_model(
    model,
    out_dir,
    *,
    preprocessing: Preprocessing | dict | None,
    name: str = "model",
    version: int = 1,
    raw_channels: int | None = None,
    raw_shape: tuple[int, ...] | None = None,
    warmup: bool = True,
    metadata: dict | None = None,
) -> pathlib.Path:
    """Write the model in TF-Serving layout ``out_dir/name/version/`` (see module docstring).

    Args:
        model: the Keras model (rebuilt in float32 first if it uses mixed precision).
        out_dir: the model base folder (``models.config`` goes here).
        preprocessing: the model's ``Preprocessing`` (or its dict); None = identity.
        name: the served model name.
        version: the version folder (positive integer).
        raw_channels: channels of the raw input (1 for grayscale/CT, 3 for RGB); default: the model's
            channels when preprocessing does not map channels, else 1.
        raw_shape: fixed raw spatial shape; default dynamic (any size, resized in graph) when the
            preprocessing resizes, else the model's spatial shape.
        warmup: write ``assets.extra/tf_serving_warmup_requests``.
        metadata: extra metadata for ``medtf.json``.

    Returns:
        The version folder.

    Raises:
        ValueError: bad name/version, or a raw shape the preprocessing cannot map to the model input.
    """
    import keras
    import tensorflow as tf

    from medtf.export.litert import float32_model

    if not str(name) or "/" in str(name):
        raise ValueError(f"name must be a plain folder name. Received: {name!r}")
    if int(version) < 1:
        raise ValueError(f"version must be a positive integer. Received: {version!r}")
    spec = preprocessing if isinstance(preprocessing, Preprocessing) else Preprocessing.from_dict(preprocessing or {})
    model = float32_model(model)
    in_shape = tuple(model.inputs[0].shape[1:])
    spatial_dims = len(in_shape) - 1
    if raw_channels is None:
        raw_channels = in_shape[-1] if (spec.channels is None and spec.intensity != "window") else 1
    if raw_shape is None:
        raw_spatial = [None] * spatial_dims if spec.size is not None else list(in_shape[:-1])
    else:
        raw_spatial = list(raw_shape)
    raw_sig = tf.TensorSpec([None, *raw_spatial, raw_channels], tf.float32, name="image")
    pre_sig = tf.TensorSpec([None, *in_shape], tf.float32, name="x")
    # check the preprocessing lands on the model input shape
    probe_spatial = [s or 16 for s in raw_spatial]
    probe = preprocess_graph(tf.zeros([1, *probe_spatial, raw_channels]), spec, spatial_dims)
    if tuple(probe.shape[1:]) != tuple(in_shape):
        raise ValueError(
            f"preprocessing maps a raw input (…, {raw_channels} channels) to {tuple(probe.shape[1:])}, "
            f"but the model expects {tuple(in_shape)}; set Preprocessing.size/channels or raw_channels"
        )

    version_dir = pathlib.Path(out_dir) / str(name) / str(int(version))
    version_dir.parent.mkdir(parents=True, exist_ok=True)

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve_raw(image):
        x = preprocess_graph(image, spec, spatial_dims)
        return {"predictions": tf.cast(_first_output(model(x, training=False)), tf.float32)}

    def serve_pre(x):
        return {"predictions": tf.cast(_first_output(model(x, training=False)), tf.float32)}

    archive.add_endpoint("serving_default", serve_raw, input_signature=[raw_sig])
    archive.add_endpoint("predict_preprocessed", serve_pre, input_signature=[pre_sig])
    archive.write_out(str(version_dir), verbose=False)

    example_shape = [1, *[s or (spec.size[i] if spec.size else 64) for i, s in enumerate(raw_spatial)], raw_channels]
    if warmup:
        write_warmup_requests(version_dir, name, {"image": np.zeros(example_shape, np.float32)})
    write_models_config(pathlib.Path(out_dir), [name])
    doc = {
        "schema": "medtf.export/v1",
        "format": "savedmodel",
        "name": name,
        "version": int(version),
        "signatures": {
            "serving_default": {"inputs": {"image": {"shape": raw_sig.shape.as_list(), "dtype": "float32",
                                                      "meaning": "raw pixels / modality values"}},
                                "outputs": {"predictions": {"dtype": "float32"}}},
            "predict_preprocessed": {"inputs": {"x": {"shape": pre_sig.shape.as_list(), "dtype": "float32"}},
                                     "outputs": {"predictions": {"dtype": "float32"}}},
        },
        "preprocessing": spec.to_dict(),
        "raw_channels": int(raw_channels),
    }
    doc.update(metadata or {})
    (version_dir / "medtf.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return version_dir


def write_warmup_requests(version_dir, model_name: str, inputs: dict[str, np.ndarray],
                          signature: str = "serving_default", count: int = 1) -> pathlib.Path:
    """Write ``assets.extra/tf_serving_warmup_requests`` (TFRecord of ``PredictionLog``).

    Raises:
        ImportError: tensorflow-serving-api missing (``pip install medtf[serving]``).
    """
    import tensorflow as tf

    from medtf._optional import require

    require("tensorflow_serving.apis")
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = pathlib.Path(version_dir) / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(count):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(version_dir) -> list[Any]:
    """The ``PredictionLog`` protos of a version folder's warmup file."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = pathlib.Path(version_dir) / "assets.extra" / "tf_serving_warmup_requests"
    logs = []
    for raw in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(raw.numpy())
        logs.append(log)
    return logs


def write_models_config(base_dir, names, base_path: str = "/models") -> pathlib.Path:
    """An example TF Serving ``models.config`` (text proto) for the models under ``base_dir``."""
    base_dir = pathlib.Path(base_dir)
    blocks = "".join(
        f"  config {{\n    name: \"{n}\"\n    base_path: \"{base_path}/{n}\"\n    model_platform: \"tensorflow\"\n  }}\n"
        for n in names
    )
    text = (
        "# Example TensorFlow Serving config. Run, e.g.:\n"
        f"#   docker run -p 8501:8501 -v $PWD:{base_path} tensorflow/serving "
        f"--model_config_file={base_path}/models.config --enable_model_warmup=true\n"
        f"model_config_list {{\n{blocks}}}\n"
    )
    path = base_dir / "models.config"
    path.write_text(text)
    return path
