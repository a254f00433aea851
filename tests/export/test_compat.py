"""Runtime compatibility table (format × runtime): ai-edge-litert (this env) vs tflite-runtime 2.14 (own venv,
numpy < 2). Writes the table to docs/compat.md when MEDTF_UPDATE_DOCS=1."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from medtf.export import edge, litert

from ._venv import REPO, cached_venv, run_in

TFLITE_RUNTIME_214 = ["tflite-runtime==2.14.0", "numpy<2"]


def _classifier():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 1), name="image")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="cnn_dense")


def _unet():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 1), name="image")
    c1 = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    d = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(c1)
    u = keras.layers.Conv2DTranspose(16, 2, strides=2, padding="same")(d)
    x = keras.layers.Concatenate()([u, c1])
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    out = keras.layers.Conv2D(2, 1, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="unet_transpose")


RUNNER = """
import json, sys, numpy as np
from tflite_runtime.interpreter import Interpreter
res = {}
for name, path in json.loads(sys.argv[1] if len(sys.argv) > 1 else PATHS).items():
    try:
        it = Interpreter(model_path=path, num_threads=2)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        x = np.load(path + '.x.npy')
        if d['dtype'] != np.float32:
            s, z = d['quantization']
            x = np.clip(np.round(x / s) + z, -128, 127).astype(d['dtype'])
        it.set_tensor(d['index'], x)
        it.invoke()
        o = it.get_output_details()[0]
        y = it.get_tensor(o['index']).astype(np.float32)
        if o['dtype'] != np.float32:
            s, z = o['quantization']
            y = (y - z) * s
        res[name] = {'ok': True, 'out': y.tolist()}
    except Exception as e:
        res[name] = {'ok': False, 'error': (type(e).__name__ + ': ' + str(e)).splitlines()[0][:160]}
print(json.dumps(res))
"""


@pytest.mark.slow
def test_compatibility_table(tmp_path):
    rng = np.random.default_rng(0)
    calib = rng.random((200, 32, 32, 1), dtype=np.float32)
    x = rng.random((1, 32, 32, 1), dtype=np.float32)
    paths, refs = {}, {}
    for build in (_classifier, _unet):
        model = build()
        refs[model.name] = model.predict(x, verbose=0)
        for fmt in litert.FORMATS:
            p = tmp_path / f"{model.name}_{fmt}.tflite"
            p.write_bytes(litert.convert(model, fmt, calibration=calib))
            np.save(str(p) + ".x.npy", x)
            paths[f"{model.name}|{fmt}"] = str(p)
    local = {}
    for key, p in paths.items():
        local[key] = {"ok": True, "out": edge.EdgeModel(p, metadata={}).run(x).tolist()}
    venv = cached_venv(TFLITE_RUNTIME_214)
    proc = run_in(venv, RUNNER.replace("PATHS", repr(json.dumps(paths))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    old = json.loads(proc.stdout.strip().splitlines()[-1])

    def cell(r, model):
        if not r["ok"]:
            return f"fails: `{r['error']}`"
        return f"runs (max abs diff vs Keras {np.max(np.abs(np.array(r['out']) - refs[model])):.1e})"

    lines = ["| model | format | ai-edge-litert 2.3 | tflite-runtime 2.14 |", "|---|---|---|---|"]
    for key in paths:
        model, fmt = key.split("|")
        lines.append(f"| {model} | {fmt} | {cell(local[key], model)} | {cell(old[key], model)} |")
    table = "\n".join(lines)
    doc = (
        "# LiteRT runtime compatibility\n\n"
        "Produced by `tests/export/test_compat.py` (`MEDTF_UPDATE_DOCS=1 pytest -m slow tests/export/test_compat.py`):\n"
        "models converted by TensorFlow 2.21 (`medtf.export.litert.convert`), run with ai-edge-litert 2.3 in the\n"
        "project environment and with tflite-runtime 2.14.0 (numpy < 2) in its own virtual environment, batch 1.\n"
        "Max abs diff is on output probabilities vs the Keras model (int8 outputs are dequantised).\n\n"
        f"{table}\n\n"
        "`medtf export --target tflite-runtime-2.14` therefore refuses `tflite-dynamic` (and `--format all` skips it)\n"
        "and produces fp32 / fp16 / full-int8 files, which run there.\n"
    )
    (tmp_path / "compat.md").write_text(doc)
    if os.environ.get("MEDTF_UPDATE_DOCS") == "1":
        (REPO / "docs" / "compat.md").write_text(doc)
    # every format medtf produces for the old runtime runs there
    for key, r in old.items():
        if not key.endswith("tflite-dynamic"):
            assert r["ok"], (key, r)
    # and the refusal of dynamic range for tflite-runtime 2.14 is grounded in a real failure
    assert any(not r["ok"] for k, r in old.items() if k.endswith("tflite-dynamic")), old
    # ai-edge-litert runs everything
    assert all(r["ok"] for r in local.values())
