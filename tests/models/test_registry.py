"""Registry contract: names, lazy imports, errors, and the heads every classifier shares."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

EXPECTED = {"efficientnet", "densenet3d_cbam", "xception_multiscale", "unet", "resnet3d", "attention_mil",
            "restoration_unet", "simple_cnn"}


def test_available_lists_contract_names():
    from medtf import models

    assert EXPECTED <= set(models.available())


def test_import_is_cheap():
    code = "import sys, medtf.models, medtf.models.registry; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_unknown_name_lists_known():
    from medtf import models

    with pytest.raises(KeyError, match="simple_cnn"):
        models.get_builder("nope")


def test_register_custom_and_conflict():
    from medtf.models import registry

    @registry.register("_test_custom_builder")
    def custom(**kw):
        return kw

    assert registry.build("_test_custom_builder", a=1) == {"a": 1}
    with pytest.raises(ValueError, match="already registered"):
        registry.register("_test_custom_builder")(lambda **kw: kw)
    del registry._REGISTRY["_test_custom_builder"]


@pytest.mark.parametrize("task,num_classes,units", [("binary", 1, 1), ("binary", 2, 1), ("multiclass", 4, 4),
                                                     ("multilabel", 3, 3), ("ordinal", 5, 4)])
def test_head_units_and_activation(task, num_classes, units):
    from medtf import models

    model = models.build("simple_cnn", input_shape=(16, 16, 1), num_classes=num_classes, task=task)
    assert model.output_shape == (None, units)
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    x = np.random.default_rng(0).normal(size=(3, 16, 16, 1)).astype("float32")
    p = model.predict(x, verbose=0)
    assert p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))
    if task == "multiclass":
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("task,num_classes", [("binary", 3), ("multiclass", 1), ("ordinal", 1), ("regression", 2),
                                              ("multiclass", 0)])
def test_head_rejects_bad_task(task, num_classes):
    from medtf import models

    with pytest.raises(ValueError, match="num_classes|task"):
        models.build("simple_cnn", input_shape=(16, 16, 1), num_classes=num_classes, task=task)


def test_bad_input_shape_message():
    from medtf import models

    with pytest.raises(ValueError, match="input_shape"):
        models.build("simple_cnn", input_shape=(16, 1), num_classes=2)
