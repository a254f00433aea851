"""ONNX export: every registered model (2D and 3D) against Keras on ONNX Runtime, metadata, and `medtf export`.

Reference: the Keras model itself; the ONNX file runs on ``onnxruntime`` (CPUExecutionProvider). Tolerance:
max |Δ| ≤ 1e-4 on the outputs (probabilities; images for restoration), the gate of the parity report. The
models are small (few filters, small inputs) and get the statistics training would give them (BatchNorm
statistics of structured inputs, a rescaled output layer), so their outputs spread over their range and a
wrong graph cannot pass within 1e-4 (a freshly initialised deep network gives every input ~the same output).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from medtf.export import metadata  # noqa: E402
from medtf.export import onnx as onnx_export  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")

TOL = 1e-4
# name: (registry name, builder kwargs, the layer that writes the output (rescaled to spread the outputs))
CASES = {
    "simple_cnn_2d": ("simple_cnn", dict(input_shape=(32, 32, 1), num_classes=2, task="binary", filters=(8, 16)),
                      "predictions"),
    "simple_cnn_3d": ("simple_cnn", dict(input_shape=(8, 16, 16, 1), num_classes=3, filters=(4, 8)), "predictions"),
    # 64 px: at 32 px the last stages are 1x1 and BatchNorm statistics of 16 images amplify float32 rounding
    # (Keras vs ONNX Runtime 5e-5 at 32 px, 5e-6 at 64 px)
    "efficientnet_b0": ("efficientnet", dict(variant="b0", input_shape=(64, 64, 1), num_classes=2, task="binary"),
                        "predictions"),
    "densenet3d_cbam": ("densenet3d_cbam", dict(input_shape=(16, 16, 16, 1), num_classes=3, growth_rate=4,
                                                block_config=(2, 2), init_filters=8, cbam_reduction=2,
                                                cbam=("block", "layer", "transition")), "predictions"),
    # two scales: the 0.5 branch's 3x3 map is resized to the full branch's 5x5 (a non-integer ratio)
    "xception_multiscale": ("xception_multiscale", dict(input_shape=(142, 142, 3), num_classes=5, task="ordinal",
                                                        scales=(1.0, 0.5), shared_weights=True, fusion_filters=8),
                            "predictions"),
    "unet_2d": ("unet", dict(spatial_dims=2, input_shape=(32, 32, 1), num_classes=3, depth=2, base_filters=4,
                             attention_gates=True, residual=True), "predictions"),
    "unet_2d_resize_deep_supervision": ("unet", dict(spatial_dims=2, input_shape=(32, 32, 1), num_classes=1, depth=2,
                                                     base_filters=4, upsampling="resize", downsampling="conv2",
                                                     deep_supervision=True), "predictions"),
    "unet_3d": ("unet", dict(spatial_dims=3, input_shape=(16, 16, 16, 1), num_classes=2, depth=2, base_filters=4,
                             attention_gates=True, upsampling="resize"), "predictions"),
    "resnet3d": ("resnet3d", dict(input_shape=(16, 16, 16, 1), num_classes=2, task="binary", depth=10,
                                  base_filters=4), "predictions"),
    "attention_mil": ("attention_mil", dict(input_shape=(None, 16), num_classes=2, hidden_units=(8,),
                                            attention_dim=4), "predictions"),
    "restoration_2d_sr": ("restoration_unet", dict(spatial_dims=2, input_shape=(16, 16, 1), depth=2, base_filters=4,
                                                   scale=2), "residual"),
    "restoration_3d": ("restoration_unet", dict(spatial_dims=3, input_shape=(8, 8, 8, 1), depth=2, base_filters=4,
                                                upsampling="transpose"), "residual"),
}


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def _smooth_inputs(n: int, shape, seed: int) -> np.ndarray:
    """Images with structure (a coarse random grid, linearly upsampled, plus a little noise) in [0, 1.05]:
    unlike i.i.d. noise, their differences survive a deep network's pooling."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    spatial = [8 if s is None else int(s) for s in shape[:-1]]
    coarse = rng.random((n, *[max(2, s // 8) for s in spatial], shape[-1]))
    out = np.stack([zoom(a, [s / c for s, c in zip(spatial, a.shape)] + [1], order=1) for a in coarse])
    return (out + 0.05 * rng.random(out.shape)).astype(np.float32)


def _trained_like(model, x, out_layer: str, seed: int = 0) -> None:
    """Give ``model`` the statistics training would: BatchNorm moving mean/variance of ``x`` (one training-mode
    pass, momentum 0, dropout off), and ``out_layer`` a random kernel scaled so its pre-activations have mean 0
    and std 2 over ``x``. Freshly initialised deep networks map every input to nearly the same output, so a
    1e-4 comparison would pass for a wrong graph; after this the outputs spread over their range."""
    import keras

    bns = [layer for layer in _layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    drops = [layer for layer in _layers(model) if isinstance(layer, keras.layers.Dropout)]
    saved = [(layer, layer.momentum) for layer in bns], [(layer, layer.rate) for layer in drops]
    for layer in bns:
        layer.momentum = 0.0
    for layer in drops:
        layer.rate = 0.0
    model(x, training=True)
    for layer, momentum in saved[0]:
        layer.momentum = momentum
    for layer, rate in saved[1]:
        layer.rate = rate
    layer = model.get_layer(out_layer)
    kernel, bias = layer.get_weights()
    feats = np.asarray(keras.Model(model.inputs, layer.input)(x, training=False), np.float64)
    f = feats.reshape(-1, feats.shape[-1])
    mu = f.mean(0)
    k = np.random.default_rng(seed).normal(size=(f.shape[1], kernel.shape[-1])) / np.sqrt(f.shape[1])
    k *= 2.0 / max(((f - mu) @ k).std(), 1e-12)
    layer.set_weights([k.reshape(kernel.shape).astype(np.float32), (-(mu @ k)).astype(np.float32).reshape(bias.shape)])


def _first(out):
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out, np.float32)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


def test_cases_cover_every_registered_model():
    from medtf.models import registry

    assert {name for name, _, _ in CASES.values()} >= set(registry._BUILTIN_MODULES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_matches_keras(case, out_dir):
    import keras

    from medtf import models

    name, kwargs, out_layer = CASES[case]
    keras.utils.set_random_seed(0)
    model = models.build(name, **kwargs)
    shape = tuple(6 if s is None else s for s in model.inputs[0].shape[1:])  # a bag of 6 for the MIL model
    x = _smooth_inputs(16, shape, seed=1)
    _trained_like(model, x, out_layer)
    ref = _first(model(x, training=False))
    assert ref.std() > 0.05, "outputs too uniform for a 1e-4 comparison to mean anything"
    path = out_dir / f"{case}.onnx"
    doc = onnx_export.export_onnx(model, path, task="binary", name=case)
    # the graph takes the Keras input layout, channels last, with a dynamic batch axis
    assert doc["input"]["name"] == "image" and doc["output"]["name"] == "predictions"
    assert doc["input"]["shape"] == [None, *model.inputs[0].shape[1:]]
    assert doc["spatial_dims"] == len(model.inputs[0].shape) - 2
    om = onnx_export.OnnxModel(path)
    got = om.run(x)
    assert got.shape == ref.shape
    assert float(np.max(np.abs(got - ref))) <= TOL, case
    # dynamic batch: a batch of one gives Keras's row too (ONNX Runtime may pick other kernels per batch size)
    assert float(np.max(np.abs(om.run(x[1:2])[0] - ref[1]))) <= TOL, case


def test_resize_with_non_integer_ratio_gets_explicit_sizes(out_dir):
    """tf2onnx writes Resize(scales=5/3) for 3→5, which ONNX evaluates to floor(4.9999998) = 4 pixels."""
    import keras
    import onnx

    inp = keras.Input((3, 3, 2), name="image")
    model = keras.Model(inp, keras.layers.Resizing(5, 5, interpolation="bilinear")(inp))
    x = np.random.default_rng(0).random((2, 3, 3, 2), dtype=np.float32)
    path = out_dir / "resize.onnx"
    onnx_export.export_onnx(model, path, task="restoration")
    resize = [n for n in onnx.load(path).graph.node if n.op_type == "Resize"]
    assert len(resize) == 1 and resize[0].input[2] == "" and resize[0].input[3]  # sizes, not scales
    got = onnx_export.predict(path, x)
    assert got.shape == (2, 5, 5, 2)
    np.testing.assert_allclose(got, np.asarray(model(x)), atol=1e-6)


def test_metadata_sidecar_and_embedded(out_dir):
    from medtf import models

    model = models.build("simple_cnn", input_shape=(16, 16, 1), num_classes=2, task="binary", filters=(4,))
    pre = {"intensity": "scale", "scale": 255.0, "size": [16, 16], "channels": 1}
    path = out_dir / "meta.onnx"
    doc = onnx_export.export_onnx(model, path, task="binary", class_names=["normal", "pneumonia"], preprocessing=pre,
                                  threshold=0.4, source_run="runs/x", name="cxr")
    side = json.loads(metadata.sidecar_path(path).read_text())
    assert side == doc
    assert side["sha256"] == metadata.sha256_file(path) and side["size_bytes"] == path.stat().st_size
    assert side["format"] == "onnx" and side["quantization"] == {"mode": "fp32"}
    assert side["class_names"] == ["normal", "pneumonia"] and side["threshold"] == 0.4
    assert side["preprocessing"] == pre and side["onnx"]["opset"] == onnx_export.DEFAULT_OPSET
    metadata.sidecar_path(path).unlink()  # the document inside the file (ONNX metadata_props) is the same
    inner = onnx_export.load_onnx_metadata(path)
    for key in ("class_names", "preprocessing", "input", "output", "task", "threshold", "format", "source", "onnx"):
        assert inner[key] == side[key], key


def test_unknown_ops_are_named():
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Conv2DBackpropFilter", ["y"], ["z"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1])])
    assert onnx_export._unknown_ops(helper.make_model(graph)) == ["Conv2DBackpropFilter"]


def test_parity_report_fails_an_onnx_file_of_another_model(out_dir):
    """The max |Δprob| gate (1e-4) fails an ONNX file that does not reproduce the Keras model."""
    from medtf.export import parity

    from ._helpers import tiny_classifier

    a, b = tiny_classifier(seed=0), tiny_classifier(seed=1)
    path = out_dir / "a.onnx"
    onnx_export.export_onnx(a, path, task="binary")
    x = np.random.default_rng(0).random((40, 32, 32, 1), dtype=np.float32)
    y = (np.arange(40) % 2)[:, None]
    ok = parity.parity_report(a, {"onnx": path}, x, y, task="binary", runs=5, progress=False)
    assert ok["passed"] and ok["exports"]["onnx"]["max_abs_dprob"] <= TOL
    assert ok["exports"]["onnx"]["max_abs_dprob_gate"] == TOL and ok["exports"]["onnx"]["latency_ms"] > 0
    bad = parity.parity_report(b, {"onnx": path}, x, y, task="binary", runs=5, progress=False,
                               gates={"onnx": 1.0})
    assert not bad["passed"] and bad["failed"] == ["onnx"]
    assert parity.parse_gates("onnx=0.002")["onnx"] == 0.002


# ------------------------------------------------------------------------------------------ medtf export
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """DX phantoms (half MONOCHROME1) → tfrecord-convert --size 24,24 → medtf train (1 epoch)."""
    from medtf.cli.tfrecord_convert import main as convert_main
    from medtf.synthetic.phantoms import write_cxr_phantoms
    from medtf.training.config import TrainConfig
    from medtf.training.trainer import train

    tmp = tmp_path_factory.mktemp("onnx_run")
    write_cxr_phantoms(tmp / "cxr", n_patients=40, studies_per_patient=2, size=32, seed=2, monochrome1_fraction=0.5)
    rec = tmp / "rec"
    assert convert_main([str(tmp / "cxr" / "dicom"), "--output", str(rec), "--no-progress", "--split", "0.6,0.2,0.2",
                         "--size", "24,24", "--labels", str(tmp / "cxr" / "labels.csv")]) == 0
    cfg = TrainConfig.from_dict({
        "records": str(rec), "task": "binary", "model": {"name": "simple_cnn", "kwargs": {"filters": [4, 8]}},
        "data": {"batch_size": 16, "label_mode": "binary", "shuffle_buffer": 64,
                 "preprocessing": {"intensity": "scale", "scale": 4095.0}},
        "optimizer": {"learning_rate": 0.01}, "epochs": 1, "seed": 0, "monitor": "val_loss",
        "output_dir": str(tmp / "runs"), "run_name": "run", "tensorboard": False, "verbose": 0,
    })
    return pathlib.Path(train(cfg))


def test_cli_export_onnx_with_parity_and_raw_parity(trained_run, capsys):
    from medtf.cli.main import main

    out = trained_run / "export_onnx"
    code = main(["export", str(trained_run), "--format", "onnx", "--out", str(out), "--name", "cxr",
                 "--raw-max", "12"])
    text = capsys.readouterr()
    assert code == 0, text.out + text.err
    path = out / "cxr.onnx"
    side = json.loads(metadata.sidecar_path(path).read_text())
    info = json.loads((trained_run / "model.json").read_text())
    assert side["sha256"] == metadata.sha256_file(path)
    assert side["task"] == "binary" and side["class_names"] == info["class_names"]
    assert side["threshold"] == info["threshold"]
    assert side["preprocessing"] == info["preprocessing"] and side["conversion"] == info["conversion"]
    assert side["conversion"]["size"] == [24, 24] and side["input"]["shape"] == [None, 24, 24, 1]
    report = json.loads((out / "parity.json").read_text())
    entry = report["exports"]["onnx"]
    assert report["passed"] and entry["passed"] and entry["max_abs_dprob"] <= TOL
    assert entry["agreement"] == 1.0 and entry["path"] == str(path)
    raw = report["raw"]
    assert raw["examples"] > 0 and raw["passed"], raw
    assert raw["exports"]["onnx"]["raw_vs_records"] <= TOL and raw["exports"]["onnx"]["raw_vs_keras"] <= TOL
    assert "onnx" in text.out


def test_cli_export_onnx_gate_failure_exits_1(trained_run, capsys):
    from medtf.cli.main import main

    code = main(["export", str(trained_run), "--format", "onnx", "--out", str(trained_run / "export_gate"),
                 "--gate", "onnx=-1", "--raw-max", "0"])
    err = capsys.readouterr().err
    assert code == 1
    assert "parity gate exceeded for onnx" in err


def test_bench_device_runs_onnx(tmp_path):
    import subprocess
    import sys

    from medtf import models

    path = tmp_path / "bench.onnx"
    onnx_export.export_onnx(models.build("simple_cnn", input_shape=(16, 16, 1), num_classes=2, task="binary",
                                         filters=(4,)), path, task="binary")
    script = pathlib.Path(__file__).resolve().parents[2] / "export" / "bench_device.py"
    res_path = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, str(script), str(path), "--runs", "10", "--warmup", "1", "--json",
                           str(res_path)], capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(res_path.read_text())
    row = res["models"][str(path)]
    assert row["p50_ms"] > 0 and row["runtime"].startswith("onnxruntime")
    assert "CPUExecutionProvider" in row["runtime"]
