"""DICOM files (single- and multi-frame) and single-frame series assembled into volumes.

Values: stored pixels → MONOCHROME1 inverted over the stored range (``2^BitsStored - 1 - v``; signed:
``-1 - v``) → Modality LUT with :func:`pydicom.pixels.apply_modality_lut` semantics (integer result kept
as an integer dtype when slope is 1 and the intercept integral) → optional header VOI window ([0, 1]).
Colour (RGB, YBR_*, PALETTE COLOR) is returned as RGB, 3 channels.

Geometry follows ITK/SimpleITK: a series is ordered by the projection of ImagePositionPatient on the
slice normal (row cosine x column cosine), ascending, like ``GetGDCMSeriesFileNames``; origin is the
first slice's position; the direction matrix (row-major) has columns row cosine, column cosine,
normal; the slice spacing comes from the positions, never from SliceThickness.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

from medtf.io import deid
from medtf.io.types import Image, ReadError, ReadOptions

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: position tolerance (mm) below which two slices are duplicates
DUPLICATE_TOL_MM = 1e-3
#: relative tolerance on the gap between consecutive slices
GAP_REL_TOL = 0.01
ORIENTATION_TOL = 1e-4
PIXEL_SPACING_TOL = 1e-4


def _pydicom():
    import pydicom

    return pydicom


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
    pydicom = _pydicom()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if defer:
                return pydicom.dcmread(str(path), defer_size="64 KB", force=True)
            return pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception as exc:  # noqa: BLE001
        raise ReadError(path, f"not a readable DICOM file ({type(exc).__name__})") from None


def looks_like_dicom(path) -> bool:
    """Content sniffing: the "DICM" preamble, or a dataset that parses with DICOM image/SOP attributes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    # raw dataset without preamble: first tag must be a plausible group (0002/0008) little/big endian
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    plausible = (0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028)
    if group_le not in plausible and group_be not in plausible:
        return False
    try:
        ds = read_header(path)
    except ReadError:
        return False
    return any(k in ds for k in ("SOPClassUID", "Rows", "Modality", "StudyInstanceUID"))


def _get(ds, keyword, default=None):
    try:
        value = ds.get(keyword, default)
    except Exception:  # noqa: BLE001 - malformed element
        return default
    return default if value is None or value == "" else value


def patient_key(ds, pseudonymizer, fallback: str) -> tuple[str, str]:
    """(pseudonym, source attribute): PatientID, else StudyInstanceUID, else SeriesInstanceUID, else file."""
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(_get(ds, keyword, "") or "").strip()
        if value:
            return pseudonymizer.patient(value), keyword
    return pseudonymizer.patient(f"file:{fallback}"), "file"


def _uid_name(uid) -> str | None:
    try:
        name = uid.name
    except Exception:  # noqa: BLE001
        return None
    return name if name and name != str(uid) else None


def _safe_meta(ds) -> dict:
    """The whitelisted technical header values."""
    meta: dict = {}
    for keyword in ("Modality", "PhotometricInterpretation", "RescaleType", "VOILUTFunction"):
        value = _get(ds, keyword)
        if isinstance(value, str) and value.replace("_", "").replace(" ", "").isalnum() and len(value) <= 32:
            meta[keyword] = value
    for keyword in ("BitsStored", "BitsAllocated", "PixelRepresentation", "SamplesPerPixel", "Rows",
                    "Columns", "NumberOfFrames"):
        value = _get(ds, keyword)
        try:
            if value is not None:
                meta[keyword] = int(value)
        except (TypeError, ValueError):
            pass
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        value = _get(ds, keyword)
        if value is None:
            continue
        try:
            if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
                meta[keyword] = [float(v) for v in value]
            else:
                meta[keyword] = float(value)
        except (TypeError, ValueError):
            pass
    fm = getattr(ds, "file_meta", None)
    ts = _get(fm, "TransferSyntaxUID") if fm is not None else None
    if ts is not None and _uid_name(ts):
        meta["TransferSyntax"] = _uid_name(ts)
    sop = _get(ds, "SOPClassUID")
    if sop is not None and _uid_name(sop):
        meta["SOPClass"] = _uid_name(sop)
    return meta


