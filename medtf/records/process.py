"""Processing applied while converting: the conversion stage of the preprocessing contract, then a dtype.

Pure NumPy (no TensorFlow), one image in, one image out, so the converter's workers (and a Beam
pipeline) can run it. The values come from ``medtf.preprocess`` — the same NumPy reference that
``medtf predict`` and the edge runtime apply to raw input — in the order resample (linear for the image,
nearest neighbour for the mask) → intensity (raw modality values, or one [0, 1] channel per window) →
size (resize, or centre crop / pad). Geometry (spacing, origin) follows each step
(``medtf.preprocess.grid``) so records keep physical coordinates. The resolved stage is written to
``manifest.json`` (``"preprocessing"``) and travels on with every model trained on the records.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from medtf.io.types import Image
from medtf.preprocess import Preprocessing, apply, parse_window, shift_origin, stage_map

INTENSITIES = ("none", "window")
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
        intensity: "none" keeps modality values (HU for CT) exactly ("raw" is accepted as its old name);
            "window" stores one float32 channel in [0, 1] per (width, level) of ``windows`` (pydicom's
            linear VOI function).
        windows: (width, level) pairs for ``intensity="window"``.
        spacing: target spacing in mm in the image's spatial axis order ((row, col) or (slice, row,
            col)); a single value applies to every axis; None keeps the source spacing.
        size: output spatial size ((H, W) or (D, H, W)); None keeps the size after resampling.
        resize: "resize" (linear interpolation, nearest for masks) or "crop_or_pad" (centre crop, pad
            with the image minimum for raw values and 0 for windows).
        image_dtype: storage dtype to force; None lets :func:`natural_dtype` choose per image.
        nan_value: replace NaN / ±Inf input values with this number; None (default) rejects an input that
            holds any, with the count.
    """

    intensity: str = "none"
    windows: tuple[tuple[float, float], ...] = ()
    spacing: tuple[float, ...] | None = None
    size: tuple[int, ...] | None = None
    resize: str = "resize"
    image_dtype: str | None = None
    nan_value: float | None = None

    def __post_init__(self):
        if self.intensity == "raw":
            object.__setattr__(self, "intensity", "none")
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
        if self.intensity == "none" and windows:
            raise ValueError(f"windows {windows} given without intensity='window'")
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
        if self.nan_value is not None:
            v = float(self.nan_value)
            if not math.isfinite(v):
                raise ValueError(f"nan_value must be a finite number. Received: {self.nan_value!r}")
            object.__setattr__(self, "nan_value", v)
        if self.image_dtype is not None and self.image_dtype not in ("uint8", "uint16", "int16", "int32", "float32"):
            raise ValueError(f"image_dtype must be uint8|uint16|int16|int32|float32. Received: {self.image_dtype!r}")

    def to_preprocessing(self, voi: bool = False) -> Preprocessing:
        """The conversion stage as a :class:`~medtf.preprocess.Preprocessing` (what the manifest stores)."""
        return Preprocessing(
            voi=bool(voi), spacing=self.spacing, intensity=self.intensity, windows=self.windows,
            size=self.size, resize=self.resize, pad="zero" if self.intensity == "window" else "min",
        )

    def to_dict(self) -> dict:
        d = {
            "intensity": self.intensity,
            "windows": [list(w) for w in self.windows],
            "spacing": None if self.spacing is None else list(self.spacing),
            "size": None if self.size is None else list(self.size),
            "resize": self.resize,
            "image_dtype": self.image_dtype,
        }
        if self.nan_value is not None:  # only when set: older fingerprints and manifests stay the same
            d["nan_value"] = self.nan_value
        return d


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


# ------------------------------------------------------------------------------------- pipeline


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


def process_image(image: Image, options: ProcessOptions, *, voi: bool = False) -> Image:
    """The conversion stage (``options.to_preprocessing()``), then the cast for storage. Pure.

    Args:
        image: decoded image (channels last) with geometry.
        options: what to do.
        voi: the reader applied the header VOI (recorded in the stage; no value change here).

    Returns:
        The processed image; ``array`` has the storage dtype (``options.image_dtype`` or the narrowest
        exact one, see :func:`natural_dtype`); spacing and origin describe the new grid.

    Raises:
        ProcessError: options that do not fit the image (e.g. a 3-value size for a 2D image), or values
            that do not fit a forced ``image_dtype``.
    """
    if image.array.ndim != image.spatial_dims + 1 or image.spatial_dims not in (2, 3):
        raise ProcessError(f"image must be (H, W, C) or (D, H, W, C). Received shape {image.array.shape}")
    sd = image.spatial_dims
    if image.mask is not None and tuple(image.mask.shape[:sd]) != tuple(image.array.shape[:sd]):
        raise ProcessError(f"mask shape {image.mask.shape} does not match image shape {image.array.shape}")
    arr0 = np.asarray(image.array)
    if arr0.dtype.kind == "f" and not np.isfinite(arr0).all():
        nan, inf = int(np.isnan(arr0).sum()), int(np.isinf(arr0).sum())
        if options.nan_value is None:
            raise ProcessError(f"{nan + inf} non-finite value(s) in the image ({nan} NaN, {inf} Inf); rejected "
                               "(tfrecord-convert --nan-value V replaces them)")
        image = dataclasses.replace(image, array=np.nan_to_num(arr0, nan=options.nan_value, posinf=options.nan_value,
                                                               neginf=options.nan_value))
    if options.spacing is not None:
        _check_dims(image, options.spacing, "spacing")
    if options.size is not None:
        _check_dims(image, options.size, "size")
    spec = options.to_preprocessing(voi)
    try:
        amap = stage_map(spec, image.array.shape[:sd], image.spacing)
        out = apply(image.array, spec, image.spacing, mask=image.mask, keep_dtype=True)
    except ValueError as exc:
        raise ProcessError(str(exc)) from None
    arr, mask = out if image.mask is not None else (out, None)
    if mask is not None:
        mask = np.ascontiguousarray(mask).astype(np.uint8)
    in_sp = np.asarray(image.spacing, dtype=np.float64)
    spacing = tuple(float(s) for s in in_sp * np.asarray(amap.scale))
    origin = shift_origin(image.origin, image.direction, image.spacing, amap.offset)
    dtype = options.image_dtype or natural_dtype(arr)
    return dataclasses.replace(image, array=cast_for_storage(arr, dtype), mask=mask, spacing=spacing, origin=origin)


def conversion_spec(manifest: dict) -> Preprocessing | None:
    """The conversion stage a records folder was made with (``manifest["preprocessing"]``).

    Manifests written before the stage was stored are read from their ``options.process`` and
    ``intensity`` entries; None when neither is there.
    """
    if manifest.get("preprocessing") is not None:
        return Preprocessing.from_dict(manifest["preprocessing"], where="manifest.preprocessing")
    process = (manifest.get("options") or {}).get("process")
    if process is None:
        intensity = manifest.get("intensity") or {}
        if intensity.get("kind") == "window":
            return Preprocessing(intensity="window", windows=tuple(tuple(w) for w in intensity["windows"]))
        return None
    opts = ProcessOptions(**{k: v for k, v in process.items() if k in {f.name for f in dataclasses.fields(ProcessOptions)}})
    voi = bool(((manifest.get("options") or {}).get("read_options") or {}).get("apply_voi"))
    return opts.to_preprocessing(voi)
