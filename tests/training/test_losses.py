"""Every medtf loss equals an independent NumPy reference (rtol 1e-5 / atol 1e-6, float32)."""

from __future__ import annotations

import numpy as np
import pytest

import keras
import tensorflow as tf

from medtf.training import losses as L

RTOL, ATOL = 1e-5, 1e-6
EPS = 1e-7
rng = np.random.default_rng(0)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _sigmoid(z):
    return (1 / (1 + np.exp(-z))).astype(np.float32)


def _np_bce(y, p):
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _np_cce(y, p):
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return -(y * np.log(p)).sum(-1)


def _per_sample(loss, y, p):
    return loss.call(tf.constant(y), tf.constant(p)).numpy()


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------ cross-entropy / focal
def test_binary_crossentropy_with_class_weights():
    y = rng.integers(0, 2, (16, 1)).astype(np.float32)
    p = _sigmoid(rng.normal(size=(16, 1)))
    ref = _np_bce(y, p).mean(-1)
    _close(_per_sample(L.get_loss("crossentropy", task="binary"), y, p), ref)
    w = np.where(y[:, 0] == 1, 3.0, 0.5)
    _close(_per_sample(L.get_loss("crossentropy", task="binary", class_weights=[0.5, 3.0]), y, p), ref * w)
    # reduced value = mean over the batch (Keras sum_over_batch_size)
    _close(L.get_loss("crossentropy", task="binary")(y, p).numpy(), ref.mean())


def test_multilabel_crossentropy_positive_weights():
    y = rng.integers(0, 2, (12, 3)).astype(np.float32)
    p = _sigmoid(rng.normal(size=(12, 3)))
    ref = _np_bce(y, p).mean(-1)
    _close(_per_sample(L.get_loss("crossentropy", task="multilabel"), y, p), ref)
    pw = np.array([1.0, 2.0, 4.0])
    w = (y * pw + (1 - y)).mean(-1)
    _close(_per_sample(L.get_loss("crossentropy", task="multilabel", class_weights=pw), y, p), ref * w)


@pytest.mark.parametrize("sparse", [False, True])
def test_categorical_crossentropy_one_hot_and_sparse(sparse):
    k = rng.integers(0, 4, 20)
    p = _softmax(rng.normal(size=(20, 4)))
    onehot = np.eye(4, dtype=np.float32)[k]
    y = k.reshape(-1, 1).astype(np.int64) if sparse else onehot
    ref = _np_cce(onehot, p)
    _close(_per_sample(L.get_loss("crossentropy", task="multiclass"), y, p), ref)
    cw = np.array([1.0, 2.0, 0.5, 4.0])
    _close(_per_sample(L.get_loss("crossentropy", task="multiclass", class_weights=cw), y, p), ref * cw[k])


def test_binary_focal_matches_numpy_and_gamma0_is_bce():
    y = rng.integers(0, 2, (16, 1)).astype(np.float32)
    p = _sigmoid(rng.normal(size=(16, 1)) * 2)
    gamma = 2.0
    pc = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    pt = y * pc + (1 - y) * (1 - pc)
    ref = (_np_bce(y, p) * (1 - pt) ** gamma).mean(-1)
    _close(_per_sample(L.get_loss("focal", task="binary", gamma=gamma), y, p), ref)
    alpha = 0.25
    at = y * alpha + (1 - y) * (1 - alpha)
    _close(_per_sample(L.get_loss("focal", task="binary", gamma=gamma, alpha=alpha), y, p),
           (at * _np_bce(y, p) * (1 - pt) ** gamma).mean(-1))
    _close(_per_sample(L.get_loss("focal", task="binary", gamma=0.0), y, p), _np_bce(y, p).mean(-1))
    # and equal to the Keras cross-entropy object itself
    _close(L.get_loss("focal", task="binary", gamma=0.0)(y, p).numpy(), keras.losses.BinaryCrossentropy()(y, p).numpy())


def test_categorical_focal_matches_numpy_and_gamma0_is_ce():
    k = rng.integers(0, 3, 24)
    y = np.eye(3, dtype=np.float32)[k]
    p = _softmax(rng.normal(size=(24, 3)) * 2)
    pc = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    gamma = 1.5
    ref = (-(y * np.log(pc)) * (1 - pc) ** gamma).sum(-1)
    _close(_per_sample(L.get_loss("focal", task="multiclass", gamma=gamma), y, p), ref)
    _close(_per_sample(L.get_loss("focal", task="multiclass", gamma=gamma, alpha=0.25), y, p), 0.25 * ref)
    g0 = L.get_loss("focal", task="multiclass", gamma=0.0)
    _close(_per_sample(g0, y, p), _np_cce(y, p))
    _close(g0(y, p).numpy(), keras.losses.CategoricalCrossentropy()(y, p).numpy())
    # sparse targets and class weights
    cw = np.array([2.0, 1.0, 0.5])
    _close(_per_sample(L.get_loss("focal", task="multiclass", gamma=gamma, class_weights=cw), k.reshape(-1, 1), p),
           ref * cw[k])


