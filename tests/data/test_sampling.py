"""Patch sampling ratios, class weights/balancing, tiling."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from medtf.data import sampling as SP


def _patch_draws(vol, mask, size, ratio, n, seed=0):
    """n patches in one graph (tf.data map over seeds), returning stacked patches."""
    img, msk = tf.constant(vol), tf.constant(mask)
    ds = tf.data.Dataset.range(n).map(
        lambda i: SP.random_patch_3d(img, msk, size, ratio, tf.stack([tf.constant(seed, tf.int64), i])),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    ).batch(n)
    return next(iter(ds))


@pytest.mark.parametrize("ratio", [0.33, 0.8])
def test_patch_foreground_fraction_matches_ratio_over_1000_draws(ratio):
    vol = np.random.default_rng(0).random((40, 40, 40, 1)).astype(np.float32)
    mask = np.zeros((40, 40, 40, 1), np.uint8)
    mask[20:22, 10:12, 30:32] = 1  # small lesion: background-centred patches rarely touch it
    pi, pm = _patch_draws(vol, mask, (8, 8, 8), ratio, 1000)
    assert pi.shape == (1000, 8, 8, 8, 1) and pm.shape == (1000, 8, 8, 8, 1)
    frac = float(np.mean(pm.numpy().reshape(1000, -1).max(axis=1) > 0))
    assert abs(frac - ratio) <= 0.05, frac


def test_patch_centre_semantics_and_border_padding():
    vol = (np.arange(12 * 12 * 12, dtype=np.float32).reshape(12, 12, 12, 1) + 1)
    mask = np.zeros((12, 12, 12, 1), np.uint8)
    mask[0, 0, 0] = 1  # corner: foreground patches need padding
    pi, pm = _patch_draws(vol, mask, (6, 6, 6), 1.0, 50)
    c = (3, 3, 3)
    assert (pm.numpy()[(slice(None),) + c] == 1).all()  # centre voxel is the foreground voxel
    assert np.array_equal(pi.numpy()[0, :3, :3, :3], np.zeros((3, 3, 3, 1)))  # zero padded outside
    np.testing.assert_array_equal(pi.numpy()[0, 3:, 3:, 3:], vol[:3, :3, :3])
    _, pm0 = _patch_draws(vol, mask, (6, 6, 6), 0.0, 50, seed=1)
    assert (pm0.numpy()[(slice(None),) + c] == 0).all()  # background centres
    # no foreground at all: falls back to background centres, 2D works too
    img2 = np.ones((10, 14, 1), np.float32)
    p2, m2 = SP.random_patch_3d(img2, np.zeros((10, 14, 1), np.uint8), (4, 6), 1.0, tf.constant([1, 2]))
    assert p2.shape == (4, 6, 1) and not m2.numpy().any()
    with pytest.raises(ValueError, match="spatial axes"):
        SP.random_patch_3d(img2, img2, (4, 4, 4), 0.5, tf.constant([1, 2]))


def _manifest(counts, names=None):
    return {"splits": {"train": {"labels": {str(k): v for k, v in counts.items()}}}, "label_names": names}


def test_class_weights_match_sklearn_balanced():
    counts = {0: 70, 1: 20, 2: 10}
    y = np.concatenate([np.full(c, k) for k, c in counts.items()])
    ref = compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(SP.class_weights_from_manifest(_manifest(counts)), ref, rtol=1e-6)
    by_name = {"splits": {"train": {"labels": {"normal": 70, "pneu": 20, "other": 10}}},
               "label_names": ["normal", "pneu", "other"]}
    np.testing.assert_allclose(SP.class_weights_from_manifest(by_name), ref, rtol=1e-6)
    with pytest.raises(ValueError, match="neither a class index"):
        SP.class_weights_from_manifest({"splits": {"train": {"labels": {"cat": 3}}}, "label_names": ["dog"]})
    with pytest.raises(ValueError, match="no split 'val'"):
        SP.class_weights_from_manifest(_manifest(counts), "val")


def _labelled(counts):
    labels = np.concatenate([np.full(c, k, np.int64) for k, c in enumerate(counts)])
    return tf.data.Dataset.from_tensor_slices({"label": labels[:, None]}), labels


def test_sample_from_datasets_reaches_target_proportions():
    counts = [180, 15, 5]
    ds, _ = _labelled(counts)
    out = SP.sample_from_datasets(ds, lambda e: e["label"][0], counts, [0.5, 0.25, 0.25], seed=3, shuffle_buffer=64)
    got = np.array([int(e["label"][0]) for e in out.take(2000).as_numpy_iterator()])
    frac = np.bincount(got, minlength=3) / got.size
    np.testing.assert_allclose(frac, [0.5, 0.25, 0.25], atol=0.04)


def test_rejection_resample_moves_towards_target():
    counts = [300, 100]
    ds, _ = _labelled(counts)
    out = SP.rejection_resample(ds.shuffle(400, seed=1), lambda e: e["label"][0], counts, None, seed=2)
    got = np.array([int(e["label"][0]) for e in out.as_numpy_iterator()])
    frac = np.bincount(got, minlength=2) / got.size
    assert abs(frac[1] - 0.5) < 0.1, frac  # from 25 % to about 50 %


@pytest.mark.parametrize("shape,tile,overlap", [((50, 37, 2), 16, 0), ((50, 37, 1), 16, 5), ((10, 12, 3), 16, 4)])
def test_tile_untile_round_trip(shape, tile, overlap):
    x = np.random.default_rng(1).random(shape).astype(np.float32)
    tiles, starts = SP.tile_2d(x, tile, overlap)
    assert tiles.shape[1:] == (tile, tile, shape[-1])
    padded = np.pad(x, [(0, max(tile - shape[0], 0)), (0, max(tile - shape[1], 0)), (0, 0)])
    for t, (r, c) in zip(tiles.numpy(), starts.numpy()):
        np.testing.assert_array_equal(t, padded[r:r + tile, c:c + tile])
    covered = np.zeros(padded.shape[:2], bool)
    for r, c in starts.numpy():
        covered[r:r + tile, c:c + tile] = True
    assert covered.all()
    np.testing.assert_array_equal(SP.untile_2d(tiles, starts, shape[:2]).numpy(), x)
