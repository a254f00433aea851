"""SavedModel export in TF-Serving layout, with the model's preprocessing inside the graph.

``<out>/<name>/<version>/`` holds a SavedModel with two signatures:

* ``serving_default``: ``image`` = raw pixels / modality values (float32, batch × H × W × C of any
  H, W — or D × H × W × C for 3D — with C = the raw channel count), plus ``spacing`` (float32,
  batch × spatial dims, mm) when the chain resamples → the model's whole preprocessing chain
  (:class:`~medtf.preprocess.Chain`: conversion stage, then training stage, with
  ``medtf.preprocess.tf_ops``) → model → ``predictions`` (float32);
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

from medtf.preprocess import Chain, Preprocessing


def as_chain(preprocessing) -> Chain:
    """A ``Chain``, ``Preprocessing``, a stage dict or a list of stage dicts (or None) → ``Chain``."""
    if isinstance(preprocessing, Chain):
        return preprocessing
    if isinstance(preprocessing, Preprocessing):
        return Chain.of(preprocessing)
    if isinstance(preprocessing, (list, tuple)):
        return Chain.from_list(preprocessing)
    return Chain.of(Preprocessing.from_dict(preprocessing or {}))


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
    preprocessing: Chain | Preprocessing | dict | list | None,
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
        preprocessing: the model's chain (``Chain``; a single ``Preprocessing`` or dict is one stage);
            None = identity.
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
    from medtf.preprocess import tf_ops

    chain = as_chain(preprocessing)
    model = float32_model(model)
    in_shape = tuple(model.inputs[0].shape[1:])
    spatial_dims = len(in_shape) - 1
    maps_channels = any(s.channels is not None or s.intensity == "window" for s in chain.steps)
    if raw_channels is None:
        raw_channels = in_shape[-1] if not maps_channels else 1
    resizes = any(s.size is not None for s in chain.steps)
    resamples = any(s.spacing is not None for s in chain.steps)
    if raw_shape is None:
        raw_spatial = [None] * spatial_dims if resizes else list(in_shape[:-1])
    else:
        raw_spatial = list(raw_shape)
    raw_sig = tf.TensorSpec([None, *raw_spatial, raw_channels], tf.float32, name="image")
    spacing_sig = tf.TensorSpec([None, spatial_dims], tf.float32, name="spacing")
    pre_sig = tf.TensorSpec([None, *in_shape], tf.float32, name="x")
    # check the preprocessing lands on the model input shape
    probe_spatial = [s or 16 for s in raw_spatial]
    probe_in = [tf.zeros([1, *probe_spatial, raw_channels])]
    if resamples:
        probe_in.append(tf.ones([1, spatial_dims]))
    probe = tf_ops.apply_chain(probe_in[0], chain, probe_in[1] if resamples else None, batched=True)
    if tuple(probe.shape[1:]) != tuple(in_shape):
        raise ValueError(
            f"preprocessing maps a raw input (…, {raw_channels} channels) to {tuple(probe.shape[1:])}, "
            f"but the model expects {tuple(in_shape)}; set Preprocessing.size/channels or raw_channels"
        )

    version_dir = pathlib.Path(out_dir) / str(name) / str(int(version))
    version_dir.parent.mkdir(parents=True, exist_ok=True)

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve_raw(image, spacing=None):
        x = tf_ops.apply_chain(image, chain, spacing, batched=True)
        return {"predictions": tf.cast(_first_output(model(x, training=False)), tf.float32)}

    def serve_pre(x):
        return {"predictions": tf.cast(_first_output(model(x, training=False)), tf.float32)}

    if resamples:
        archive.add_endpoint("serving_default", serve_raw, input_signature=[raw_sig, spacing_sig])
    else:
        archive.add_endpoint("serving_default", lambda image: serve_raw(image), input_signature=[raw_sig])
    archive.add_endpoint("predict_preprocessed", serve_pre, input_signature=[pre_sig])
    archive.write_out(str(version_dir), verbose=False)

    first_size = next((st.size for st in chain.steps if st.size is not None), None)
    example_shape = [1, *[s or (first_size[i] if first_size and len(first_size) == spatial_dims else 64)
                          for i, s in enumerate(raw_spatial)], raw_channels]
    if warmup:
        warm = {"image": np.zeros(example_shape, np.float32)}
        if resamples:
            warm["spacing"] = np.ones([1, spatial_dims], np.float32)
        write_warmup_requests(version_dir, name, warm)
    write_models_config(pathlib.Path(out_dir), [name])
    doc = {
        "schema": "medtf.export/v1",
        "format": "savedmodel",
        "name": name,
        "version": int(version),
        "signatures": {
            "serving_default": {"inputs": {"image": {"shape": raw_sig.shape.as_list(), "dtype": "float32",
                                                      "meaning": "raw pixels / modality values"},
                                            **({"spacing": {"shape": spacing_sig.shape.as_list(), "dtype": "float32",
                                                            "meaning": "voxel spacing in mm, array axis order"}}
                                               if resamples else {})},
                                "outputs": {"predictions": {"dtype": "float32"}}},
            "predict_preprocessed": {"inputs": {"x": {"shape": pre_sig.shape.as_list(), "dtype": "float32"}},
                                     "outputs": {"predictions": {"dtype": "float32"}}},
        },
        "preprocessing": chain.steps[-1].to_dict() if chain.steps else Preprocessing().to_dict(),
        "preprocessing_chain": chain.to_list(),
        "raw_channels": int(raw_channels),
    }
    doc.update(metadata or {})
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    (version_dir / "medtf.json").write_text(text)
    # inside the SavedModel's assets too, so the chain travels with the model wherever the folder is copied
    (version_dir / "assets.extra").mkdir(exist_ok=True)
    (version_dir / "assets.extra" / "medtf.json").write_text(text)
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