# ------------------------------------------------------------------ overlap losses
def _seg(shape=(3, 8, 9), c=3, seed=1):
    r = np.random.default_rng(seed)
    lab = r.integers(0, c, shape)
    p = _softmax(r.normal(size=shape + (c,)) * 2)
    return lab, np.eye(c, dtype=np.float32)[lab], p


def _np_terms(y, p):
    axes = tuple(range(1, y.ndim - 1))
    y, p = y.astype(np.float64), p.astype(np.float64)
    return (y * p).sum(axes), ((1 - y) * p).sum(axes), (y * (1 - p)).sum(axes)


@pytest.mark.parametrize("spatial", [(8, 9), (4, 6, 5)])
def test_dice_loss(spatial):
    lab, y, p = _seg((2,) + spatial)
    s = 1e-5
    tp, fp, fn = _np_terms(y, p)
    axes = tuple(range(1, y.ndim - 1))
    dice = (2 * (y * p).sum(axes) + s) / (y.sum(axes) + p.sum(axes) + s)
    _close(_per_sample(L.get_loss("dice", task="segmentation"), y, p), 1 - dice.mean(-1))
    # sparse (..., 1) labels give the same value
    _close(_per_sample(L.get_loss("dice", task="segmentation"), lab[..., None].astype(np.int64), p), 1 - dice.mean(-1))
    w = np.array([0.0, 1.0, 2.0])
    _close(_per_sample(L.get_loss("dice", task="segmentation", class_weights=w), y, p), 1 - (dice * w).sum(-1) / w.sum())


def test_dice_perfect_prediction_is_zero_and_empty_class_is_smoothed():
    lab = np.zeros((1, 6, 6), int)
    lab[0, :3] = 1
    y = np.eye(3, dtype=np.float32)[lab]  # class 2 absent
    _close(_per_sample(L.DiceLoss(), y, y.copy()), [0.0])


def test_dice_ce_loss():
    lab, y, p = _seg((2, 7, 7))
    s = 1e-5
    axes = (1, 2)
    dice = (2 * (y * p).sum(axes) + s) / (y.sum(axes) + p.sum(axes) + s)
    ce = _np_cce(y, p).mean(axis=(1, 2))
    _close(_per_sample(L.DiceCELoss(dice_weight=0.7, ce_weight=0.3), y, p), 0.7 * (1 - dice.mean(-1)) + 0.3 * ce)
    # one sigmoid channel: binary CE
    yb = (lab == 1).astype(np.float32)[..., None]
    pb = _sigmoid(rng.normal(size=yb.shape))
    dice_b = (2 * (yb * pb).sum(axes) + s) / (yb.sum(axes) + pb.sum(axes) + s)
    _close(_per_sample(L.DiceCELoss(), yb, pb), (1 - dice_b.mean(-1)) + _np_bce(yb, pb).mean(axis=(1, 2, 3)))


def test_tversky_and_focal_tversky():
    _, y, p = _seg((2, 6, 5, 4))
    a, b, g, s = 0.3, 0.7, 0.75, 1e-5
    tp, fp, fn = _np_terms(y, p)
    ti = (tp + s) / (tp + a * fp + b * fn + s)
    _close(_per_sample(L.get_loss("tversky", task="segmentation", alpha=a, beta=b), y, p), (1 - ti).mean(-1))
    _close(_per_sample(L.get_loss("focal_tversky", task="segmentation", alpha=a, beta=b, gamma=g), y, p),
           ((1 - ti) ** g).mean(-1))
    # alpha = beta = 0.5 Tversky is Dice
    _close(_per_sample(L.TverskyLoss(alpha=0.5, beta=0.5), y, p), _per_sample(L.DiceLoss(), y, p))


