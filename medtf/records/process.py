"""Processing applied while converting: resample to a spacing, window, resize/crop/pad, choose dtype.

Pure NumPy / SimpleITK (no TensorFlow), one image in, one image out, so the converter's workers (and a
Beam pipeline) can run it. Order of operations: resample (linear for the image, nearest neighbour for
the mask) → intensity (raw modality values, or one [0, 1] channel per window) → size (resize with the
same half-pixel-centre convention as ``tf.image.resize``, or centre crop / pad). Geometry (spacing,
origin) is updated at each step so records keep physical coordinates.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from medtf.data.spec import parse_window, window_numpy
from medtf.io.types import Image

INTENSITIES = ("raw", "window")
RESIZE_KINDS = ("resize", "crop_or_pad")

#: Storage dtypes in the order the converter prefers them; ``join_dtypes`` picks the narrowest that holds all.
_INT_RANGES = {
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "uint16": (0, 65535),
    "int32": (-(2**31), 2**31 - 1),
}


class ProcessError(ValueError):
    """An image cannot be processed with the requested options (message names the option; no PHI)."""


@dataclasses.dataclass(frozen=True)
class ProcessOptions:
    """What the converter does to each decoded image.

    Attributes:
        intensity: "raw" keeps modality values (HU for CT) exactly; "window" stores one float32 channel
            in [0, 1] per (width, level) of ``windows`` (pydicom's linear VOI function).
        windows: (width, level) pairs for ``intensity="window"``.
        spacing: target spacing in mm in the image's spatial axis order ((row, col) or (slice, row,
            col)); a single value applies to every axis; None keeps the source spacing.
        size: output spatial size ((H, W) or (D, H, W)); None keeps the size after resampling.
        resize: "resize" (linear interpolation, nearest for masks) or "crop_or_pad" (centre crop, pad
            with the image minimum for raw values and 0 for windows).
        image_dtype: storage dtype to force; None lets :func:`natural_dtype` choose per image.
    """

    intensity: str = "raw"
    windows: tuple[tuple[float, float], ...] = ()
    spacing: tuple[float, ...] | None = None
    size: tuple[int, ...] | None = None
    resize: str = "resize"
    image_dtype: str | None = None

    def __post_init__(self):
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity must be one of {INTENSITIES}. Received: {self.intensity!r}")
        if self.resize not in RESIZE_KINDS:
            raise ValueError(f"resize must be one of {RESIZE_KINDS}. Received: {self.resize!r}")
        windows = tuple(
            parse_window(w) if isinstance(w, str) else (float(w[0]), float(w[1])) for w in self.windows
        )
        object.__setattr__(self, "windows", windows)
        if self.intensity == "window" and not windows:
            raise ValueError("intensity='window' needs at least one window (a preset name or 'WIDTH,LEVEL')")
        if self.intensity == "raw" and windows:
            raise ValueError(f"windows {windows} given with intensity='raw'; use intensity='window'")
        if self.spacing is not None:
            sp = tuple(float(s) for s in self.spacing)
            if not sp or any(not math.isfinite(s) or s <= 0 for s in sp):
                raise ValueError(f"spacing must be positive mm values. Received: {self.spacing}")
            object.__setattr__(self, "spacing", sp)
        if self.size is not None:
            sz = tuple(int(s) for s in self.size)
            if not sz or any(s < 1 for s in sz):
                raise ValueError(f"size must be positive integers. Received: {self.size}")
            object.__setattr__(self, "size", sz)
        if self.image_dtype is not None and self.image_dtype not in ("uint8", "uint16", "int16", "int32", "float32"):
            raise ValueError(f"image_dtype must be uint8|uint16|int16|int32|float32. Received: {self.image_dtype!r}")

    def to_dict(self) -> dict:
        return {
            "intensity": self.intensity,
            "windows": [list(w) for w in self.windows],
            "spacing": None if self.spacing is None else list(self.spacing),
            "size": None if self.size is None else list(self.size),
            "resize": self.resize,
            "image_dtype": self.image_dtype,
        }


# ------------------------------------------------------------------------------------------ dtypes


def natural_dtype(array: np.ndarray) -> str:
    """The narrowest storage dtype holding every value of ``array`` exactly (float → float32).

    Integer-valued float arrays (HU after an integer rescale) are stored as integers.
    """
    a = np.asarray(array)
    if a.size == 0:
        return "uint8"
    if a.dtype.kind == "b":
        return "uint8"
    if a.dtype.kind in "iu":
        lo, hi = int(a.min()), int(a.max())
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            return "float32"
        lo, hi = float(a.min()), float(a.max())
        if lo < -(2**31) or hi > 2**31 - 1 or not np.array_equal(a, np.trunc(a)):
            return "float32"
    else:
        raise ProcessError(f"unsupported pixel dtype {a.dtype}")
    for name, (mn, mx) in _INT_RANGES.items():
        if lo >= mn and hi <= mx:
            return name
    return "float32" if a.dtype.kind == "f" else "int32"  # pragma: no cover - int64 beyond int32


def join_dtypes(dtypes) -> str:
    """The narrowest storage dtype that holds values of every dtype in ``dtypes`` exactly."""
    ds = set(dtypes)
    if not ds:
        return "uint8"
    if "float32" in ds:
        return "float32"
    if "int32" in ds:
        return "int32"
    if "uint16" in ds and "int16" in ds:
        return "int32"
    for name in ("uint16", "int16", "uint8"):
        if name in ds:
            return name
    raise ValueError(f"unknown dtypes {sorted(ds)}")


def cast_for_storage(array: np.ndarray, dtype: str) -> np.ndarray:
    """Cast to ``dtype`` for storage; float data become float32 (float64 rounds to nearest float32).

    Raises:
        ProcessError: integer storage that would change a value.
    """
    a = np.asarray(array)
    target = np.dtype(dtype)
    if target.kind == "f":
        return a.astype(np.float32, copy=False)
    if a.dtype == target:
        return a
    if a.size:
        lo, hi = _INT_RANGES[dtype]
        if a.min() < lo or a.max() > hi or (a.dtype.kind == "f" and not np.array_equal(a, np.trunc(a))):
            raise ProcessError(f"pixel values do not fit the dataset storage dtype {dtype}")
    return a.astype(target)


# ------------------------------------------------------------------------------------- geometry


def _direction_matrix(image: Image) -> np.ndarray:
    if image.direction is None:
        return np.eye(3)
    return np.asarray(image.direction, dtype=np.float64).reshape(3, 3)


def _shift_origin(image: Image, offset_index: np.ndarray) -> tuple[float, float, float] | None:
    """Origin after moving the first voxel by ``offset_index`` voxels (fractional) along the array axes."""
    if image.origin is None:
        return None
    sd = image.spatial_dims
    # array axes (slice,row,col) / (row,col) -> ITK x (col), y (row), z (slice)
    xyz = np.zeros(3)
    spacing = np.asarray(image.spacing, dtype=np.float64)
    phys = offset_index * spacing
    xyz[: sd] = phys[::-1]
    origin = np.asarray(image.origin, dtype=np.float64) + _direction_matrix(image) @ xyz
    return tuple(float(v) for v in origin)


def _replace(image: Image, **changes) -> Image:
    return dataclasses.replace(image, **changes)


# --------------------------------------------------------------------------------- resampling


def _sitk_resample(array: np.ndarray, in_spacing, out_size, out_spacing, out_offset, nearest: bool, default):
    """Resample a channels-last (or plain, for masks) array in index space with SimpleITK.

    ``out_offset`` is the position of the first output voxel in input physical units (array axis order).
    """
    import SimpleITK as sitk

    sd = len(in_spacing)
    vector = array.ndim == sd + 1
    img = sitk.GetImageFromArray(array, isVector=vector)
    img.SetSpacing([float(s) for s in in_spacing[::-1]])
    rs = sitk.ResampleImageFilter()
    rs.SetSize([int(s) for s in out_size[::-1]])
    rs.SetOutputSpacing([float(s) for s in out_spacing[::-1]])
    rs.SetOutputOrigin([float(s) for s in out_offset[::-1]])
    rs.SetOutputDirection(img.GetDirection())
    rs.SetInterpolator(sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    rs.SetDefaultPixelValue(float(default))
    if not nearest:
        rs.SetOutputPixelType(sitk.sitkVectorFloat32 if vector else sitk.sitkFloat32)
    return sitk.GetArrayFromImage(rs.Execute(img))


def _spatial_shape(image: Image) -> tuple[int, ...]:
    return tuple(image.array.shape[: image.spatial_dims])


def _check_dims(image: Image, values, what: str) -> tuple:
    sd = image.spatial_dims
    values = tuple(values)
    if len(values) == 1:
        values = values * sd
    if len(values) != sd:
        raise ProcessError(
            f"{what} needs 1 or {sd} values for a {sd}D image of shape {image.array.shape}. Received: {list(values)}"
        )
    return values


def resample_to_spacing(image: Image, spacing) -> Image:
    """Resample to ``spacing`` (mm, array axis order): linear for the image, nearest for the mask.

    The first voxel keeps its physical position; the output covers the input's physical extent.
    """
    spacing = _check_dims(image, spacing, "spacing")
    in_sp = tuple(float(s) for s in image.spacing)
    if tuple(float(s) for s in spacing) == in_sp:
        return image
    shape = _spatial_shape(image)
    out_size = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, in_sp, spacing))
    zero = np.zeros(len(shape))
    arr = _sitk_resample(image.array, in_sp, out_size, spacing, zero, False, float(np.min(image.array)))
    if arr.ndim == len(shape):
        arr = arr[..., None]
    mask = image.mask
    if mask is not None:
        mask = _sitk_resample(np.ascontiguousarray(mask), in_sp, out_size, spacing, zero, True, 0).astype(np.uint8)
    return _replace(image, array=arr, mask=mask, spacing=tuple(float(s) for s in spacing))


def _interp_axis(a: np.ndarray, axis: int, n_out: int, nearest: bool) -> np.ndarray:
    """Half-pixel-centre resampling of one axis (clamped at the edges), as ``tf.image.resize`` does."""
    n_in = a.shape[axis]
    if n_in == n_out:
        return a
    scale = n_in / n_out
    c = (np.arange(n_out) + 0.5) * scale - 0.5
    if nearest:
        idx = np.clip(np.floor((np.arange(n_out) + 0.5) * scale).astype(int), 0, n_in - 1)
        return np.take(a, idx, axis=axis)
    c = np.clip(c, 0, n_in - 1)
    lo = np.floor(c).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (c - lo).astype(np.float32).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
    return np.take(a, lo, axis=axis) * (1 - w) + np.take(a, hi, axis=axis) * w


def resize(image: Image, size) -> Image:
    """Resize to ``size`` (spatial): (bi/tri)linear with half-pixel centres and clamped edges, exactly
    ``tf.image.resize(..., "bilinear", antialias=False)`` per axis; the mask uses nearest neighbour."""
    size = tuple(int(s) for s in _check_dims(image, size, "size"))
    shape = _spatial_shape(image)
    if size == shape:
        return image
    arr = image.array.astype(np.float32)
    mask = image.mask
    for axis, n in enumerate(size):
        arr = _interp_axis(arr, axis, n, nearest=False)
        if mask is not None:
            mask = _interp_axis(mask, axis, n, nearest=True)
    in_sp = np.asarray(image.spacing, dtype=np.float64)
    out_sp = in_sp * np.asarray(shape) / np.asarray(size)
    offset_index = (out_sp / in_sp - 1.0) / 2.0  # first output centre, in input voxels
    return _replace(
        image,
        array=arr.astype(np.float32),
        mask=None if mask is None else mask.astype(np.uint8),
        spacing=tuple(float(s) for s in out_sp),
        origin=_shift_origin(image, offset_index),
    )


def crop_or_pad(image: Image, size, pad_value: float) -> Image:
    """Centre crop / pad to ``size``; values are copied exactly. The mask is padded with 0."""
    size = tuple(int(s) for s in _check_dims(image, size, "size"))
    shape = _spatial_shape(image)
    if size == shape:
        return image
    starts = [(n - t) // 2 for n, t in zip(shape, size)]  # >0 crop, <0 pad

    def fit(a, fill):
        out = np.full(tuple(size) + a.shape[len(shape):], fill, dtype=a.dtype)
        src, dst = [], []
        for n, t, st in zip(shape, size, starts):
            if st >= 0:
                src.append(slice(st, st + t))
                dst.append(slice(0, t))
            else:
                src.append(slice(0, n))
                dst.append(slice(-st, -st + n))
        out[tuple(dst)] = a[tuple(src)]
        return out

    arr = fit(image.array, np.asarray(pad_value).astype(image.array.dtype))
    mask = None if image.mask is None else fit(image.mask, 0)
    return _replace(image, array=arr, mask=mask, origin=_shift_origin(image, np.asarray(starts, dtype=np.float64)))


# ------------------------------------------------------------------------------------- pipeline


def apply_intensity(image: Image, options: ProcessOptions) -> Image:
    """Raw: unchanged. Window: one float32 channel in [0, 1] per window (RGB is averaged first)."""
    if options.intensity == "raw":
        return image
    x = image.array
    base = x.mean(axis=-1) if x.shape[-1] > 1 else x[..., 0]
    arr = np.stack([window_numpy(base, w, l) for w, l in options.windows], axis=-1)
    return _replace(image, array=arr)


def process_image(image: Image, options: ProcessOptions) -> Image:
    """Resample → intensity → size, then cast for storage. Pure: returns a new :class:`Image`.

    Args:
        image: decoded image (channels last) with geometry.
        options: what to do.

    Returns:
        The processed image; ``array`` has the storage dtype (``options.image_dtype`` or the narrowest
        exact one, see :func:`natural_dtype`).

    Raises:
        ProcessError: options that do not fit the image (e.g. a 3-value size for a 2D image), or values
            that do not fit a forced ``image_dtype``.
    """
    if image.array.ndim != image.spatial_dims + 1 or image.spatial_dims not in (2, 3):
        raise ProcessError(f"image must be (H, W, C) or (D, H, W, C). Received shape {image.array.shape}")
    if image.mask is not None and tuple(image.mask.shape[: image.spatial_dims]) != _spatial_shape(image):
        raise ProcessError(f"mask shape {image.mask.shape} does not match image shape {image.array.shape}")
    if options.spacing is not None:
        image = resample_to_spacing(image, options.spacing)
    image = apply_intensity(image, options)
    if options.size is not None:
        if options.resize == "resize":
            image = resize(image, options.size)
        else:
            pad = 0.0 if options.intensity == "window" or image.array.size == 0 else float(np.min(image.array))
            image = crop_or_pad(image, options.size, pad)
    dtype = options.image_dtype or natural_dtype(image.array)
    return _replace(image, array=cast_for_storage(image.array, dtype))
