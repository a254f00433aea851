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
from medtf.preprocess.numpy_ops import invert_monochrome1, modality_lut, voi_window
from medtf.io.header import (
    DUPLICATE_TOL_MM,
    GAP_REL_TOL,
    SEG_SOP_CLASS,
    direction_from_iop,
    float_vector,
    header_value,
    image_orientation,
    pixel_spacing,
    read_header,
    series_order,
)
from medtf.io.types import Image, ReadError, ReadOptions


# ----------------------------------------------------------------------------------------------- headers
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


def patient_key(ds, pseudonymizer, fallback: str) -> tuple[str, str]:
    """(pseudonym, source attribute): PatientID, else StudyInstanceUID, else SeriesInstanceUID, else file."""
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(header_value(ds, keyword, "") or "").strip()
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
        value = header_value(ds, keyword)
        if isinstance(value, str) and value.replace("_", "").replace(" ", "").isalnum() and len(value) <= 32:
            meta[keyword] = value
    for keyword in ("BitsStored", "BitsAllocated", "PixelRepresentation", "SamplesPerPixel", "Rows",
                    "Columns", "NumberOfFrames"):
        value = header_value(ds, keyword)
        try:
            if value is not None:
                meta[keyword] = int(value)
        except (TypeError, ValueError):
            pass
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        value = header_value(ds, keyword)
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
    ts = header_value(fm, "TransferSyntaxUID") if fm is not None else None
    if ts is not None and _uid_name(ts):
        meta["TransferSyntax"] = _uid_name(ts)
    sop = header_value(ds, "SOPClassUID")
    if sop is not None and _uid_name(sop):
        meta["SOPClass"] = _uid_name(sop)
    return meta


def _check_size(path, ds, max_pixels: int) -> tuple[int, int, int, int]:
    """Rows, Columns, frames, samples from the header; reject absurd claims before allocating."""
    try:
        rows = int(header_value(ds, "Rows", 0))
        cols = int(header_value(ds, "Columns", 0))
        frames = int(header_value(ds, "NumberOfFrames", 1) or 1)
        samples = int(header_value(ds, "SamplesPerPixel", 1) or 1)
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
def _first(value):
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return value[0]
    return value