# ------------------------------------------------------------------ restoration
def _np_ssim(x, y, max_val=1.0, size=11, sigma=1.5):
    """Reference SSIM (Wang et al. 2004) with a 'valid' Gaussian window, as tf.image.ssim defines it."""
    from scipy.signal import correlate

    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(coords**2) / (2 * sigma**2))
    g /= g.sum()
    k = np.outer(g, g)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    out = []
    for xi, yi in zip(x.astype(np.float64), y.astype(np.float64)):
        vals = []
        for ch in range(xi.shape[-1]):
            f = lambda a: correlate(a, k, mode="valid")  # noqa: E731
            a, b = xi[..., ch], yi[..., ch]
            mx, my = f(a), f(b)
            sxx, syy, sxy = f(a * a) - mx**2, f(b * b) - my**2, f(a * b) - mx * my
            lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            cs = (2 * sxy + c2) / (sxx + syy + c2)
            vals.append((lum * cs).mean())
        out.append(np.mean(vals))
    return np.array(out)


def test_l1_ssim_loss_2d_and_3d():
    x = rng.random((3, 16, 16, 2)).astype(np.float32)
    y = np.clip(x + rng.normal(scale=0.1, size=x.shape), 0, 1).astype(np.float32)
    w = 0.84
    ssim = _np_ssim(y, x)
    ref = (1 - w) * np.abs(x - y).mean(axis=(1, 2, 3)) + w * (1 - ssim)
    np.testing.assert_allclose(_per_sample(L.get_loss("l1_ssim", task="restoration"), x, y), ref, rtol=1e-4, atol=1e-5)
    loss7 = L.L1SSIMLoss(ssim_weight=0.5, filter_size=7)
    ref7 = 0.5 * np.abs(x - y).mean(axis=(1, 2, 3)) + 0.5 * (1 - _np_ssim(y, x, size=7))
    np.testing.assert_allclose(_per_sample(loss7, x, y), ref7, rtol=1e-4, atol=1e-5)
    # 3D: SSIM averaged over slices
    v = rng.random((2, 3, 12, 12, 1)).astype(np.float32)
    u = np.clip(v + rng.normal(scale=0.2, size=v.shape), 0, 1).astype(np.float32)
    ssim3 = np.array([_np_ssim(u[i], v[i], size=7).mean() for i in range(2)])
    ref3 = 0.5 * np.abs(v - u).mean(axis=(1, 2, 3, 4)) + 0.5 * (1 - ssim3)
    np.testing.assert_allclose(_per_sample(loss7, v, u), ref3, rtol=1e-4, atol=1e-5)
    _close(_per_sample(loss7, v, v.copy()), np.zeros(2))


# ------------------------------------------------------------------ ordinal
def test_ordinal_loss_cumulative_targets():
    K = 5
    grade = rng.integers(0, K, 30)
    p = _sigmoid(rng.normal(size=(30, K - 1)))
    t = (grade[:, None] > np.arange(K - 1)[None]).astype(np.float32)
    ref = _np_bce(t, p).mean(-1)
    loss = L.get_loss("auto", task="ordinal")
    assert isinstance(loss, L.OrdinalLoss)
    _close(_per_sample(loss, grade.astype(np.int64), p), ref)
    _close(_per_sample(loss, grade.reshape(-1, 1).astype(np.int64), p), ref)
    _close(_per_sample(loss, t, p), ref)  # already-cumulative targets
    cw = np.arange(1, K + 1, dtype=np.float64)
    _close(_per_sample(L.OrdinalLoss(class_weights=cw), grade.astype(np.int64), p), ref * cw[grade])
    np.testing.assert_array_equal(L.cumulative_to_class(tf.constant(t)).numpy(), grade)


# ------------------------------------------------------------------ registry / serialisation
def test_get_loss_auto_and_errors():
    assert isinstance(L.get_loss("auto", task="segmentation"), L.DiceCELoss)
    assert isinstance(L.get_loss("auto", task="restoration"), L.L1SSIMLoss)
    assert L.get_loss("auto", task="multiclass").mode == "categorical"
    with pytest.raises(ValueError, match="loss name"):
        L.get_loss("hinge")
    with pytest.raises(ValueError, match="task"):
        L.get_loss("auto", task="regression")
    with pytest.raises(ValueError, match="class_weights has 2"):
        L.DiceLoss(class_weights=[1, 1]).call(tf.zeros((1, 4, 4, 3)), tf.zeros((1, 4, 4, 3)))


@pytest.mark.parametrize("name", ["crossentropy", "focal", "dice_ce", "focal_tversky", "ordinal"])
def test_losses_serialize_round_trip(name):
    loss = L.get_loss(name, task="segmentation" if "dice" in name or "tversky" in name else "multiclass",
                      class_weights=[1.0, 2.0, 3.0])
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is type(loss)
    assert again.get_config() == loss.get_config()
