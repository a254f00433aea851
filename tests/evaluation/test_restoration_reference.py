"""PSNR / SSIM of ``restoration_metrics`` (tf.image) against independent references: scikit-image when it is
installed, else the PSNR formula in NumPy and a direct implementation of Wang et al. (2004) SSIM with the same
Gaussian window (11×11, σ 1.5, K1 0.01, K2 0.03, statistics over the valid window positions); tolerance 1e-4.
Also the classical baselines against OpenCV called directly."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from medtf.evaluation.metrics import restoration_metrics


def _psnr(a, b, max_val):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10.0 * np.log10(max_val ** 2 / mse)


def _ssim_wang(a, b, max_val, size=11, sigma=1.5, k1=0.01, k2=0.03):
    """Mean SSIM of two (H, W, C) images: Gaussian-weighted local means, variances and covariance (Wang et al.,
    IEEE TIP 13(4), 2004, eq. 13 with the window of section III.C), averaged over valid positions and channels."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    r = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    w = g / g.sum()
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    out = []
    for c in range(a.shape[-1]):
        pa = sliding_window_view(a[..., c], (size, size))
        pb = sliding_window_view(b[..., c], (size, size))
        mu_a = (pa * w).sum(axis=(-2, -1))
        mu_b = (pb * w).sum(axis=(-2, -1))
        var_a = (pa ** 2 * w).sum(axis=(-2, -1)) - mu_a ** 2
        var_b = (pb ** 2 * w).sum(axis=(-2, -1)) - mu_b ** 2
        cov = (pa * pb * w).sum(axis=(-2, -1)) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
        out.append(s.mean())
    return float(np.mean(out))


def _pairs(shape, seed=0, max_val=1.0):
    rng = np.random.default_rng(seed)
    clean = rng.random(shape).astype(np.float32) * max_val
    noisy = np.clip(clean + rng.normal(0, 0.1 * max_val, shape), 0, max_val).astype(np.float32)
    return clean, noisy


@pytest.mark.parametrize("shape,max_val", [((3, 32, 40, 1), 1.0), ((2, 24, 24, 3), 255.0), ((2, 9, 12, 1), 1.0)])
def test_psnr_ssim_2d_match_an_independent_reference(shape, max_val):
    clean, noisy = _pairs(shape, max_val=max_val)
    m = restoration_metrics(clean, noisy, max_val=max_val)
    size = min(11, shape[1], shape[2])
    try:
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity

        ref_psnr = [peak_signal_noise_ratio(a, b, data_range=max_val) for a, b in zip(clean, noisy)]
        ref_ssim = [structural_similarity(a, b, data_range=max_val, channel_axis=-1, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False, win_size=size) for a, b in zip(clean, noisy)]
    except ImportError:
        ref_psnr = [_psnr(a, b, max_val) for a, b in zip(clean, noisy)]
        ref_ssim = [_ssim_wang(a, b, max_val, size=size) for a, b in zip(clean, noisy)]
    np.testing.assert_allclose(m["psnr"], ref_psnr, rtol=1e-4)
    np.testing.assert_allclose(m["ssim"], ref_ssim, atol=1e-4)
    assert m["psnr_mean"] == pytest.approx(np.mean(ref_psnr), rel=1e-4)


def test_psnr_ssim_volumes_whole_volume_mse_and_mean_over_slices():
    clean, noisy = _pairs((2, 4, 20, 22, 1), seed=1)
    m = restoration_metrics(clean, noisy)
    np.testing.assert_allclose(m["psnr"], [_psnr(a, b, 1.0) for a, b in zip(clean, noisy)], rtol=1e-4)
    ref = [np.mean([_ssim_wang(a[d], b[d], 1.0) for d in range(a.shape[0])]) for a, b in zip(clean, noisy)]
    np.testing.assert_allclose(m["ssim"], ref, atol=1e-4)


def test_classical_baselines_are_opencv():
    import cv2

    from medtf.evaluation import baselines

    clean, noisy = _pairs((1, 40, 48, 1), seed=2)
    got = baselines.nlm_denoise(noisy[0], 2600)
    u16 = np.round(np.clip(noisy[0, ..., 0], 0, 1) * 65535).astype(np.uint16)
    ref = cv2.fastNlMeansDenoising(u16, [2600.0], None, 7, 21, cv2.NORM_L1).astype(np.float32) / 65535
    np.testing.assert_allclose(got[..., 0], ref, atol=1e-7)
    assert _psnr(clean[0], got, 1.0) != _psnr(clean[0], noisy[0], 1.0)
    h, scores = baselines.choose_nlm_h([noisy[0]], [clean[0]], grid=(800, 2600))
    assert h == max(scores, key=scores.get) and set(scores) == {800.0, 2600.0}
    small = clean[0, ::2, ::2]
    up = baselines.bicubic_upsample(small, (40, 48))
    np.testing.assert_allclose(up[..., 0], cv2.resize(small[..., 0], (48, 40), interpolation=cv2.INTER_CUBIC), atol=1e-7)