def _apply_voi(path, values: np.ndarray, ds) -> np.ndarray:
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            center = float(_first(ds.WindowCenter))
            width = float(_first(ds.WindowWidth))
            return voi_window(values, center, width, str(header_value(ds, "VOILUTFunction", "LINEAR")))
        except (TypeError, ValueError) as exc:
            raise ReadError(path, f"invalid VOI window in the header ({deid.scrub(str(exc), ds)})") from None
    if header_value(ds, "VOILUTSequence"):
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
    photometric = str(header_value(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
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
            bits = int(header_value(ds, "BitsStored", arr.dtype.itemsize * 8))
            signed = int(header_value(ds, "PixelRepresentation", 0)) == 1
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


# ------------------------------------------------------------------------------------- multi-frame geometry
def _functional(ds, frame: int | None, seq: str, attr: str):
    """A value from per-frame functional groups (frame) or shared functional groups."""
    if frame is not None:
        per = header_value(ds, "PerFrameFunctionalGroupsSequence")
        if per is not None and frame < len(per):
            item = per[frame]
            if seq in item and len(item[seq].value) and attr in item[seq].value[0]:
                return item[seq].value[0][attr].value
    shared = header_value(ds, "SharedFunctionalGroupsSequence")
    if shared is not None and len(shared):
        item = shared[0]
        if seq in item and len(item[seq].value) and attr in item[seq].value[0]:
            return item[seq].value[0][attr].value
    return None


def _multiframe_geometry(ds, frames: int):
    """(frame spacing or None, row/col spacing or None, origin or None, direction or None) for enhanced
    multi-frame objects, from the functional groups."""
    sp = _functional(ds, 0, "PixelMeasuresSequence", "PixelSpacing")
    sp = float_vector(sp, 2) if sp is not None else None
    iop = _functional(ds, 0, "PlaneOrientationSequence", "ImageOrientationPatient")
    iop = float_vector(iop, 6) if iop is not None else None
    positions = []
    for f in range(frames):
        ipp = _functional(ds, f, "PlanePositionSequence", "ImagePositionPatient")
        ipp = float_vector(ipp, 3) if ipp is not None else None
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
    if str(header_value(ds, "SOPClassUID", "")) == SEG_SOP_CLASS:
        raise ReadError(path, "DICOM Segmentation object: read it with medtf.io.seg.read_dicom_seg together "
                              "with its source images (discover() attaches it to the referenced series)")
    from medtf.io.rtstruct import RTSTRUCT_SOP_CLASS

    if str(header_value(ds, "SOPClassUID", "")) == RTSTRUCT_SOP_CLASS:
        raise ReadError(path, "RT Structure Set: read it with medtf.io.rtstruct.read_rtstruct together with the "
                              "series it references (discover() attaches it to that series)")
    _check_size(path, ds, options.max_pixels)
    arr, meta = decode_pixels(path, ds, options)
    patient, source = patient_key(ds, pseudonymizer, key or str(path))
    meta["patient_id_source"] = source
    modality = str(header_value(ds, "Modality", "OT"))
    if not modality.isalnum() or len(modality) > 16:
        modality = "OT"
    n_frames = int(header_value(ds, "NumberOfFrames", 1) or 1)

    spacing_rc, _ = pixel_spacing(ds)
    frame_spacing = None
    origin = direction = None
    if n_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        frame_spacing, sp_mf, origin, direction = _multiframe_geometry(ds, n_frames)
        if spacing_rc is None and sp_mf is not None:
            spacing_rc = sp_mf
    iop = image_orientation(ds)
    if origin is None:
        ipp = header_value(ds, "ImagePositionPatient")
        ipp = float_vector(ipp, 3) if ipp is not None else None
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


def read_dicom_series(paths: Sequence, *, pseudonymizer, options: ReadOptions = ReadOptions(),
                      key: str | None = None) -> list[Image]:
    """Assemble single-frame DICOM slices of one series into a (D, H, W, 1) volume (HU for CT).

    DICOM-SEG files among ``paths`` become ``Image.mask`` (D, H, W, K) with
    ``meta["segment_labels"]``; an RT Structure Set among them becomes ``Image.mask`` (D, H, W), a label
    map (``ReadOptions.rois``; :mod:`medtf.io.rtstruct`), with its ROI names in ``meta["segment_labels"]``
    and ``meta["seg_type"] = "RTSTRUCT"``.

    Args:
        paths: the series' files in any order (plus DICOM-SEG files referencing it).
        pseudonymizer: :class:`medtf.io.deid.Pseudonymizer`.
        options: :class:`ReadOptions`.
        key: unit key (patient stand-in when the header has no IDs).

    Returns:
        ``[Image]`` with spacing (slice, row, col), origin (first slice IPP), ITK direction.

    Raises:
        ReadError: see :func:`medtf.io.header.series_order`; also several series or patients mixed.
    """
    if not paths:
        raise ReadError(key or "<series>", "empty series")
    from medtf.io.rtstruct import RTSTRUCT_SOP_CLASS

    headers, seg_paths, rt_paths = [], [], []
    for p in paths:
        ds = read_header(p, defer=True)  # one parse per file: pixel data is loaded only when decoded
        sop = str(header_value(ds, "SOPClassUID", ""))
        if sop == SEG_SOP_CLASS:
            seg_paths.append(str(p))
        elif sop == RTSTRUCT_SOP_CLASS:
            rt_paths.append(str(p))
        else:
            headers.append((str(p), ds))
    if not headers:
        raise ReadError(paths[0], "series holds only DICOM-SEG / RT Structure Set objects, no images")
    if len(rt_paths) > 1 or (rt_paths and seg_paths):
        raise ReadError(rt_paths[-1], "a series takes one mask: several RT Structure Sets (or one and a DICOM-SEG) "
                                      "reference it")
    series = {str(header_value(ds, "SeriesInstanceUID", "")) for _, ds in headers}
    if len(series) != 1:
        raise ReadError(headers[0][0], f"files of {len(series)} different series given as one series")
    pairs, slice_sp, origin, direction, sp_rc, sp_default = series_order(headers)
    total = len(pairs) * int(header_value(pairs[0][1], "Rows", 0)) * int(header_value(pairs[0][1], "Columns", 0))
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
    modality = str(header_value(pairs[0][1], "Modality", "OT"))
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
    if rt_paths:
        from medtf.io.rtstruct import read_rtstruct

        res = read_rtstruct(rt_paths[0], pairs, rois=options.rois, slice_spacing=None if sp_default else slice_sp)
        image.mask = res.mask
        image.meta["segment_labels"] = list(res.labels)
        image.meta["segment_numbers"] = list(res.roi_numbers)
        image.meta["seg_type"] = "RTSTRUCT"
    image.meta = deid.check_meta(image.meta)
    return [image]
