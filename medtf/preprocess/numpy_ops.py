"""The NumPy reference of every preprocessing step (what the converter, ``medtf predict`` and the edge
runtime run; ``medtf.preprocess.tf_ops`` is its graph twin, tested equal to it).

Pixel-value steps follow DICOM PS3.3 and pydicom (MONOCHROME1 inversion over the stored range, the
Modality LUT, VOI windows); geometric steps follow SimpleITK's ``ResampleImageFilter`` (spacing) and
``tf.image.resize`` without antialiasing (size). Arrays are channels last: (H, W, C) or (D, H, W, C).
NumPy only (pydicom is imported lazily by :func:`modality_lut`).
"""

from __future__ import annotations

import numpy as np

from medtf.preprocess.grid import AxisMap, expand_spacing, resample_spacings, resampled_shape, stage_spacing
from medtf.preprocess.spec import Chain, Preprocessing

# ------------------------------------------------------------------------------------- pixel values


def invert_monochrome1(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """MONOCHROME1 → MONOCHROME2 over the stored range, never the image's own min/max.

    Returns ``2^bits - 1 - v`` (unsigned) or ``-1 - v`` (signed, i.e. ``min + max - v`` over the signed
    range) in ``arr``'s dtype; values outside the stored range are clipped into it first.

    Raises:
        ValueError: non-integer stored values.
    """
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError("MONOCHROME1 inversion needs integer stored values")
    wide = arr.astype(np.int64)
    if signed:
        lo, hi = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    else:
        lo, hi = 0, 2**bits_stored - 1
    np.clip(wide, lo, hi, out=wide)
    return (lo + hi - wide).astype(arr.dtype)


def _smallest_int(lo: int, hi: int, prefer: np.dtype) -> np.dtype:
    for dt in (prefer, np.dtype(np.int16), np.dtype(np.int32), np.dtype(np.int64)):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return dt
    return np.dtype(np.int64)


def modality_lut(arr: np.ndarray, ds) -> tuple[np.ndarray, str]:
    """:func:`pydicom.pixels.apply_modality_lut`, but exact integers stay integers.

    Returns:
        (values, how) with how in {"none", "lut", "rescale_int", "rescale_float"}.
    """
    from pydicom.pixels import apply_modality_lut

    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(arr, ds), "lut"
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope = float(ds.RescaleSlope)
        intercept = float(ds.RescaleIntercept)
        if slope == 1.0 and intercept.is_integer() and np.issubdtype(arr.dtype, np.integer):
            if intercept == 0:
                return arr, "rescale_int"
            if arr.size == 0:
                return arr.astype(np.int32), "rescale_int"
            shift = int(intercept)
            lo, hi = int(arr.min()) + shift, int(arr.max()) + shift
            prefer = arr.dtype if arr.dtype.itemsize >= 2 else np.dtype(np.int16)
            out = arr.astype(np.int64) + shift
            return out.astype(_smallest_int(lo, hi, prefer)), "rescale_int"
        return apply_modality_lut(arr, ds), "rescale_float"
    return arr, "none"


def voi_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 VOI window mapped to [0, 1] (float32), computed in float64.

    Args:
        values: modality values.
        center, width: Window Center / Width.
        function: VOI LUT Function: LINEAR (default), LINEAR_EXACT or SIGMOID.

    Raises:
        ValueError: width invalid for the function (LINEAR needs >= 1, the others > 0) or unknown function.
    """
    x = np.asarray(values, dtype=np.float64)
    function = (function or "LINEAR").upper()
    if function == "LINEAR":
        if width < 1:
            raise ValueError("Window Width must be >= 1 for LINEAR")
        if width == 1:
            y = (x > center - 0.5).astype(np.float64)
        else:
            y = (x - (center - 0.5)) / (width - 1) + 0.5
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError("Window Width must be > 0 for LINEAR_EXACT")
        y = (x - center) / width + 0.5
    elif function == "SIGMOID":
        if width <= 0:
            raise ValueError("Window Width must be > 0 for SIGMOID")
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    else:
        raise ValueError(f"unsupported VOI LUT Function {function}")
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def window(x: np.ndarray, width: float, level: float) -> np.ndarray:
    """A (width, level) window as channel values: pydicom's LINEAR VOI function mapped to [0, 1]."""
    return voi_window(x, level, width, "LINEAR")


def apply_intensity(image: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """The intensity step of ``spec`` on a channels-last array (float32 out; "window": one channel per
    window of the channel mean)."""
    x = np.asarray(image, dtype=np.float32)
    if spec.intensity == "window":
        base = x.mean(axis=-1) if x.shape[-1] > 1 else x[..., 0]
        return np.stack([window(base, w, l) for w, l in spec.windows], axis=-1)
    if spec.intensity == "zscore":
        mean = np.float32(spec.mean) if spec.mean is not None else x.mean(dtype=np.float32)
        std = np.float32(spec.std) if spec.std is not None else x.std(dtype=np.float32)
        return ((x - mean) / max(std, np.float32(1e-6))).astype(np.float32)
    if spec.intensity == "range":
        lo, hi = (np.float32(v) for v in spec.value_range)
        return ((np.clip(x, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    if spec.intensity == "scale":
        return (x / np.float32(spec.scale)).astype(np.float32)
    return x


def map_channels(x: np.ndarray, channels: int | None) -> np.ndarray:
    """Repeat one channel to ``channels``, or average several to one.

    Raises:
        ValueError: any other channel change (the message names both counts).
    """
    if channels is None or x.shape[-1] == channels:
        return x
    if x.shape[-1] == 1:
        return np.repeat(x, channels, axis=-1)
    if channels == 1:
        return x.mean(axis=-1, keepdims=True, dtype=np.float32)
    raise ValueError(f"cannot map {x.shape[-1]} channels to {channels}")


# -------------------------------------------------------------------------------------- geometry


def _check_size(x: np.ndarray, size, what: str = "size") -> tuple[int, ...]:
    sd = x.ndim - 1
    size = tuple(int(s) for s in size)
    if len(size) == 1 and sd > 1:
        size = size * sd
    if len(size) != sd:
        raise ValueError(f"{what} needs {sd} values for an image of shape {x.shape}. Received: {list(size)}")
    return size


def _linear_axis(x: np.ndarray, axis: int, out: int) -> np.ndarray:
    """Half-pixel-centre linear resampling of one axis (``tf.image.resize`` bilinear, no antialias), in
    float32 like TensorFlow's kernel."""
    n = x.shape[axis]
    if n == out:
        return x
    src = (np.arange(out, dtype=np.float32) + np.float32(0.5)) * np.float32(n / out) - np.float32(0.5)
    src = np.clip(src, np.float32(0.0), np.float32(n - 1))
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    shape = [1] * x.ndim
    shape[axis] = out
    frac = (src - lo).astype(np.float32).reshape(shape)
    a = np.take(x, lo, axis=axis)
    b = np.take(x, hi, axis=axis)
    return a + (b - a) * frac


def resize(image: np.ndarray, size, method: str = "linear") -> np.ndarray:
    """Resize the spatial axes of a channels-last array to ``size``.

    Args:
        image: (H, W, C) or (D, H, W, C).
        size: one target extent per spatial axis.
        method: "linear" (bi/trilinear, half-pixel centres, as ``tf.image.resize`` without
            antialiasing; float32 out) or "nearest" (half-pixel centres as ``tf.image.resize``
            nearest; dtype kept — for masks).

    Raises:
        ValueError: wrong number of sizes or unknown method.
    """
    x = np.asarray(image)
    size = _check_size(x, size)
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


def crop_or_pad(image: np.ndarray, size, fill: float = 0.0) -> np.ndarray:
    """Centre crop / pad the spatial axes to ``size`` (``tf.image.resize_with_crop_or_pad``'s rule per
    axis: crop ``(n - out) // 2`` leading, pad ``(out - n) // 2`` leading); values copied exactly, dtype kept."""
    x = np.asarray(image)
    size = _check_size(x, size)
    for axis, out in enumerate(size):
        n = x.shape[axis]
        if n > out:
            start = (n - out) // 2
            x = np.take(x, np.arange(start, start + out), axis=axis)
        elif n < out:
            before = (out - n) // 2
            pad = [(0, 0)] * x.ndim
            pad[axis] = (before, out - n - before)
            x = np.pad(x, pad, constant_values=np.asarray(fill).astype(x.dtype))
    return x


def resample(image: np.ndarray, in_spacing, out_spacing, method: str = "linear", default=None) -> np.ndarray:
    """Resample the spatial axes from ``in_spacing`` to ``out_spacing`` (mm, array axis order).

    SimpleITK ``ResampleImageFilter`` semantics in index space: output voxel ``j`` sits at input
    continuous index ``j * out / in`` (the first voxel keeps its position); linear interpolation clamps
    at the last voxel; a voxel whose position falls outside the input (index ≥ n − 0.5) takes
    ``default`` (the image minimum when None). Computed in float64; "linear" returns float32,
    "nearest" keeps the dtype (masks).

    Raises:
        ValueError: spacing values that do not fit the image.
    """
    x = np.asarray(image)
    sd = x.ndim - 1
    in_sp = expand_spacing(in_spacing, sd, "input spacing")
    out_sp = expand_spacing(out_spacing, sd)
    if in_sp == out_sp:
        return x if method == "nearest" else x.astype(np.float32)
    if method not in ("linear", "nearest"):
        raise ValueError(f"method must be 'linear' or 'nearest'. Received: {method!r}")
    out_shape = resampled_shape(x.shape[:sd], in_sp, out_sp)
    fill = (x.min() if x.size else 0) if default is None else default
    if method == "linear":
        amap = AxisMap(tuple(x.shape[:sd]), tuple(out_shape), (0.0,) * sd, tuple(t / s for s, t in zip(in_sp, out_sp)))
        return sample_linear(x, amap, fill)
    valid = np.ones(out_shape, dtype=bool)
    y = x
    for axis, (n, m, s, t) in enumerate(zip(x.shape[:sd], out_shape, in_sp, out_sp)):
        c = np.arange(m, dtype=np.float64) * (t / s)
        shape = [1] * sd
        shape[axis] = m
        valid &= (c < n - 0.5).reshape(shape)
        y = np.take(y, np.minimum(np.floor(c + 0.5).astype(np.int64), n - 1), axis=axis)
    y = np.where(valid[..., None], y, fill)
    return y.astype(x.dtype)


def sample_linear(x: np.ndarray, amap: AxisMap, fill: float) -> np.ndarray:
    """Sample the channels-last ``x`` on the output grid of ``amap`` (output index ``r`` → input index
    ``offset + scale·r``) with separable linear interpolation (clamped inside the grid, float64, float32 out);
    output voxels whose position lies outside ``[-0.5, n - 0.5)`` on any axis take ``fill`` — the rule of
    :func:`medtf.preprocess.resample` (outside) and :func:`medtf.preprocess.crop_or_pad` (padding)."""
    y = np.asarray(x, dtype=np.float64)
    sd = y.ndim - 1
    valid = np.ones(amap.out_shape, dtype=bool)
    for axis, (n, m, o, s) in enumerate(zip(y.shape[:sd], amap.out_shape, amap.offset, amap.scale)):
        c = o + s * np.arange(m, dtype=np.float64)
        shape = [1] * sd
        shape[axis] = m
        valid &= ((c >= -0.5 - 1e-9) & (c < n - 0.5)).reshape(shape)
        cc = np.clip(c, 0.0, n - 1)
        lo = np.floor(cc).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        w = (cc - lo).reshape(shape + [1])
        a = np.take(y, lo, axis=axis)
        y = a + (np.take(y, hi, axis=axis) - a) * w
    y = np.where(valid[..., None], y, fill)
    return y.astype(np.float32)


# -------------------------------------------------------------------------------------- stages


def apply(image: np.ndarray, spec: Preprocessing, spacing=None, *, mask: np.ndarray | None = None,
          keep_dtype: bool = False):
    """One stage: resample → intensity → channels → size.

    Args:
        image: channels-last array of raw (modality) values.
        spec: the stage.
        spacing: the image's spacing (mm, array axis order); needed when ``spec.spacing`` is set.
        mask: optional (spatial...) or (spatial..., K) integer mask, moved with nearest neighbour.
        keep_dtype: keep the input dtype while no step changes values (the converter stores raw values
            exactly); otherwise the result is float32.

    Returns:
        The array, or ``(array, mask)`` when a mask is given.

    Raises:
        ValueError: the spec does not fit the image (named), or a spacing step without ``spacing``.
    """
    x = np.asarray(image)
    if x.ndim not in (3, 4):
        raise ValueError(f"image must be (H, W, C) or (D, H, W, C). Received shape {x.shape}")
    sd = x.ndim - 1
    spacings = resample_spacings(spec, spacing, sd)
    if spacings is not None:
        in_sp, out_sp = spacings
        if mask is not None:
            mask = _mask_op(mask, sd, lambda m: resample(m, in_sp, out_sp, "nearest", default=0))
        x = resample(x, in_sp, out_sp, spec.interpolation)
    if spec.intensity != "none" or not keep_dtype:
        x = apply_intensity(x, spec)
    if spec.channels == 1 and x.shape[-1] > 1:
        x = map_channels(x, 1)
    if spec.size is not None:
        size = _check_size(x, spec.size, "preprocessing.size")
        if spec.resize == "resize":
            if mask is not None:
                mask = _mask_op(mask, sd, lambda m: resize(m, size, "nearest"))
            if tuple(x.shape[:sd]) != size:
                x = resize(x, size, spec.interpolation)
        else:
            fill = 0.0 if spec.pad == "zero" or not x.size else x.min()
            if mask is not None:
                mask = _mask_op(mask, sd, lambda m: crop_or_pad(m, size, 0))
            x = crop_or_pad(x, size, fill)
    x = map_channels(x, spec.channels)
    if not keep_dtype:
        x = x.astype(np.float32, copy=False)
    return x if mask is None else (x, mask)


def _mask_op(mask: np.ndarray, sd: int, fn):
    m = np.asarray(mask)
    if m.ndim == sd:
        return fn(m[..., None])[..., 0]
    return fn(m)


def apply_chain(image: np.ndarray, chain: Chain | Preprocessing, spacing=None, *, mask=None):
    """Every stage of ``chain`` in order (float32 out); ``spacing`` follows the geometric steps."""
    steps = chain.steps if isinstance(chain, Chain) else (chain,)
    x = np.asarray(image)
    for spec in steps:
        sd = x.ndim - 1
        out = apply(x, spec, spacing, mask=mask)
        new_spacing = None if spacing is None else stage_spacing(spec, x.shape[:sd], spacing)
        x, mask = out if mask is not None else (out, None)
        spacing = new_spacing
    x = np.asarray(x, dtype=np.float32)
    return x if mask is None else (x, mask)
