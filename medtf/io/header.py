"""DICOM headers and slice geometry: reading a header, tolerant element access, orientation, spacing
and the ordering of a single-frame series along its slice normal.

Shared by :mod:`medtf.io.dicom` (pixel decoding, files and series), :mod:`medtf.io.seg` (aligning
DICOM-SEG frames to their source slices) and :mod:`medtf.io.sources` (grouping files into units).
Needs pydicom (imported on first use) and NumPy; no pixel data is decoded here.

Geometry follows ITK/SimpleITK: a series is ordered by the projection of ImagePositionPatient on the
slice normal (row cosine x column cosine), ascending; the direction matrix (row-major) has columns row
cosine, column cosine, normal; the slice spacing comes from the positions, never from SliceThickness.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from medtf.io.types import ReadError

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: position tolerance (mm) below which two slices are duplicates
DUPLICATE_TOL_MM = 1e-3
#: relative tolerance on the gap between consecutive slices
GAP_REL_TOL = 0.01
ORIENTATION_TOL = 1e-4
PIXEL_SPACING_TOL = 1e-4


# ----------------------------------------------------------------------------------------------- headers
def read_header(path, *, defer: bool = False):
    """Read a DICOM header without pixel data.

    Args:
        path: file path.
        defer: read the whole file but defer large values (so ``"PixelData" in ds`` works) instead of
            stopping before the pixel data.

    Returns:
        ``pydicom.Dataset``.

    Raises:
        ReadError: not a parseable DICOM file.
    """
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if defer:
                return pydicom.dcmread(str(path), defer_size="64 KB", force=True)
            return pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception as exc:  # noqa: BLE001
        raise ReadError(path, f"not a readable DICOM file ({type(exc).__name__})") from None


def header_value(ds, keyword, default=None):
    """``ds.get(keyword)``, but ``default`` for a missing, empty or malformed element."""
    try:
        value = ds.get(keyword, default)
    except Exception:  # noqa: BLE001 - malformed element
        return default
    return default if value is None or value == "" else value


# ------------------------------------------------------------------------------------------------ geometry
def float_vector(value, n: int) -> np.ndarray | None:
    """``value`` as ``n`` finite float64 numbers, else None."""
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def pixel_spacing(ds) -> tuple[np.ndarray | None, str]:
    """(row, column) spacing in mm and the attribute it came from (PixelSpacing, else ImagerPixelSpacing);
    (None, "") when neither holds two positive numbers."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = header_value(ds, keyword)
        if value is not None:
            sp = float_vector(value, 2)
            if sp is not None and np.all(sp > 0):
                return sp, keyword
    return None, ""


def image_orientation(ds) -> np.ndarray | None:
    """ImageOrientationPatient as 6 floats (row cosine, column cosine), None when absent or not unit vectors."""
    value = header_value(ds, "ImageOrientationPatient")
    iop = float_vector(value, 6) if value is not None else None
    if iop is None:
        return None
    row, col = iop[:3], iop[3:]
    if not (abs(np.linalg.norm(row) - 1) < 1e-2 and abs(np.linalg.norm(col) - 1) < 1e-2):
        return None
    return iop


def direction_from_iop(iop: np.ndarray, normal: np.ndarray | None = None) -> tuple[float, ...]:
    """ITK direction (row-major 3x3): columns = row cosine, column cosine, normal."""
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    if normal is None:
        normal = np.cross(row, col)
    mat = np.stack([row, col, normal], axis=1)
    return tuple(float(v) for v in mat.reshape(-1))


def series_order(path_headers: Sequence[tuple[str, object]]):
    """Sort (path, header) of one series along the slice normal; validate geometry.

    Returns:
        (sorted pairs, slice spacing, origin, direction, (row, col) spacing, spacing_default)

    Raises:
        ReadError: missing/inconsistent geometry, duplicate or missing slices, non-uniform spacing.
    """
    first_path, first = path_headers[0]
    where = first_path if len(path_headers) == 1 else f"series of {len(path_headers)} files (first {first_path})"
    iops, ipps = [], []
    for p, ds in path_headers:
        iop = image_orientation(ds)
        ipp = header_value(ds, "ImagePositionPatient")
        ipp = float_vector(ipp, 3) if ipp is not None else None
        if iop is None or ipp is None:
            raise ReadError(p, "series slice lacks a valid ImageOrientationPatient/ImagePositionPatient; "
                               "cannot order slices (read it with mode='slice')")
        iops.append(iop)
        ipps.append(ipp)
    iop0 = iops[0]
    for (p, ds), iop in zip(path_headers, iops):
        if np.max(np.abs(iop - iop0)) > ORIENTATION_TOL:
            raise ReadError(p, "inconsistent ImageOrientationPatient within the series (mismatched orientation)")
    rows0, cols0 = header_value(first, "Rows"), header_value(first, "Columns")
    sp0, _ = pixel_spacing(first)
    for p, ds in path_headers:
        if header_value(ds, "Rows") != rows0 or header_value(ds, "Columns") != cols0:
            raise ReadError(p, "inconsistent Rows/Columns within the series")
        sp, _ = pixel_spacing(ds)
        if (sp is None) != (sp0 is None) or (sp is not None and np.max(np.abs(sp - sp0)) > PIXEL_SPACING_TOL):
            raise ReadError(p, "inconsistent PixelSpacing within the series")
        if int(header_value(ds, "NumberOfFrames", 1) or 1) != 1:
            raise ReadError(p, "multi-frame file inside a single-frame series")
    normal = np.cross(iop0[:3], iop0[3:])
    pos = np.stack(ipps)
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    proj, pos = proj[order], pos[order]
    pairs = [path_headers[i] for i in order]
    n = len(pairs)
    spacing_default = False
    if n == 1:
        slice_sp = 1.0
        spacing_default = True
    else:
        gaps = np.diff(proj)
        dup = np.flatnonzero(gaps < DUPLICATE_TOL_MM)
        if dup.size:
            raise ReadError(pairs[dup[0] + 1][0], f"duplicate slice position in {where}: two files at the same "
                                                  f"ImagePositionPatient along the normal")
        step = float(np.median(gaps))
        tol = max(DUPLICATE_TOL_MM, GAP_REL_TOL * step)
        bad = np.flatnonzero(np.abs(gaps - step) > tol)
        if bad.size:
            g = float(gaps[bad[0]])
            ratio = g / step
            if ratio > 1.5 and abs(ratio - round(ratio)) * step <= tol:
                raise ReadError(where, f"missing slice: gap of {g:.4g} mm = {round(ratio)} x the slice spacing "
                                       f"{step:.4g} mm between sorted slices {bad[0]} and {bad[0] + 1}")
            raise ReadError(where, f"non-uniform spacing between slices: gap {g:.4g} mm vs median {step:.4g} mm "
                                   f"(between sorted slices {bad[0]} and {bad[0] + 1})")
        slice_sp = float(np.linalg.norm(pos[-1] - pos[0]) / (n - 1))
    if sp0 is None:
        sp0 = np.array([1.0, 1.0])
        spacing_default = True
    origin = tuple(float(v) for v in pos[0])
    return pairs, slice_sp, origin, direction_from_iop(iop0, normal), sp0, spacing_default
