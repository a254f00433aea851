"""Inference preprocessing as data: the spec that travels with every model (``model.json``, exports).

Pure Python + NumPy (no TensorFlow), so the edge runtime can import it. ``medtf.data.transforms``
implements the same spec as graph ops; a test checks both agree.

Order of operations (both implementations): intensity → channels → size.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

INTENSITY_KINDS = ("none", "window", "zscore", "range", "scale")
RESIZE_KINDS = ("resize", "crop_or_pad")

#: Window presets (width, level) in HU.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "abdomen": (400.0, 40.0),
    "brain": (80.0, 40.0),
    "bone": (1800.0, 400.0),
}


def parse_window(value: str) -> tuple[float, float]:
    """``"lung"`` or ``"400,40"`` (width,level) → (width, level)."""
    if value in WINDOW_PRESETS:
        return WINDOW_PRESETS[value]
    try:
        w, l = (float(v) for v in value.split(","))
    except ValueError:
        raise ValueError(
            f"window must be a preset {sorted(WINDOW_PRESETS)} or 'WIDTH,LEVEL'. Received: {value!r}"
        ) from None
    if w < 1:
        raise ValueError(f"window width must be >= 1. Received: {w}")
    return w, l


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How raw pixels (modality values) become model input.

    Attributes:
        intensity: "none" | "window" (each (width, level) in ``windows`` → one channel in [0, 1],
            pydicom's linear VOI function) | "zscore" (``mean``/``std``, or per image when None) |
            "range" (clip to ``value_range`` then scale to [0, 1]) | "scale" (divide by ``scale``).
        windows: (width, level) pairs for "window".
        mean, std: fixed statistics for "zscore"; None means per-image statistics.
        value_range: (min, max) for "range".
        scale: divisor for "scale" (255 for 8-bit images).
        size: spatial output size ((H, W) or (D, H, W)); None keeps the input size.
        resize: "resize" (bilinear, 2D/3D) or "crop_or_pad" (centre crop / zero pad).
        channels: channels the model expects; a 1-channel image is repeated to match, 3-channel
            images are averaged to 1 when ``channels == 1``. None keeps the input channels.
    """

    intensity: str = "none"
    windows: tuple[tuple[float, float], ...] = ()
    mean: float | None = None
    std: float | None = None
    value_range: tuple[float, float] | None = None
    scale: float = 1.0
    size: tuple[int, ...] | None = None
    resize: str = "resize"
    channels: int | None = None

    def __post_init__(self):
        if self.intensity not in INTENSITY_KINDS:
            raise ValueError(f"intensity must be one of {INTENSITY_KINDS}. Received: {self.intensity!r}")
        if self.resize not in RESIZE_KINDS:
            raise ValueError(f"resize must be one of {RESIZE_KINDS}. Received: {self.resize!r}")
        if self.intensity == "window" and not self.windows:
            raise ValueError("intensity='window' needs at least one (width, level) in `windows`")
        if self.intensity == "range" and self.value_range is None:
            raise ValueError("intensity='range' needs `value_range=(min, max)`")
        # normalise containers so equality and JSON round trips are exact
        object.__setattr__(self, "windows", tuple(tuple(float(v) for v in w) for w in self.windows))
        if self.value_range is not None:
            object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        if self.size is not None:
            object.__setattr__(self, "size", tuple(int(v) for v in self.size))

    @property
    def output_channels(self) -> int | None:
        if self.channels is not None:
            return self.channels
        if self.intensity == "window":
            return len(self.windows)
        return None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["windows"] = [list(w) for w in self.windows]
        for k in ("value_range", "size"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        d = dict(d)
        d["windows"] = tuple(tuple(w) for w in d.get("windows", ()))
        for k in ("value_range", "size"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def window_numpy(x: np.ndarray, width: float, level: float) -> np.ndarray:
    """pydicom's linear VOI window (PS3.3 C.11.2.1.2.1) mapped to [0, 1], float32."""
    x = np.asarray(x, dtype=np.float64)
    c, w = level - 0.5, width - 1.0
    if w <= 0:
        return (x > c).astype(np.float32)
    y = ((x - c) / w + 0.5)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def apply_intensity_numpy(image: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Intensity + channel step of ``spec`` on a channels-last array; float32 out."""
    x = np.asarray(image, dtype=np.float32)
    if spec.intensity == "window":
        base = x.mean(axis=-1) if x.shape[-1] > 1 else x[..., 0]
        x = np.stack([window_numpy(base, w, l) for w, l in spec.windows], axis=-1)
    elif spec.intensity == "zscore":
        mean = spec.mean if spec.mean is not None else float(x.mean())
        std = spec.std if spec.std is not None else float(x.std())
        x = ((x - mean) / max(std, 1e-6)).astype(np.float32)
    elif spec.intensity == "range":
        lo, hi = spec.value_range
        x = ((np.clip(x, lo, hi) - lo) / max(hi - lo, 1e-6)).astype(np.float32)
    elif spec.intensity == "scale":
        x = (x / np.float32(spec.scale)).astype(np.float32)
    if spec.channels is not None and x.shape[-1] != spec.channels:
        if x.shape[-1] == 1:
            x = np.repeat(x, spec.channels, axis=-1)
        elif spec.channels == 1:
            x = x.mean(axis=-1, keepdims=True)
        else:
            raise ValueError(f"cannot map {x.shape[-1]} channels to {spec.channels}")
    return x


# --------------------------------------------------------------------------------------------
# Size step (NumPy reference). ``medtf.data.transforms`` is the graph twin; a test checks both agree.
# --------------------------------------------------------------------------------------------


def _linear_axis(x: np.ndarray, axis: int, out: int) -> np.ndarray:
    """Half-pixel-centre linear resampling of one axis (``tf.image.resize`` bilinear, no antialias), in
    float32 like TensorFlow's kernel (float64 would differ from it by ~1e-3 on inputs in the hundreds)."""
    n = x.shape[axis]
    if n == out:
        return x
    src = (np.arange(out, dtype=np.float32) + np.float32(0.5)) * np.float32(n / out) - np.float32(0.5)
    src = np.clip(src, np.float32(0.0), np.float32(n - 1))
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = (src - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = out
    frac = frac.reshape(shape)
    a = np.take(x, lo, axis=axis)
    b = np.take(x, hi, axis=axis)
    return a + (b - a) * frac


def resize_numpy(image: np.ndarray, size, method: str = "linear") -> np.ndarray:
    """Resize the spatial axes of a channels-last array to ``size`` (NumPy reference).

    Args:
        image: (H, W, C) or (D, H, W, C).
        size: target spatial size, one value per spatial axis.
        method: "linear" (bilinear/trilinear, half-pixel centres, as ``tf.image.resize`` without
            antialiasing) or "nearest" (for masks; half-pixel centres, as ``tf.image.resize`` nearest).

    Returns:
        float32 array (linear) or the input dtype (nearest), shape ``(*size, C)``.

    Raises:
        ValueError: ``size`` does not match the number of spatial axes, or unknown ``method``.
    """
    x = np.asarray(image)
    size = tuple(int(s) for s in size)
    if len(size) != x.ndim - 1:
        raise ValueError(f"size needs {x.ndim - 1} values for an image of shape {x.shape}. Received: {size}")
    if method == "nearest":
        for axis, out in enumerate(size):
            n = x.shape[axis]
            if n != out:
                idx = np.minimum(np.floor((np.arange(out) + 0.5) * (n / out)).astype(np.int64), n - 1)
                x = np.take(x, idx, axis=axis)
        return x
    if method != "linear":
        raise ValueError(f"method must be 'linear' or 'nearest'. Received: {method!r}")
    x = x.astype(np.float32)
    for axis, out in enumerate(size):
        x = _linear_axis(x, axis, out)
    return x


def crop_or_pad_numpy(image: np.ndarray, size) -> np.ndarray:
    """Centre crop / zero pad the spatial axes to ``size`` (``tf.image.resize_with_crop_or_pad`` rule).

    Cropping removes ``(n - out) // 2`` leading elements; padding adds ``(out - n) // 2`` leading zeros.
    """
    x = np.asarray(image)
    size = tuple(int(s) for s in size)
    if len(size) != x.ndim - 1:
        raise ValueError(f"size needs {x.ndim - 1} values for an image of shape {x.shape}. Received: {size}")
    for axis, out in enumerate(size):
        n = x.shape[axis]
        if n > out:
            start = (n - out) // 2
            x = np.take(x, np.arange(start, start + out), axis=axis)
        elif n < out:
            before = (out - n) // 2
            pad = [(0, 0)] * x.ndim
            pad[axis] = (before, out - n - before)
            x = np.pad(x, pad)
    return x


def apply_numpy(image: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """The whole inference preprocessing of ``spec`` in NumPy: intensity → channels → size; float32.

    This is the reference for ``medtf.data.transforms.apply_preprocessing`` and what an edge runtime
    without TensorFlow runs before the model.
    """
    x = apply_intensity_numpy(image, spec)
    if spec.size is not None:
        if spec.resize == "resize":
            x = resize_numpy(x, spec.size)
        else:
            x = crop_or_pad_numpy(x, spec.size)
    return x.astype(np.float32)
