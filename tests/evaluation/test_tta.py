"""Test-time augmentation: the dihedral / flip means against transforms written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medtf.evaluation.evaluate import tta_mode, tta_predict


def _dense(x):
    """A dense, deliberately not rotation- or flip-equivariant map of an NHWC batch: x weighted by a ramp."""
    h, w = x.shape[1:3]
    ramp = (np.arange(h)[:, None] * 10 + np.arange(w)[None, :]).astype(np.float32)
    return x * ramp[None, :, :, None]


def test_dihedral_dense_is_the_mean_of_the_eight_back_mapped_predictions():
    x = np.random.default_rng(0).random((2, 6, 6, 3)).astype(np.float32)
    manual = []
    for k in range(4):
        for flip in (False, True):
            xt = np.rot90(x[:, :, ::-1] if flip else x, k, axes=(1, 2))
            out = np.rot90(_dense(xt), -k, axes=(1, 2))
            manual.append(out[:, :, ::-1] if flip else out)
    got = tta_predict(_dense, x, "dihedral", spatial_axes=(1, 2), dense=True)
    np.testing.assert_allclose(got, np.mean(manual, axis=0), rtol=1e-6)
    # every back-mapped prediction is x times a transformed ramp, so the mean is x times the group-averaged ramp
    assert got.shape == x.shape and not np.allclose(got, _dense(x))


def test_equivariant_model_is_unchanged_and_flip_matches_hand_written():
    x = np.random.default_rng(1).random((1, 4, 8, 2)).astype(np.float32)
    square = lambda a: a ** 2  # noqa: E731 - pointwise: equivariant to every transform
    for mode in ("flip", "dihedral"):
        np.testing.assert_allclose(tta_predict(square, x, mode, spatial_axes=(1, 2), dense=True), x ** 2, rtol=1e-6)
    flip = tta_predict(_dense, x, "flip", spatial_axes=(1, 2), dense=True)
    np.testing.assert_allclose(flip, (_dense(x) + _dense(x[:, :, ::-1])[:, :, ::-1]) / 2, rtol=1e-6)


def test_classification_outputs_are_averaged_without_mapping_back():
    x = np.random.default_rng(2).random((3, 5, 5, 1)).astype(np.float32)
    score = lambda a: a[:, 0, :, 0].sum(-1, keepdims=True) * 1.0  # first row: changes under rotation  # noqa: E731
    got = tta_predict(score, x, "dihedral", spatial_axes=(1, 2), dense=False)
    # the first row of the 8 transforms visits each border side twice (once per reading direction)
    sides = [x[:, 0, :, 0], x[:, -1, :, 0], x[:, :, 0, 0], x[:, :, -1, 0]]
    np.testing.assert_allclose(got[:, 0], np.mean([s.sum(-1) for s in sides], axis=0), rtol=1e-6)


def test_volume_dihedral_acts_in_plane_and_modes_are_validated():
    x = np.random.default_rng(3).random((4, 6, 6, 1)).astype(np.float32)  # (D, H, W, C): one volume
    vol = lambda a: a * np.arange(a.shape[0], dtype=np.float32)[:, None, None, None]  # depth ramp  # noqa: E731
    np.testing.assert_allclose(tta_predict(vol, x, "dihedral", spatial_axes=(0, 1, 2), dense=True), vol(x), rtol=1e-6)
    assert tta_mode(True) == "flip" and tta_mode(False) is None and tta_mode("dihedral") == "dihedral"
    with pytest.raises(ValueError, match="tta"):
        tta_mode("rotate")
