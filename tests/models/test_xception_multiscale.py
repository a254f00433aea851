"""``xception_multiscale`` at small inputs: the adaptive stem (entry-flow strides dropped for branches below 71 px).

The branch geometry is checked on the built Keras graph (each branch's input size, its stride-1 layers and its
last feature map against :func:`feature_size`), not on the builder's own bookkeeping.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from medtf import models  # noqa: E402
from medtf.models._xception import MIN_BRANCH, feature_size, stem_strides_removed  # noqa: E402

#: the stride-2 layers of Keras' Xception, in order, as the builder names them (pool shortcuts found by shape)
STEM = ("block1_conv1", "block2_pool", "block3_pool", "block4_pool")


def _branches(model):
    """(branch input (H, W), backbone sub-model, branch feature map (H, W)) per scale, from the functional graph."""
    out = []
    for i in range(8):
        try:
            backbone = model.get_layer(f"xception_s{i}")
        except ValueError:
            break
        node = backbone._inbound_nodes[0]
        out.append((tuple(node.input_tensors[0].shape[1:3]), backbone, tuple(node.output_tensors[0].shape[1:3])))
    return out


def _unit_strides(backbone) -> list[str]:
    """Names of the stem/entry-flow layers that run with stride 1 in this backbone."""
    return [name for name in STEM if tuple(backbone.get_layer(name).strides) == (1, 1)]


def _small(size, channels, **kw):
    return models.build("xception_multiscale", input_shape=(size, size, channels), num_classes=3, fusion_filters=8,
                        **kw)


@pytest.mark.parametrize("size,channels", [(28, 1), (28, 3), (64, 1), (64, 3), (71, 1), (71, 3), (128, 1), (128, 3)])
def test_default_scales_build_and_run_at_small_inputs(size, channels):
    """Default scales (1.0, 0.5): two branches at two resolutions, both fused, probabilities out."""
    keras.utils.set_random_seed(0)
    model = _small(size, channels)
    branches = _branches(model)
    assert [hw for hw, _, _ in branches] == [(size, size), (round(size / 2),) * 2]
    concat = model.get_layer("fusion_concat")
    assert len(concat._inbound_nodes[0].input_tensors) == 2
    for hw, backbone, fmap in branches:
        removed = stem_strides_removed(hw[0])
        assert _unit_strides(backbone) == list(STEM[:removed])
        side = feature_size(hw[0], removed)
        assert side >= 3 and fmap == (side, side)
    x = np.random.default_rng(0).random((2, size, size, channels)).astype("float32")
    p = np.asarray(model(x, training=False))
    assert p.shape == (2, 3) and np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


def test_branch_geometry_matches_keras_graph():
    """``feature_size`` (the rule that picks the stem) agrees with the maps Keras computes, at every branch side
    from the 9-px minimum up to 72 (branches >= 71 px keep Keras' standard stem)."""
    from medtf.models._xception import _backbone

    nets = {k: _backbone(1, f"b{k}", None, 0.9, k) for k in range(5)}
    for side in range(MIN_BRANCH, 73):
        k = stem_strides_removed(side)
        assert (k == 0) == (side >= 71)
        shape = nets[k].compute_output_shape((1, side, side, 1))
        assert shape[1:3] == (feature_size(side, k),) * 2 and shape[1] >= 3, side
        if k:  # one stride fewer would leave less than 3x3
            assert feature_size(side, k - 1) < 3
    with pytest.raises(ValueError, match="minimum 9 px"):
        stem_strides_removed(MIN_BRANCH - 1)


def test_large_inputs_keep_the_standard_stem():
    model = _small(144, 1, shared_weights=True)
    backbone = model.get_layer("xception_shared")
    assert _unit_strides(backbone) == []
    assert tuple(backbone.get_layer("block1_conv1").strides) == (2, 2)


def test_shared_backbone_uses_the_smallest_branch_stem():
    model = _small(64, 1, shared_weights=True)  # branches 64 px (1 stride removed) and 32 px (2)
    backbone = model.get_layer("xception_shared")
    assert _unit_strides(backbone) == list(STEM[:2])
    assert len(backbone._inbound_nodes) == 2
    assert np.asarray(model(np.zeros((1, 64, 64, 1), "float32"))).shape == (1, 3)


def test_too_small_branch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"at least 9x9 px.*\(8, 8\)"):
        _small(16, 1)  # scale 0.5 -> an 8-px branch
    model = _small(18, 1)  # the smallest input the default scales accept
    assert [hw for hw, _, _ in _branches(model)] == [(18, 18), (9, 9)]


def test_imagenet_layout_weights_load_into_adapted_branches(tmp_path):
    """A user-given Xception no-top weights file loads into the standard and the adapted branch alike (strides do
    not change kernel shapes); the weights here are a seeded random Xception's, saved by Keras."""
    keras.utils.set_random_seed(3)
    ref = keras.applications.Xception(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "xception_notop.weights.h5"
    ref.save_weights(str(path))
    model = _small(96, 3, weights=path)  # 96 px: standard stem; 48 px: one stride removed
    expected = ref.get_weights()
    for _, backbone, _ in _branches(model):
        got = backbone.get_weights()
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
    assert _unit_strides(_branches(model)[1][1]) == ["block1_conv1"]


def test_one_fit_step_at_28px_updates_both_branches():
    keras.utils.set_random_seed(0)
    model = _small(28, 3)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  run_eagerly=True)  # one eager step: tracing two Xceptions takes ~25 s
    before = {name: model.get_layer(name).get_layer("block1_conv1").kernel.numpy().copy()
              for name in ("xception_s0", "xception_s1")}
    rng = np.random.default_rng(0)
    hist = model.fit(rng.random((4, 28, 28, 3)).astype("float32"), rng.integers(0, 3, 4), batch_size=4, epochs=1,
                     verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    for name, kernel in before.items():
        assert not np.array_equal(kernel, model.get_layer(name).get_layer("block1_conv1").kernel.numpy()), name
    rebuilt = keras.Model.from_config(model.get_config())  # the stride-1 layers survive serialisation
    assert _unit_strides(rebuilt.get_layer("xception_s1")) == list(STEM[:3])
