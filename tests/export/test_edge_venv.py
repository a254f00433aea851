"""Acceptance: the edge runtime in a clean venv (numpy, pydicom, ai-edge-litert — no TensorFlow) runs an
exported int8 model on a DICOM and matches the interpreter run inside the TensorFlow process."""

from __future__ import annotations

import json

import numpy as np

from medtf.preprocess import Preprocessing
from medtf.export import edge, litert

from ._helpers import tiny_classifier, write_ct_dicom
from ._venv import cached_venv, run_in

EDGE_REQUIREMENTS = ["numpy", "pydicom>=3", "ai-edge-litert"]


def test_edge_runtime_without_tensorflow_matches_in_process(tmp_path):
    import tensorflow as tf

    from medtf.preprocess import tf_ops

    spec = Preprocessing(intensity="window", windows=((1500, -600), (400, 40)), size=(32, 32))
    model = tiny_classifier(input_shape=(32, 32, 2), task="multiclass", num_classes=3)
    calib = np.random.default_rng(0).random((200, 32, 32, 2), dtype=np.float32)
    path = tmp_path / "ct_int8.tflite"
    litert.export_tflite(model, path, "tflite-int8", calibration=calib, task="multiclass",
                         class_names=["a", "b", "c"], preprocessing=spec.to_dict())
    dicoms = []
    for i in range(3):
        dicoms.append(tmp_path / f"ct{i}.dcm")
        write_ct_dicom(dicoms[-1], rows=40 + 4 * i, cols=48, seed=i)

    # reference: TF-graph preprocessing + the interpreter inside this (TensorFlow) process
    ref = []
    runner = edge.EdgeModel(path, threads=2)
    for p in dicoms:
        raw = edge.read_image(p)
        x = tf_ops.apply_chain(tf.constant(raw[None]), spec, batched=True).numpy()
        ref.append(runner.run(x)[0])
    ref = np.stack(ref)

    venv = cached_venv(EDGE_REQUIREMENTS)
    code = (
        "import json, sys\n"
        "from medtf.export.edge import predict_files\n"
        f"res = predict_files({str(path)!r}, {[str(p) for p in dicoms]!r}, threads=2)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "import importlib.util as u\n"
        "print(json.dumps({'results': res, 'loaded': bad, 'tf_installed': u.find_spec('tensorflow') is not None}))\n"
    )
    proc = run_in(venv, code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["tf_installed"] is False and out["loaded"] == []
    got = np.array([list(r["probabilities"].values()) for r in out["results"]], dtype=np.float32)
    scale = runner._out["quantization"][0]
    # identical up to at most one output quantisation step (NumPy vs graph preprocessing rounding)
    assert np.max(np.abs(got - ref)) <= scale + 1e-6, (got, ref)
    assert [r["label"] for r in out["results"]] == [["a", "b", "c"][int(np.argmax(r))] for r in ref]
