"""QAT / pruning through tf-keras + tfmot in a subprocess."""

from __future__ import annotations

import numpy as np
import pytest

from medtf.export import qat

from ._helpers import tiny_classifier


def test_translate_config_to_tf_keras_format():
    model = tiny_classifier(input_shape=(16, 16, 1))
    import keras

    cfg = qat.translate_config(keras.saving.serialize_keras_object(model))
    first = cfg["layers"][0]
    assert first["class_name"] == "InputLayer" and list(first["config"]["batch_input_shape"]) == [None, 16, 16, 1]
    conv = cfg["layers"][1]
    assert conv["inbound_nodes"] == [[[first["name"], 0, 0, {}]]]
    assert conv["config"]["dtype"] == "float32"
    assert cfg["input_layers"] == [[first["name"], 0, 0]]
    assert all("module" not in layer for layer in cfg["layers"])


def test_translate_rejects_nested_models():
    import keras

    inner = tiny_classifier(input_shape=(16, 16, 1))
    inp = keras.Input((16, 16, 1))
    outer = keras.Model(inp, inner(inp))
    with pytest.raises(ValueError, match="nested"):
        qat.translate_config(keras.saving.serialize_keras_object(outer))


def test_qat_rejects_3d_models(tmp_path):
    model = tiny_classifier(input_shape=(8, 16, 16, 1))
    with pytest.raises(ValueError, match="2D models only"):
        qat.quantization_aware_int8(model, tmp_path / "m.tflite", x_train=np.zeros((2, 8, 16, 16, 1)),
                                    y_train=np.zeros(2), calibration=np.zeros((2, 8, 16, 16, 1)), task="binary")


@pytest.mark.slow
def test_qat_and_pruning_end_to_end(tmp_path):
    from medtf.export import edge, metadata

    rng = np.random.default_rng(0)
    x = rng.random((256, 28, 28, 1), dtype=np.float32)
    y = (x[:, :14].mean((1, 2, 3)) > x[:, 14:].mean((1, 2, 3))).astype(np.float32)[:, None]
    model = tiny_classifier(input_shape=(28, 28, 1))
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=3, verbose=0)
    summary = qat.quantization_aware_int8(model, tmp_path / "q.tflite", x_train=x, y_train=y, calibration=x[:200],
                                          task="binary", epochs=1, metadata={"task": "binary",
                                                                             "class_names": ["a", "b"]})
    assert summary["weights_transfer"] in ("weights.h5", "by-layer-name")
    assert summary["transfer_max_abs_diff"] <= 1e-4 and summary["annotated_layers"] > 0
    doc = metadata.load_metadata(tmp_path / "q.tflite")
    assert doc["quantization"]["qat"] is True and doc["input"]["dtype"] == "int8"
    got = edge.EdgeModel(tmp_path / "q.tflite").run(x[:32])
    ref = model.predict(x[:32], verbose=0)
    assert np.mean((got >= 0.5) == (ref >= 0.5)) >= 0.8  # one QAT epoch keeps the decisions
    pruned = qat.prune(model, tmp_path / "p.tflite", 0.5, x_train=x, y_train=y, calibration=x[:200],
                       task="binary", epochs=2, metadata={"task": "binary"})
    assert 0.45 <= pruned["sparsity_achieved"] <= 0.55
