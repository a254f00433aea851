"""RunInfo (model.json) round trip and the precision policy choice."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from medtf.preprocess import Preprocessing
from medtf.training.precision import select_policy
from medtf.training.run import RunInfo


def _info(**kw):
    base = dict(
        name="simple_cnn",
        task="binary",
        class_names=["normal", "pneumonia"],
        input_shape=[28, 28, 1],
        spatial_dims=2,
        preprocessing=Preprocessing(intensity="scale", scale=255.0, size=(28, 28), channels=1),
        threshold=0.37,
        records="records",
        data={"batch_size": 8},
        label_mode="binary",
    )
    base.update(kw)
    return RunInfo(**base)


def test_runinfo_save_load_round_trip(tmp_path):
    info = _info()
    path = info.save(tmp_path)
    assert path.name == "model.json"
    d = json.loads(path.read_text())
    assert d["schema"] == "medtf.model/v1"
    assert d["preprocessing"]["intensity"] == "scale"
    assert d["threshold"] == pytest.approx(0.37)
    loaded = RunInfo.load(tmp_path)
    assert loaded == info
    assert loaded.num_classes == 2
    assert not list(tmp_path.glob(".model.json.*"))  # no temp file left behind


def test_runinfo_keeps_unknown_keys_and_validates(tmp_path):
    d = _info().to_dict()
    d["future_key"] = {"a": 1}
    (tmp_path / "model.json").write_text(json.dumps(d))
    info = RunInfo.load(tmp_path)
    assert info.extra == {"future_key": {"a": 1}}
    assert info.to_dict()["future_key"] == {"a": 1}
    with pytest.raises(ValueError, match="task"):
        _info(task="regression")
    with pytest.raises(ValueError, match="schema"):
        _info(schema="other/v9")
    bad = dict(d)
    del bad["input_shape"]
    (tmp_path / "model.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="input_shape"):
        RunInfo.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.json"):
        RunInfo.load(tmp_path / "nowhere")


def test_run_module_does_not_import_tensorflow():
    code = (
        "import sys; import medtf.training.run, medtf.training.config, medtf.training.precision, medtf.training; "
        "bad=[m for m in ('tensorflow','keras') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_select_policy():
    assert select_policy(None, gpu=False) == "float32"
    assert select_policy("auto", gpu=True) == "mixed_float16"
    assert select_policy(None, gpu=True) == "mixed_float16"
    assert select_policy("float32", gpu=True) == "float32"
    assert select_policy("bf16", gpu=False) == "mixed_bfloat16"
    assert select_policy("bfloat16", gpu=False) == "bfloat16"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert select_policy("mixed_float16", gpu=False) == "mixed_float16"
    assert any("no GPU" in str(x.message) for x in w)
    with pytest.raises(ValueError, match="precision"):
        select_policy("int8")


def test_select_policy_detects_hardware():
    import tensorflow as tf

    expected = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    assert select_policy() == expected