def _check_size(path, ds, max_pixels: int) -> tuple[int, int, int, int]:
    """Rows, Columns, frames, samples from the header; reject absurd claims before allocating."""
    try:
        rows = int(_get(ds, "Rows", 0))
        cols = int(_get(ds, "Columns", 0))
        frames = int(_get(ds, "NumberOfFrames", 1) or 1)
        samples = int(_get(ds, "SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        raise ReadError(path, "invalid Rows/Columns/NumberOfFrames/SamplesPerPixel in the header") from None
    if rows <= 0 or cols <= 0:
        raise ReadError(path, "no image pixel module (Rows/Columns missing or zero)")
    if frames <= 0 or samples not in (1, 3, 4):
        raise ReadError(path, f"unsupported NumberOfFrames={frames} / SamplesPerPixel={samples}")
    total = rows * cols * frames * samples
    if total > max_pixels:
        raise ReadError(
            path,
            f"header claims {rows}x{cols}x{frames}x{samples} = {total} samples (Rows x Columns x NumberOfFrames "
            f"x SamplesPerPixel), more than max_pixels={max_pixels}; refusing to allocate",
        )
    return rows, cols, frames, samples


def _has_pixels(ds) -> bool:
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


# ------------------------------------------------------------------------------------------ pixel values
def invert_monochrome1(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """MONOCHROME1 → MONOCHROME2 over the stored range, never the image's own min/max.

    Args:
        arr: stored values (integer).
        bits_stored: BitsStored.
        signed: PixelRepresentation == 1.

    Returns:
        ``2^bits - 1 - v`` (unsigned) or ``-1 - v`` (signed, i.e. ``min + max - v`` over the signed
        range), in ``arr``'s dtype; values outside the stored range are clipped into it first.
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

    if _get(ds, "ModalityLUTSequence"):
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
    """DICOM PS3.3 C.11.2.1.2 VOI window mapped to [0, 1] (float32).

    Args:
        values: modality values.
        center, width: Window Center / Width.
        function: VOI LUT Function: LINEAR (default), LINEAR_EXACT or SIGMOID.

    Raises:
        ValueError: width invalid for the function (LINEAR needs >= 1, others > 0).
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


def _first(value):
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return value[0]
    return value


def _apply_voi(path, values: np.ndarray, ds) -> np.ndarray:
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            center = float(_first(ds.WindowCenter))
            width = float(_first(ds.WindowWidth))
            return voi_window(values, center, width, str(_get(ds, "VOILUTFunction", "LINEAR")))
        except (TypeError, ValueError) as exc:
            raise ReadError(path, f"invalid VOI window in the header ({deid.scrub(str(exc), ds)})") from None
    if _get(ds, "VOILUTSequence"):
        from pydicom.pixels import apply_voi

        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        return (apply_voi(values, ds).astype(np.float64) / float(2**bits - 1)).clip(0, 1).astype(np.float32)
    raise ReadError(path, "apply_voi requested but the header has no VOI window (WindowCenter/WindowWidth) or VOI LUT")


def decode_pixels(path, ds, options: ReadOptions) -> tuple[np.ndarray, dict]:
    """Decode a dataset's pixels to modality (or windowed) values, channels last.

    Args:
        path: for error messages.
        ds: a full ``pydicom.Dataset`` (pixel data present or deferred).
        options: read options (``max_pixels``, ``apply_voi``).

    Returns:
        (array, meta): array (H, W, C) for one frame or (F, H, W, C); meta holds what was done.

    Raises:
        ReadError: no pixel data, absurd size, undecodable or unsupported pixel data.
    """
    rows, cols, frames, samples = _check_size(path, ds, options.max_pixels)
    if not _has_pixels(ds):
        raise ReadError(path, "DICOM file has no pixel data")
    photometric = str(_get(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    meta = _safe_meta(ds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except MemoryError:
        raise ReadError(path, "pixel data too large to decode") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input
        raise ReadError(path, f"pixel data could not be decoded ({type(exc).__name__}: {deid.scrub(str(exc), ds)})") from None
    arr = np.asarray(arr)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))  # big-endian transfer syntaxes → native order
    meta["dtype_stored"] = str(arr.dtype)
    expected_ndim = (3 if frames > 1 else 2) + (1 if samples > 1 else 0)
    if arr.ndim != expected_ndim:
        raise ReadError(path, f"decoded pixel array has {arr.ndim} dimensions, expected {expected_ndim}")

    if samples == 1 and photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            arr = apply_color_lut(arr, ds)
        except Exception as exc:  # noqa: BLE001
            raise ReadError(path, f"palette colour lookup failed ({type(exc).__name__})") from None
        meta["color_converted"] = "PALETTE COLOR->RGB"
        samples = 3
    elif samples == 1:
        inverted = photometric == "MONOCHROME1"
        stored = arr
        if inverted:
            bits = int(_get(ds, "BitsStored", arr.dtype.itemsize * 8))
            signed = int(_get(ds, "PixelRepresentation", 0)) == 1
            arr = invert_monochrome1(arr, bits, signed)
            meta["inverted_monochrome1"] = True
        arr, how = modality_lut(arr, ds)
        meta["modality_lut"] = how
        if options.apply_voi:
            if inverted:  # window the un-inverted values as the header intends, then show inverted
                values, _ = modality_lut(stored, ds)
                arr = 1.0 - _apply_voi(path, values, ds)
            else:
                arr = _apply_voi(path, arr, ds)
            meta["voi_applied"] = True
        arr = arr[..., None]
    else:
        if photometric not in ("RGB",):
            meta["color_converted"] = f"{photometric}->RGB"
        if samples == 4:
            raise ReadError(path, f"unsupported photometric interpretation {photometric} with 4 samples")
        if options.apply_voi:
            raise ReadError(path, "apply_voi requested for a colour image (VOI applies to grayscale only)")
    return np.ascontiguousarray(arr), meta


# ------------------------------------------------------------------------------------------------ geometry
def _floats(value, n: int) -> np.ndarray | None:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def _pixel_spacing(ds) -> tuple[np.ndarray | None, str]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _get(ds, keyword)
        if value is not None:
            sp = _floats(value, 2)
            if sp is not None and np.all(sp > 0):
                return sp, keyword
    return None, ""


def _orientation(ds) -> np.ndarray | None:
    value = _get(ds, "ImageOrientationPatient")
    iop = _floats(value, 6) if value is not None else None
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


def _functional(ds, frame: int | None, seq: str, attr: str):
    """A value from per-frame functional groups (frame) or shared functional groups."""
    if frame is not None:
        per = _get(ds, "PerFrameFunctionalGroupsSequence")
        if per is not None and frame < len(per):
            item = per[frame]
            if seq in item and len(item[seq].value) and attr in item[seq].value[0]:
                return item[seq].value[0][attr].value
    shared = _get(ds, "SharedFunctionalGroupsSequence")
    if shared is not None and len(shared):
        item = shared[0]
        if seq in item and len(item[seq].value) and attr in item[seq].value[0]:
            return item[seq].value[0][attr].value
    return None


def _multiframe_geometry(ds, frames: int):
    """(frame spacing or None, row/col spacing or None, origin or None, direction or None) for enhanced
    multi-frame objects, from the functional groups."""
    sp = _functional(ds, 0, "PixelMeasuresSequence", "PixelSpacing")
    sp = _floats(sp, 2) if sp is not None else None
    iop = _functional(ds, 0, "PlaneOrientationSequence", "ImageOrientationPatient")
    iop = _floats(iop, 6) if iop is not None else None
    positions = []
    for f in range(frames):
        ipp = _functional(ds, f, "PlanePositionSequence", "ImagePositionPatient")
        ipp = _floats(ipp, 3) if ipp is not None else None
        if ipp is None:
            positions = []
            break
        positions.append(ipp)
    if not positions or iop is None:
        return None, sp, (tuple(positions[0]) if positions else None), (direction_from_iop(iop) if iop is not None else None)
    pos = np.stack(positions)
    normal = np.cross(iop[:3], iop[3:])
    origin = tuple(float(v) for v in pos[0])
    if frames == 1:
        return None, sp, origin, direction_from_iop(iop)
    proj = pos @ normal
    steps = np.diff(proj)
    step = float(np.median(steps))
    if abs(step) < DUPLICATE_TOL_MM or np.any(np.abs(steps - step) > max(DUPLICATE_TOL_MM, GAP_REL_TOL * abs(step))):
        return None, sp, origin, direction_from_iop(iop)
    spacing = float(np.linalg.norm(pos[-1] - pos[0]) / (frames - 1))
    return spacing, sp, origin, direction_from_iop(iop, normal * math.copysign(1.0, step))


# ------------------------------------------------------------------------------------------------ readers
def _select_frames(arr: np.ndarray, n_frames: int, options: ReadOptions, path) -> list[tuple[int | None, np.ndarray]]:
    """[(frame index or None for the whole volume, array)]."""
    if n_frames <= 1:
        return [(None, arr)]
    sel = options.frames
    if sel == "all":
        return [(None, arr)]
    if sel == "first":
        return [(0, arr[0])]
    if sel == "middle":
        return [(n_frames // 2, arr[n_frames // 2])]
    if sel == "each":
        return [(i, arr[i]) for i in range(n_frames)]
    if not -n_frames <= int(sel) < n_frames:
        raise ReadError(path, f"frame {sel} requested but the file has {n_frames} frames")
    i = int(sel) % n_frames
    return [(i, arr[i])]


def read_dicom_file(path, *, pseudonymizer, options: ReadOptions = ReadOptions(), key: str | None = None) -> list[Image]:
    """Read one DICOM file (single- or multi-frame).

    Args:
        path: the file.
        pseudonymizer: :class:`medtf.io.deid.Pseudonymizer` for the patient key.
        options: :class:`ReadOptions`.
        key: the unit key (used as patient stand-in when the header has no patient/study IDs).

    Returns:
        one Image ((H, W, C), or (F, H, W, C) for multi-frame with ``frames="all"``), or one per frame.

    Raises:
        ReadError: unreadable, no pixels, unsupported or absurd header, undecodable pixel data.
    """
    ds = read_header(path, defer=True)
    if str(_get(ds, "SOPClassUID", "")) == SEG_SOP_CLASS:
        raise ReadError(path, "DICOM Segmentation object: read it with medtf.io.seg.read_dicom_seg together "
                              "with its source images (discover() attaches it to the referenced series)")
    _check_size(path, ds, options.max_pixels)
    arr, meta = decode_pixels(path, ds, options)
    patient, source = patient_key(ds, pseudonymizer, key or str(path))
    meta["patient_id_source"] = source
    modality = str(_get(ds, "Modality", "OT"))
    if not modality.isalnum() or len(modality) > 16:
        modality = "OT"
    n_frames = int(_get(ds, "NumberOfFrames", 1) or 1)

    spacing_rc, _ = _pixel_spacing(ds)
    frame_spacing = None
    origin = direction = None
    if n_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        frame_spacing, sp_mf, origin, direction = _multiframe_geometry(ds, n_frames)
        if spacing_rc is None and sp_mf is not None:
            spacing_rc = sp_mf
    iop = _orientation(ds)
    if origin is None:
        ipp = _get(ds, "ImagePositionPatient")
        ipp = _floats(ipp, 3) if ipp is not None else None
        origin = tuple(float(v) for v in ipp) if ipp is not None else None
    if direction is None and iop is not None:
        direction = direction_from_iop(iop)
    if spacing_rc is None:
        spacing_rc = np.array([1.0, 1.0])
        meta["spacing_default"] = True
    row_sp, col_sp = float(spacing_rc[0]), float(spacing_rc[1])

    images = []
    for index, part in _select_frames(arr, n_frames, options, path):
        m = dict(meta)
        if part.ndim == 4:
            if frame_spacing is None:
                m["frame_spacing_default"] = True
            spacing = (float(frame_spacing or 1.0), row_sp, col_sp)
            m["frames"] = n_frames
        else:
            spacing = (row_sp, col_sp)
            if index is not None:
                m["frame_index"] = index
        images.append(Image(
            array=part, spacing=spacing, patient=patient, modality=modality,
            origin=origin if index in (None, 0) else None, direction=direction,
            meta=deid.check_meta(m), index=index or 0,
        ))
    return images


def _series_order(path_headers: Sequence[tuple[str, object]]):
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
        iop = _orientation(ds)
        ipp = _get(ds, "ImagePositionPatient")
        ipp = _floats(ipp, 3) if ipp is not None else None
        if iop is None or ipp is None:
            raise ReadError(p, "series slice lacks a valid ImageOrientationPatient/ImagePositionPatient; "
                               "cannot order slices (read it with mode='slice')")
        iops.append(iop)
        ipps.append(ipp)
    iop0 = iops[0]
    for (p, ds), iop in zip(path_headers, iops):
        if np.max(np.abs(iop - iop0)) > ORIENTATION_TOL:
            raise ReadError(p, "inconsistent ImageOrientationPatient within the series (mismatched orientation)")
    rows0, cols0 = _get(first, "Rows"), _get(first, "Columns")
    sp0, _ = _pixel_spacing(first)
    for p, ds in path_headers:
        if _get(ds, "Rows") != rows0 or _get(ds, "Columns") != cols0:
            raise ReadError(p, "inconsistent Rows/Columns within the series")
        sp, _ = _pixel_spacing(ds)
        if (sp is None) != (sp0 is None) or (sp is not None and np.max(np.abs(sp - sp0)) > PIXEL_SPACING_TOL):
            raise ReadError(p, "inconsistent PixelSpacing within the series")
        if int(_get(ds, "NumberOfFrames", 1) or 1) != 1:
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


def read_dicom_series(paths: Sequence, *, pseudonymizer, options: ReadOptions = ReadOptions(),
                      key: str | None = None) -> list[Image]:
    """Assemble single-frame DICOM slices of one series into a (D, H, W, 1) volume (HU for CT).

    DICOM-SEG files among ``paths`` become ``Image.mask`` (D, H, W, K) with
    ``meta["segment_labels"]``.

    Args:
        paths: the series' files in any order (plus DICOM-SEG files referencing it).
        pseudonymizer: :class:`medtf.io.deid.Pseudonymizer`.
        options: :class:`ReadOptions`.
        key: unit key (patient stand-in when the header has no IDs).

    Returns:
        ``[Image]`` with spacing (slice, row, col), origin (first slice IPP), ITK direction.

    Raises:
        ReadError: see :func:`_series_order`; also several series or patients mixed.
    """
    if not paths:
        raise ReadError(key or "<series>", "empty series")
    headers, seg_paths = [], []
    for p in paths:
        ds = read_header(p, defer=True)  # one parse per file: pixel data is loaded only when decoded
        if str(_get(ds, "SOPClassUID", "")) == SEG_SOP_CLASS:
            seg_paths.append(str(p))
        else:
            headers.append((str(p), ds))
    if not headers:
        raise ReadError(paths[0], "series holds only DICOM-SEG objects, no images")
    series = {str(_get(ds, "SeriesInstanceUID", "")) for _, ds in headers}
    if len(series) != 1:
        raise ReadError(headers[0][0], f"files of {len(series)} different series given as one series")
    pairs, slice_sp, origin, direction, sp_rc, sp_default = _series_order(headers)
    total = len(pairs) * int(_get(pairs[0][1], "Rows", 0)) * int(_get(pairs[0][1], "Columns", 0))
    if total > options.max_pixels:
        raise ReadError(key or pairs[0][0], f"series claims {total} voxels, more than max_pixels={options.max_pixels}")

    slices, patients, metas = [], set(), []
    for p, ds in pairs:
        arr, meta = decode_pixels(p, ds, options)
        if arr.ndim != 3 or arr.shape[-1] != 1:
            raise ReadError(p, "series slices must be single-frame grayscale")
        slices.append(arr)
        metas.append(meta)
        patients.add(patient_key(ds, pseudonymizer, key or str(pairs[0][0])))
    if len({pk for pk, _ in patients}) != 1:
        raise ReadError(key or pairs[0][0], "slices of one series belong to different patients")
    patient, source = next(iter(patients))
    if all(np.issubdtype(s.dtype, np.integer) for s in slices):
        dtype = np.result_type(*[s.dtype for s in slices])
    else:
        dtype = np.result_type(*[s.dtype for s in slices], np.float32)
    volume = np.stack([s.astype(dtype, copy=False) for s in slices])
    meta = dict(metas[0])
    for k in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if any(m.get(k) != meta.get(k) for m in metas):
            meta.pop(k, None)
    meta["num_slices"] = len(pairs)
    meta["patient_id_source"] = source
    if sp_default:
        meta["spacing_default"] = True
    modality = str(_get(pairs[0][1], "Modality", "OT"))
    if not modality.isalnum() or len(modality) > 16:
        modality = "OT"
    image = Image(
        array=volume, spacing=(slice_sp, float(sp_rc[0]), float(sp_rc[1])), patient=patient,
        modality=modality, origin=origin, direction=direction, meta=meta,
    )
    if seg_paths:
        from medtf.io.seg import read_dicom_seg

        masks, labels, numbers = [], [], []
        for sp in seg_paths:
            res = read_dicom_seg(sp, [p for p, _ in pairs])
            masks.append(res.mask)
            labels.extend(res.labels)
            numbers.extend(res.segment_numbers)
        image.mask = np.concatenate(masks, axis=-1)
        image.meta["segment_labels"] = labels
        image.meta["segment_numbers"] = numbers
    image.meta = deid.check_meta(image.meta)
    return [image]
