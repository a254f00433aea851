"""Sliding-window inference for 2D and 3D images with overlap and Gaussian (or constant) weighting.

Windows are predicted in batches; each output window is multiplied by an importance map and
accumulated, and the sum is divided by the summed importance (accumulated in float64, so an
identity model returns its input exactly). Images smaller than the window are zero padded and the
padding is cropped from the result: the output always has the input's spatial size.
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np

MODES = ("gaussian", "constant")


def importance_map(window, mode: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """Weights of one window: constant ones, or a Gaussian centred on the window with
    std ``sigma_scale × window`` per axis, scaled to max 1 and floored at a small positive value
    (as MONAI/nnU-Net do) so border voxels still count."""
    window = tuple(int(w) for w in window)
    if mode == "constant":
        return np.ones(window, np.float64)
    if mode != "gaussian":
        raise ValueError(f"mode must be one of {MODES}. Received: {mode!r}")
    w = np.ones(window, np.float64)
    for axis, n in enumerate(window):
        r = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        sigma = max(sigma_scale * n, 1e-6)
        g = np.exp(-0.5 * (r / sigma) ** 2)
        shape = [1] * len(window)
        shape[axis] = n
        w = w * g.reshape(shape)
    w = w / w.max()
    return np.maximum(w, max(w[w > 0].min(), 1e-3))


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets covering ``size`` with windows of ``window`` and fractional ``overlap``; the last
    window ends at the edge."""
    if size <= window:
        return [0]
    stride = max(1, int(round(window * (1.0 - overlap))))
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def _predict(predictor, batch: np.ndarray) -> np.ndarray:
    if hasattr(predictor, "predict_on_batch"):
        out = predictor.predict_on_batch(batch)
    else:
        out = predictor(batch)
    if isinstance(out, (list, tuple)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return np.asarray(out)


def sliding_window_inference(predictor: Callable, image, window, overlap: float = 0.5, mode: str = "gaussian",
                             batch_size: int = 4, sigma_scale: float = 0.125, progress: bool = False):
    """Predict a large 2D/3D image window by window and stitch full-size outputs.

    Args:
        predictor: a Keras model (``predict_on_batch``) or a callable mapping a (B, *window, C) batch
            to (B, *window, C_out) (NumPy or TF).
        image: (spatial..., C) or batched (B, spatial..., C) NumPy array or tensor; the number of
            spatial axes is ``len(window)``.
        window: window spatial size, e.g. (96, 96) or (64, 128, 128).
        overlap: fraction of overlap between neighbouring windows, in [0, 1).
        mode: "gaussian" (down-weights window borders) or "constant".
        batch_size: windows per predictor call.
        sigma_scale: Gaussian std as a fraction of the window size.
        progress: show a tqdm progress bar.

    Returns:
        Output of shape (spatial..., C_out) (or (B, spatial..., C_out) for a batched input), float32
        — a NumPy array for NumPy input, a ``tf.Tensor`` for tensor input.

    Raises:
        ValueError: bad overlap/window/rank, or a predictor output whose spatial size differs from
            the window.
    """
    window = tuple(int(w) for w in window)
    nd = len(window)
    if nd not in (2, 3) or min(window) < 1:
        raise ValueError(f"window must have 2 or 3 positive sizes. Received: {window}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1). Received: {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: {batch_size}")
    is_tf = not isinstance(image, np.ndarray) and hasattr(image, "numpy")
    arr = np.asarray(image.numpy() if is_tf else image)
    if arr.ndim == nd + 1:
        batched, arr = False, arr[None]
    elif arr.ndim == nd + 2:
        batched = True
    else:
        raise ValueError(f"image must be (spatial..., C) or (B, spatial..., C) with {nd} spatial axes to "
                         f"match window {window}. Received shape: {arr.shape}")
    spatial = arr.shape[1:-1]
    pad = [max(w - s, 0) for w, s in zip(window, spatial)]
    if any(pad):
        arr = np.pad(arr, [(0, 0)] + [(0, p) for p in pad] + [(0, 0)])
    full = arr.shape[1:-1]
    weights = importance_map(window, mode, sigma_scale)
    starts = list(itertools.product(*[window_starts(n, w, overlap) for n, w in zip(full, window)]))
    jobs = [(b, s) for b in range(arr.shape[0]) for s in starts]
    acc = None
    wsum = np.zeros(full, np.float64)
    for s in starts:
        wsum[tuple(slice(o, o + w) for o, w in zip(s, window))] += weights
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="sliding window", unit="win")
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i : i + batch_size]
        batch = np.stack([arr[(b,) + tuple(slice(o, o + w) for o, w in zip(s, window))] for b, s in chunk])
        out = _predict(predictor, batch)
        if out.shape[1:-1] != window or out.shape[0] != len(chunk):
            raise ValueError(f"predictor output shape {out.shape} must be (batch, *window, C_out) = "
                             f"({len(chunk)}, {', '.join(map(str, window))}, C)")
        if acc is None:
            acc = np.zeros((arr.shape[0],) + full + (out.shape[-1],), np.float64)
        for (b, s), o in zip(chunk, out):
            sl = (b,) + tuple(slice(st, st + w) for st, w in zip(s, window))
            acc[sl] += o.astype(np.float64) * weights[..., None]
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    result = (acc / wsum[None, ..., None]).astype(np.float32)
    result = result[(slice(None),) + tuple(slice(0, n) for n in spatial)]
    if not batched:
        result = result[0]
    if is_tf:
        import tensorflow as tf

        return tf.convert_to_tensor(result)
    return result
