"""Augmentation ops: NumPy/SciPy references, identities, inverses, mask-follows-shape, mixing, seeds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from medtf.data import augment as A
from medtf.data.config import AugmentConfig, OpConfig


def _blob(shape, centre=None, sigma=None):
    """Smooth Gaussian blob in [0, 1] with a trailing channel axis."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    centre = centre or [(n - 1) / 2 for n in shape]
    sigma = sigma or min(shape) / 5
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return np.exp(-0.5 * r2 / sigma**2).astype(np.float32)[..., None]


def _seed(i):
    return tf.constant([7, i], tf.int64)


@pytest.mark.parametrize("shape", [(6, 9, 2), (4, 6, 9, 1)])
def test_flips_equal_numpy(shape):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    nd = len(shape) - 1
    for axes in [[0], [-1], list(range(nd))]:
        np.testing.assert_array_equal(A.flip(x, axes).numpy(), np.flip(x, [a % nd for a in axes]))
    # random flips: image and mask get the same flips, each a NumPy flip
    m = (x > x.mean()).astype(np.uint8)[..., :1]
    seen = set()
    for i in range(12):
        xi, mi = A.random_flip(tf.constant(x), tf.constant(m), _seed(i))
        xi, mi = xi.numpy(), mi.numpy()
        combos = [c for c in itertools.product([0, 1], repeat=nd)
                  if np.array_equal(xi, np.flip(x, [a for a in range(nd) if c[a]]))]
        assert len(combos) == 1  # exactly one NumPy flip combination
        combo = combos[0]
        np.testing.assert_array_equal(mi, np.flip(m, [a for a in range(nd) if combo[a]]))
        seen.add(combo)
    assert len(seen) > 1


@pytest.mark.parametrize("shape", [(7, 7, 2), (5, 8, 8, 1), (6, 9, 1)])
def test_rot90_equals_numpy(shape):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    nd = len(shape) - 1
    for k in range(4):
        np.testing.assert_array_equal(A.rot90(x, k).numpy(), np.rot90(x, k, axes=(nd - 2, nd - 1)))
    square = shape[nd - 2] == shape[nd - 1]
    ks = set()
    for i in range(40):
        xi, mi = A.random_rot90(tf.constant(x), tf.constant(x.astype(np.int32)), _seed(i))
        k = next(k for k in range(4) if xi.shape == np.rot90(x, k, axes=(nd - 2, nd - 1)).shape
                 and np.array_equal(xi.numpy(), np.rot90(x, k, axes=(nd - 2, nd - 1))))
        np.testing.assert_array_equal(mi.numpy(), np.rot90(x, k, axes=(nd - 2, nd - 1)).astype(np.int32))
        ks.add(k)
    assert ks == ({0, 1, 2, 3} if square else {0, 2})


@pytest.mark.parametrize("shape", [(17, 21, 2), (7, 11, 13, 1)])
def test_identity_affine_and_zero_elastic_are_identities(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    m = rng.integers(0, 3, shape[:-1] + (1,)).astype(np.uint8)
    nd = len(shape) - 1
    xi, mi = A.affine_transform(x, m, np.eye(nd), np.zeros(nd))
    np.testing.assert_array_equal(xi.numpy(), x)
    np.testing.assert_array_equal(mi.numpy(), m)
    xe, me = A.elastic_deform(x, m, np.zeros(shape[:-1] + (nd,), np.float32))
    np.testing.assert_array_equal(xe.numpy(), x)
    np.testing.assert_array_equal(me.numpy(), m)
    # an integer translation is an exact shift
    xs, _ = A.affine_transform(x, None, np.eye(nd), [2.0] + [0.0] * (nd - 1))
    np.testing.assert_array_equal(xs.numpy()[: shape[0] - 2], x[2:])


@pytest.mark.parametrize("shape,angle", [((64, 64), 23.0), ((48, 40), -37.0), ((8, 40, 40), 30.0)])
def test_rotate_then_inverse_restores_interior(shape, angle):
    """Bilinear rotation by θ then −θ on a smooth image: interior error < 0.01 (max), < 0.002 (mean)."""
    x = _blob(shape, sigma=min(shape[-2:]) / 5)
    y, _ = A.rotate(x, angle)
    z, _ = A.rotate(y, -angle)
    h, w = shape[-2:]
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    interior = np.sqrt(yy**2 + xx**2) < 0.35 * min(h, w)
    err = np.abs(z.numpy() - x)[..., 0][..., interior]
    assert err.max() < 0.01 and err.mean() < 0.002, (err.max(), err.mean())
    # and the rotation itself is a real rotation: the off-centre blob moves by the rotation angle
    b = _blob(shape, centre=[(shape[0] - 1) / 2] * (len(shape) - 2) + [h / 2 - 1 - 10, (w - 1) / 2], sigma=3)
    rb, _ = A.rotate(b, angle)
    com = ndimage.center_of_mass(rb.numpy()[..., 0])[-2:]
    vec = np.array(com) - [(h - 1) / 2, (w - 1) / 2]
    # output→input mapping by R(θ) rotates the content by −θ in (row, col)
    t = np.deg2rad(angle)
    expected = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) @ np.array([-10.5, 0.0])
    np.testing.assert_allclose(vec, expected, atol=0.3)


