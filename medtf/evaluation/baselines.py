"""Classical restoration baselines that ``medtf evaluate`` reports beside a restoration model.

* Denoising (target on the input grid): OpenCV non-local means (``cv2.fastNlMeansDenoising``, Buades et al.
  2005) on a 16-bit scaling of the image (``[0, max_val]`` → ``0..65535``, values outside clipped; L1 patch
  distance, which OpenCV needs for 16-bit input; 7×7 template, 21×21 search window), per 2D plane and
  channel. Its strength ``h`` (on the 16-bit scale) is chosen from :data:`NLM_H_GRID` by the mean PSNR on the
  validation split, then applied once to the evaluated split — the baseline is tuned as fairly as the model,
  never on the test images.
* Super-resolution (target grid = k × input grid): bicubic interpolation — OpenCV ``INTER_CUBIC`` (Keys,
  a = −0.75, half-pixel centres) per 2D plane for 2D images; for volumes SciPy's cubic spline
  (``ndimage.zoom(order=3, grid_mode=True)``: half-pixel centres, the same grid as the target).
"""

from __future__ import annotations

import numpy as np

#: Non-local-means strengths tried on the validation split (16-bit scale: h = 2600 ≈ 0.04 of the range).
NLM_H_GRID = (800, 1200, 1600, 2000, 2600, 3200, 4000)


def _planes(x: np.ndarray):
    """(spatial..., C) → iterator over (index, 2D plane) for every 2D plane and channel."""
    lead = x.shape[:-3]
    for idx in np.ndindex(*lead):
        for c in range(x.shape[-1]):
            yield idx + (slice(None), slice(None), c), x[idx + (slice(None), slice(None), c)]


def nlm_denoise(x: np.ndarray, h: float, max_val: float = 1.0) -> np.ndarray:
    """OpenCV non-local means of one image (H, W, C) or volume (D, H, W, C) in ``[0, max_val]``.

    Args:
        x: the image, channels last.
        h: filter strength on the 16-bit scale (``max_val`` ↔ 65535).
        max_val: the top of the value range (1.0 for windowed records).

    Returns:
        float32 array of ``x``'s shape, on ``x``'s scale.
    """
    import cv2

    x = np.asarray(x, dtype=np.float32)
    u16 = np.round(np.clip(x / max_val, 0.0, 1.0) * 65535.0).astype(np.uint16)
    out = np.empty(x.shape, np.float32)
    for idx, plane in _planes(u16):
        r = cv2.fastNlMeansDenoising(np.ascontiguousarray(plane), [float(h)], None, 7, 21, cv2.NORM_L1)
        out[idx] = r.astype(np.float32) / 65535.0 * max_val
    return out


def bicubic_upsample(x: np.ndarray, size) -> np.ndarray:
    """Bicubic interpolation of (H, W, C) / (D, H, W, C) ``x`` onto the spatial ``size`` (see the module
    docstring for the 2D / 3D kernels). Returns float32."""
    x = np.asarray(x, dtype=np.float32)
    size = tuple(int(s) for s in size)
    if x.ndim == 3:
        import cv2

        planes = [cv2.resize(np.ascontiguousarray(x[..., c]), (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
                  for c in range(x.shape[-1])]
        return np.stack(planes, axis=-1).astype(np.float32)
    from scipy import ndimage

    zoom = [m / n for m, n in zip(size, x.shape[:-1])] + [1.0]
    return ndimage.zoom(x, zoom, order=3, grid_mode=True, mode="grid-mirror").astype(np.float32)


def choose_nlm_h(xs, ys, max_val: float = 1.0, grid=NLM_H_GRID) -> tuple[float, dict]:
    """The NLM strength of ``grid`` with the best mean PSNR of ``nlm_denoise(x)`` against ``y`` over the pairs.

    Returns:
        ``(h, {h: mean PSNR})``; ties go to the smaller h.
    """
    from medtf.evaluation.metrics import restoration_metrics

    scores = {}
    for h in grid:
        psnr = [restoration_metrics(y[None], nlm_denoise(x, h, max_val)[None], max_val=max_val)["psnr"][0]
                for x, y in zip(xs, ys)]
        scores[float(h)] = float(np.mean(psnr))
    best = max(scores, key=lambda h: (round(scores[h], 9), -h))
    return best, scores
