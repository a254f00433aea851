"""TFLite conversion: every format runs and matches Keras; metadata inside and beside the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medtf.export import edge, litert, metadata

from ._helpers import tiny_classifier

PRE = {"intensity": "scale", "scale": 255.0, "size": [32, 32], "channels": 1}
# max |Δprob| allowed vs Keras per format (sigmoid outputs in [0, 1])
TOL = {"tflite-fp32": 1e-5, "tflite-fp16": 5e-3, "tflite-dynamic": 2e-2, "tflite-int8": 4e-2}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_classifier()
    rng = np.random.default_rng(0)
    calib = rng.random((200, 32, 32, 1), dtype=np.float32)
    out = tmp_path_factory.mktemp("tfl")
    docs = {fmt: litert.export_tflite(model, out / f"m_{fmt}.tflite", fmt, calibration=calib, task="binary",
                                      class_names=["normal", "pneumonia"], preprocessing=PRE, threshold=0.4,
                                      source_run="runs/x")
            for fmt in litert.FORMATS}
    return model, out, docs, rng.random((16, 32, 32, 1), dtype=np.float32)


@pytest.mark.parametrize("fmt", litert.FORMATS)
def test_format_runs_and_matches_keras(exported, fmt):
    model, out, docs, x = exported
    ref = model.predict(x, verbose=0)
    got = edge.EdgeModel(out / f"m_{fmt}.tflite").run(x)
    assert np.max(np.abs(got - ref)) <= TOL[fmt], fmt


def test_int8_io_and_sizes(exported):
    _, out, docs, _ = exported
    assert docs["tflite-int8"]["input"]["dtype"] == "int8"
    assert docs["tflite-int8"]["input"]["quantization"] is not None
    assert docs["tflite-int8"]["quantization"]["calibration_examples"] == 200
    assert docs["tflite-fp32"]["input"]["dtype"] == "float32"
    assert docs["tflite-int8"]["size_bytes"] < docs["tflite-fp32"]["size_bytes"]


def test_metadata_embedded_and_sidecar(exported):
    _, out, docs, _ = exported
    path = out / "m_tflite-int8.tflite"
    side = json.loads(metadata.sidecar_path(path).read_text())
    assert side["sha256"] == metadata.sha256_file(path)
    assert side["size_bytes"] == path.stat().st_size
    inner = metadata.read_embedded_metadata(path)
    for key in ("class_names", "preprocessing", "input", "output", "task", "threshold", "format", "source"):
        assert inner[key] == side[key], key
    assert inner["class_names"] == ["normal", "pneumonia"] and inner["source"]["run"] == "runs/x"
    # the converter's own metadata entries survive the rewrite
    import ai_edge_litert.schema_py_generated as schema

    m = schema.Model.GetRootAs(bytearray(path.read_bytes()), 0)
    names = {m.Metadata(i).Name().decode() for i in range(m.MetadataLength())}
    assert {"min_runtime_version", metadata.METADATA_NAME} <= names


def test_embedded_metadata_used_without_sidecar(exported, tmp_path):
    _, out, _, x = exported
    alone = tmp_path / "alone.tflite"
    alone.write_bytes((out / "m_tflite-fp32.tflite").read_bytes())
    model = edge.EdgeModel(alone)
    assert model.class_names == ["normal", "pneumonia"] and model.threshold == 0.4
    assert model.preprocessing.scale == 255.0


def test_sidecar_hash_mismatch_is_refused(exported, tmp_path):
    _, out, _, _ = exported
    other = tmp_path / "m.tflite"
    other.write_bytes((out / "m_tflite-fp16.tflite").read_bytes())
    metadata.sidecar_path(other).write_text(metadata.sidecar_path(out / "m_tflite-fp32.tflite").read_text())
    with pytest.raises(ValueError, match="sha256"):
        metadata.load_metadata(other)


def test_int8_needs_enough_calibration():
    model = tiny_classifier()
    with pytest.raises(ValueError, match="calibration"):
        litert.convert(model, "tflite-int8")
    with pytest.raises(ValueError, match="at least 200"):
        litert.convert(model, "tflite-int8", calibration=np.zeros((10, 32, 32, 1), np.float32))


def test_uint8_io():
    model = tiny_classifier()
    data = litert.convert(model, "tflite-int8", io_dtype="uint8",
                          calibration=np.random.default_rng(0).random((200, 32, 32, 1), dtype=np.float32))
    spec_in, spec_out = litert.tensor_specs(data)
    assert spec_in["dtype"] == "uint8" and spec_out["dtype"] == "uint8"


def test_dynamic_refused_for_tflite_runtime_2_14():
    with pytest.raises(litert.ExportError, match="tflite-runtime 2.14.*tflite-int8"):
        litert.convert(tiny_classifier(), "tflite-dynamic", target="tflite-runtime-2.14")


def test_bad_format_message():
    with pytest.raises(ValueError, match="format must be one of.*'onnx'"):
        litert.convert(tiny_classifier(), "onnx")


def test_mixed_precision_model_is_rebuilt_in_float32():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_classifier()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[1].compute_dtype == "float16"
    f32 = litert.float32_model(model)
    assert all(layer.compute_dtype == "float32" for layer in f32.layers)
    x = np.random.default_rng(1).random((4, 32, 32, 1), dtype=np.float32)
    data = litert.convert(model, "tflite-fp32")
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    it.allocate_tensors()
    outs = []
    for row in x:
        it.set_tensor(it.get_input_details()[0]["index"], row[None])
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"])[0])
    np.testing.assert_allclose(np.stack(outs), f32.predict(x, verbose=0), atol=1e-5)
    # and the float32 rebuild agrees with the float16 model to fp16 precision
    np.testing.assert_allclose(f32.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-2)


def test_edge_benchmark_stats(exported):
    _, out, _, _ = exported
    stats = edge.benchmark(out / "m_tflite-int8.tflite", runs=20, warmup=2, threads=2)
    assert stats["runs"] == 20 and stats["input_dtype"] == "int8"
    assert 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
    assert stats["throughput_per_s"] == pytest.approx(1e3 / stats["p50_ms"])


def test_float_ops_stay_float_and_the_rest_int8():
    """``float_ops``: selective quantization (QuantizationDebugger denylist). The named op runs in float32, every
    convolution stays int8, the file has float I/O, and its probabilities are at least as close to Keras as the
    all-int8 file's (the sigmoid no longer rounds to 1/256)."""
    from ai_edge_litert.interpreter import Interpreter

    model = tiny_classifier()
    rng = np.random.default_rng(0)
    calib = rng.random((200, 32, 32, 1), dtype=np.float32)
    x = rng.random((32, 32, 32, 1), dtype=np.float32)
    ref = model.predict(x, verbose=0).reshape(-1)

    def run(flat):
        it = Interpreter(model_content=flat)
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        out = []
        for row in x:
            v = row[None] if i["dtype"] == np.float32 else edge.quantize(row[None], *i["quantization"], i["dtype"])
            it.set_tensor(i["index"], v)
            it.invoke()
            r = it.get_tensor(o["index"]).astype(np.float32)
            out.append(r if o["dtype"] == np.float32 else (r - o["quantization"][1]) * o["quantization"][0])
        return it, np.concatenate(out).reshape(-1)

    def op_dtypes(it):
        tensors = it.get_tensor_details()
        dtypes = {}
        for d in it._get_ops_details():
            if d["op_name"] != "DELEGATE":
                dtypes.setdefault(d["op_name"], set()).add(np.dtype(tensors[d["outputs"][0]]["dtype"]).name)
        return dtypes

    it, sel = run(litert.convert(model, "tflite-int8", calibration=calib, float_ops=("LOGISTIC",)))
    dtypes = op_dtypes(it)
    assert dtypes["LOGISTIC"] == {"float32"}
    assert dtypes["CONV_2D"] == {"int8"}
    assert it.get_input_details()[0]["dtype"] == np.float32
    # the same node named by its output tensor in the fp32 file (float_nodes) gives the same file's ops
    fp32 = Interpreter(model_content=litert.convert(model, "tflite-fp32"))
    names = tuple(fp32.get_tensor_details()[j]["name"] for d in fp32._get_ops_details()
                  if d["op_name"] == "LOGISTIC" for j in d["outputs"])
    it_nodes, by_node = run(litert.convert(model, "tflite-int8", calibration=calib, float_nodes=names))
    assert op_dtypes(it_nodes) == dtypes
    np.testing.assert_allclose(by_node, sel, atol=1e-6)
    _, full = run(litert.convert(model, "tflite-int8", calibration=calib))
    assert np.abs(sel - ref).max() <= np.abs(full - ref).max() + 1e-6
    assert np.abs(sel - ref).max() < TOL["tflite-int8"]