@pytest.mark.parametrize("nd", [2, 3])
def test_mask_moves_with_shape(nd):
    shape = (40, 40) if nd == 2 else (20, 24, 24)
    x = np.zeros(shape + (1,), np.float32)
    sl = (slice(12, 22), slice(8, 18)) if nd == 2 else (slice(6, 12), slice(6, 14), slice(10, 18))
    x[sl] = 1.0
    m = (x > 0).astype(np.uint8)
    for i in range(4):
        for op, mag in [(A.random_affine, (25.0, 0.15, 0.1)), (A.random_elastic, (2.0, 8.0))]:
            xi, mi = op(tf.constant(x), tf.constant(m), _seed(i), mag)
            shape_now = xi.numpy()[..., 0] > 0.5
            mask_now = mi.numpy()[..., 0] > 0
            assert mi.dtype == tf.uint8
            iou = (shape_now & mask_now).sum() / max((shape_now | mask_now).sum(), 1)
            assert iou > 0.85, (op.__name__, i, iou)
            assert not np.array_equal(mask_now, m[..., 0] > 0)  # it did move


def test_intensity_ops_touch_image_only_and_blur_matches_scipy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 24, 1)).astype(np.float32)
    m = (x > 0).astype(np.uint8)
    for op in (A.random_brightness, A.random_contrast, A.random_gamma, A.random_noise, A.random_blur):
        xi, mi = op(tf.constant(x), tf.constant(m), _seed(1), 1.5)
        assert mi is not None and np.array_equal(mi.numpy(), m)
        assert xi.shape == x.shape and not np.allclose(xi.numpy(), x)
    for shape in [(20, 24, 2), (9, 10, 12, 1)]:
        v = rng.normal(size=shape).astype(np.float32)
        got = A.gaussian_blur(v, 1.3, 4).numpy()
        ref = ndimage.gaussian_filter(v.astype(np.float64), sigma=[1.3] * (len(shape) - 1) + [0],
                                      mode="reflect", truncate=4 / 1.3)
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_same_seed_same_result_other_seed_other_result():
    x = tf.constant(_blob((32, 32)))
    m = tf.cast(x > 0.5, tf.uint8)
    cfg = AugmentConfig.policy("heavy")
    a1, b1 = A.augment_example(x, m, _seed(3), cfg)
    a2, b2 = A.augment_example(x, m, _seed(3), cfg)
    a3, _ = A.augment_example(x, m, _seed(4), cfg)
    np.testing.assert_array_equal(a1.numpy(), a2.numpy())
    np.testing.assert_array_equal(b1.numpy(), b2.numpy())
    assert not np.array_equal(a1.numpy(), a3.numpy())


def test_probability_zero_and_one():
    x = tf.constant(_blob((16, 16)))
    never = AugmentConfig(ops=(OpConfig("affine", 0.0, 30.0), OpConfig("noise", 0.0, 1.0)))
    always = AugmentConfig(ops=(OpConfig("noise", 1.0, 1.0),))
    np.testing.assert_array_equal(A.augment_example(x, None, _seed(0), never)[0].numpy(), x.numpy())
    for i in range(5):
        assert not np.array_equal(A.augment_example(x, None, _seed(i), always)[0].numpy(), x.numpy())


def test_mixup_and_cutmix_mix_labels_to_match():
    rng = np.random.default_rng(5)
    n, k = 16, 4
    x = rng.random((n, 12, 10, 1)).astype(np.float32)
    y = np.eye(k, dtype=np.float32)[rng.integers(0, k, n)]
    xm, ym, _ = A.mixup(x, y, _seed(1), alpha=0.4)
    np.testing.assert_allclose(ym.numpy().sum(-1), 1.0, atol=1e-6)
    # each mixed image is lam·x_i + (1-lam)·x_j for some partner j, and its label uses the same lam
    lams = []
    for i in range(n):
        best = None
        for j in range(n):
            d = (x[i] - x[j]).ravel()
            lam = 1.0 if j == i else float(np.dot(xm.numpy()[i].ravel() - x[j].ravel(), d) / np.dot(d, d))
            res = np.abs(lam * x[i] + (1 - lam) * x[j] - xm.numpy()[i]).max()
            if best is None or res < best[0]:
                best = (res, lam, j)
        res, lam, j = best
        assert res < 1e-4
        np.testing.assert_allclose(ym.numpy()[i], lam * y[i] + (1 - lam) * y[j], atol=1e-4)
        lams.append(lam)
    assert 0 < np.min(lams) < 0.99  # something was mixed
    xc, yc, _ = A.cutmix(x, y, _seed(2), alpha=1.0)
    np.testing.assert_allclose(yc.numpy().sum(-1), 1.0, atol=1e-6)
    # the label weight of the own class equals the fraction of own pixels kept (for differing partners)
    changed = (xc.numpy() != x).any(axis=(1, 2, 3))
    assert changed.any()
    for i in np.where(changed)[0]:
        kept = (xc.numpy()[i] == x[i]).mean()
        own = y[i].argmax()
        if yc.numpy()[i, own] < 1.0 and not np.allclose(yc.numpy()[i], y[i]):
            np.testing.assert_allclose(yc.numpy()[i, own], kept, atol=1e-5)
    # 3D volumes and masks: cutmix pastes masks, mixup blends them
    vol = rng.random((4, 6, 8, 8, 1)).astype(np.float32)
    mk = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (4, 6, 8, 8))]
    xv, _, mv = A.cutmix(vol, None, _seed(3), masks=mk)
    assert set(np.unique(mv.numpy())) <= {0.0, 1.0}
    np.testing.assert_allclose(mv.numpy().sum(-1), 1.0)
    _, _, mb = A.mixup(vol, None, _seed(4), masks=mk)
    np.testing.assert_allclose(mb.numpy().sum(-1), 1.0, atol=1e-6)


def test_op_config_validation():
    with pytest.raises(ValueError, match="augmentation op must be one of"):
        OpConfig("twirl")
    with pytest.raises(ValueError, match="p must be in"):
        OpConfig("flip", p=1.5)
    with pytest.raises(ValueError, match="policy must be one of"):
        AugmentConfig.policy("extreme")
