"""Paired restoration targets (``tfrecord-convert INPUTS --targets DIR``): reading, the grid rule, and the
spatial steps that follow the input's.

A target is the clean / high-resolution image of an input (low-dose → full-dose, low-resolution →
high-resolution), paired by the same key rule as ``--masks``. It is read with :mod:`medtf.io` like any
input and stored beside it (``target`` + ``target_shape``, in the dataset's storage dtype).

Grid rule: the target covers the same physical extent as the input — the same grid (denoising) or an
integer multiple ``k`` of its size per spatial axis (super-resolution; ``k`` per axis, e.g. (2, 2) or
(1, 2, 2)). Voxel ``j`` of a target axis covers ``[j, j + 1) / k`` input voxels, so continuous target
index ``t`` sits at input index ``(t + 0.5) / k - 0.5`` (half-pixel alignment). Formats with a real
spacing (DICOM, NIfTI, NRRD) must also satisfy ``target spacing × k = input spacing``.

Every spatial step the converter applies to the input is applied to the target with linear
interpolation onto the target's own grid, scaled the same way: when a step maps output index ``r`` of
the input to input index ``s = offset + scale·r`` (:class:`medtf.preprocess.AxisMap`), the target's
output grid has ``k`` times as many voxels and its voxel ``R`` samples target index
``t = scale·R + k·offset + (1 − k)(scale − 1)/2``. For ``k = 1`` this is the input's own map: a
denoising target goes through exactly the input's resampling, resize and crop/pad. Intensity steps
(windows) are the input's. 2D slicing (``--mode slice``) takes the target slice at the input slice's
position (linear between two target slices when ``k > 1`` along the slice axis).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from medtf.io import ReadError, ReadOptions, SourceUnit, classify, read_unit
from medtf.preprocess import AxisMap, apply_intensity, map_channels, stage_map
from medtf.preprocess.grid import resample_spacings
from medtf.preprocess.numpy_ops import sample_linear
from medtf.records.process import ProcessError, ProcessOptions


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def grid_scale(in_shape, t_shape, in_spacing=None, t_spacing=None) -> tuple[int, ...]:
    """``k`` per spatial axis such that ``t_shape = k · in_shape`` (and ``t_spacing · k = in_spacing`` when both
    spacings are given).

    Raises:
        ProcessError: "target grid ... is not the input grid ... or an integer multiple of it".
    """
    in_shape, t_shape = tuple(int(s) for s in in_shape), tuple(int(s) for s in t_shape)
    msg = f"target grid {t_shape} is not the input grid {in_shape} or an integer multiple of it"
    if len(in_shape) != len(t_shape):
        raise ProcessError(f"{msg} ({len(t_shape)}D target for a {len(in_shape)}D input)")
    if any(n < 1 or t % n for n, t in zip(in_shape, t_shape)) or any(t < n for n, t in zip(in_shape, t_shape)):
        raise ProcessError(msg)
    k = tuple(t // n for n, t in zip(in_shape, t_shape))
    if in_spacing is not None and t_spacing is not None:
        covered = np.asarray(t_spacing, np.float64) * np.asarray(k, np.float64)
        if len(in_spacing) != len(k) or not np.allclose(covered, in_spacing, rtol=1e-3, atol=1e-4):
            raise ProcessError(f"target grid {t_shape} at {_fmt(t_spacing)} mm is not the input grid {in_shape} at "
                               f"{_fmt(in_spacing)} mm or an integer multiple of it (same physical extent)")
    return k


def read_target(image, path: str, pseudonymizer, read_options: dict | None = None,
                expected_scale: tuple[int, ...] | None = None):
    """The paired target of ``image`` read with :mod:`medtf.io`, and its scale ``k`` per spatial axis.

    Args:
        image: the decoded input (``medtf.io.Image``).
        path: the target file.
        pseudonymizer: the conversion's pseudonymizer (the reader needs one; nothing of the target is stored
            but its pixels).
        read_options: the conversion's read options (``apply_voi``, ``max_pixels``...); ``frames`` "each" is
            not used for a target (it is one image).
        expected_scale: ``--target-scale``: reject targets with another ``k``.

    Returns:
        ``(target Image, k)``.

    Raises:
        ProcessError: unreadable target, several images, a channel count other than the input's, or a grid that
            breaks the rule of :func:`grid_scale`.
    """
    kind, reason = classify(path)
    if kind is None or kind == "npz":
        raise ProcessError(f"paired target unreadable ({reason or 'unsupported type'})")
    opts = dict(read_options or {})
    if opts.get("frames") == "each":
        opts.pop("frames")
    try:
        found = read_unit(SourceUnit(kind=kind, paths=(path,), key="target", rel="target"),
                          pseudonymizer=pseudonymizer, options=ReadOptions(**opts))
    except ReadError as exc:
        raise ProcessError(f"paired target unreadable ({exc.reason})") from None
    if len(found) != 1:
        raise ProcessError(f"paired target holds {len(found)} images; a target is one image")
    target = found[0]
    if target.spatial_dims != image.spatial_dims:
        raise ProcessError(f"target grid {tuple(target.array.shape[:-1])} is not the input grid "
                           f"{tuple(image.array.shape[:-1])} or an integer multiple of it "
                           f"({target.spatial_dims}D target for a {image.spatial_dims}D input)")
    if target.array.shape[-1] != image.array.shape[-1]:
        raise ProcessError(f"paired target has {target.array.shape[-1]} channel(s); the input has "
                           f"{image.array.shape[-1]}")
    geometric = not (image.meta.get("spacing_default") or target.meta.get("spacing_default"))
    k = grid_scale(image.array.shape[:-1], target.array.shape[:-1],
                   image.spacing if geometric else None, target.spacing if geometric else None)
    if expected_scale is not None:
        want = tuple(expected_scale) * (len(k) if len(expected_scale) == 1 else 1)
        if want != k:
            raise ProcessError(f"target grid {tuple(target.array.shape[:-1])} is the input grid "
                               f"{tuple(image.array.shape[:-1])} x{list(k)}, not the --target-scale x{list(want)}")
    return target, k


def slice_target(target, scale: tuple[int, ...], index: int):
    """The 2D target of input slice ``index`` (axis 0): the target slice at the input slice's centre — exactly
    slice ``index`` when ``k = 1`` along that axis, else linear between the two nearest target slices."""
    arr = np.asarray(target.array)
    kz = int(scale[0])
    if kz == 1:
        plane = arr[index]
    else:
        pos = kz * (index + 0.5) - 0.5
        lo = int(math.floor(pos))
        hi = min(lo + 1, arr.shape[0] - 1)
        w = pos - lo
        plane = (arr[lo].astype(np.float64) * (1.0 - w) + arr[hi].astype(np.float64) * w).astype(np.float32)
    return dataclasses.replace(target, array=plane, spacing=tuple(target.spacing)[1:], mask=None, index=index)


def target_map(amap: AxisMap, scale: tuple[int, ...]) -> AxisMap:
    """The step of the target grid that corresponds to the input step ``amap`` (see the module docstring)."""
    k = tuple(int(v) for v in scale)
    return AxisMap(
        tuple(n * kk for n, kk in zip(amap.in_shape, k)),
        tuple(m * kk for m, kk in zip(amap.out_shape, k)),
        tuple(kk * o + (1 - kk) * (s - 1.0) / 2.0 for kk, o, s in zip(k, amap.offset, amap.scale)),
        tuple(amap.scale),
    )


def crop_or_pad_at(x: np.ndarray, amap: AxisMap, fill) -> np.ndarray:
    """Crop / pad ``x`` onto the output grid of an integer-offset, unit-scale ``amap`` (output index ``r`` →
    input index ``offset + r``), values copied exactly (dtype kept), padding with ``fill``."""
    x = np.asarray(x)
    for axis, (n, m, o) in enumerate(zip(x.shape, amap.out_shape, amap.offset)):
        src = int(round(o)) + np.arange(m)
        inside = (src >= 0) & (src < n)
        taken = np.take(x, np.clip(src, 0, n - 1), axis=axis)
        shape = [1] * x.ndim
        shape[axis] = m
        x = np.where(inside.reshape(shape), taken, np.asarray(fill).astype(x.dtype))
    return x


def process_target(target, image, options: ProcessOptions, scale: tuple[int, ...], *, voi: bool = False) -> np.ndarray:
    """The conversion stage of the input ``image`` (before processing) applied to its ``target``: the same
    resample → intensity → channels → size steps, each mapped onto the target grid (:func:`target_map`) and
    interpolated linearly; the same intensity (window) as the input.

    Returns:
        The target array (float32 after any step that changes values; the source dtype when none does).

    Raises:
        ProcessError: non-finite target values without ``nan_value``, or options that do not fit.
    """
    x = np.asarray(target.array)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        if options.nan_value is None:
            raise ProcessError(f"{bad} non-finite value(s) in the paired target; rejected (tfrecord-convert "
                               "--nan-value V replaces them)")
        x = np.nan_to_num(x, nan=options.nan_value, posinf=options.nan_value, neginf=options.nan_value)
    spec = options.to_preprocessing(voi)
    sd = image.spatial_dims
    shape = tuple(int(s) for s in image.array.shape[:sd])
    try:
        spacings = resample_spacings(spec, image.spacing, sd)
        if spacings is not None:  # the resampling part of the stage (no size step)
            step = stage_map(dataclasses.replace(spec, size=None), shape, image.spacing)
            x = sample_linear(x, target_map(step, scale), fill=float(x.min()) if x.size else 0.0)
            shape = step.out_shape
        if spec.intensity != "none":
            x = apply_intensity(x, spec)
        if spec.channels == 1 and x.shape[-1] > 1:
            x = map_channels(x, 1)
        if spec.size is not None:
            step = stage_map(dataclasses.replace(spec, spacing=None), shape)
            if step.out_shape != shape and spec.resize == "resize":
                x = sample_linear(x, target_map(step, scale), fill=0.0)
            elif step.out_shape != shape:  # centre crop / pad: integer offsets, values copied exactly
                fill = 0.0 if spec.pad == "zero" or not x.size else x.min()
                x = crop_or_pad_at(x, target_map(step, scale), fill)
        x = map_channels(x, spec.channels)
    except ValueError as exc:
        raise ProcessError(str(exc)) from None
    return np.ascontiguousarray(x)


def with_target(image, processed, paired, options: ProcessOptions, *, voi: bool = False):
    """The processed input and its processed target, both in one storage dtype.

    Args:
        image: the input as decoded (a 2D slice of a volume with ``--mode slice``: its ``index`` is the slice).
        processed: ``process_image(image, options)``.
        paired: ``(target Image, k)`` from :func:`read_target` for the unit's (unsliced) input.
        options: the conversion's processing options.
        voi: the reader applied the header VOI.

    Returns:
        ``(processed input, target array)``: the input recast when the target needs a wider dtype (the
        narrowest exact dtype holding both, unless ``options.image_dtype`` forces one).

    Raises:
        ProcessError: see :func:`process_target`; values that do not fit a forced dtype.
    """
    from medtf.records.process import cast_for_storage, join_dtypes, natural_dtype

    target, k = paired
    if target.spatial_dims > image.spatial_dims:  # --mode slice: the target slice of this input slice
        target, k = slice_target(target, k, image.index), tuple(k)[1:]
    t = process_target(target, image, options, k, voi=voi)
    dtype = options.image_dtype or join_dtypes([processed.array.dtype.name, natural_dtype(t)])
    processed = dataclasses.replace(processed, array=cast_for_storage(processed.array, dtype))
    return processed, cast_for_storage(t, dtype)
