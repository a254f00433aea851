"""DICOM Segmentation objects (highdicom) → one binary channel per segment, aligned to source slices.

Two ways to align a SEG to its source images:

* **paths** of the source CT/MR files: the slices are ordered exactly as
  :func:`medtf.io.dicom.read_dicom_series` orders them (projection of ImagePositionPatient on the
  normal, ascending) and SEG frames are matched by Referenced SOP Instance UID (highdicom).
* **Images** (a series volume, or 2D slices with origins) from medtf readers, which carry no UIDs:
  SEG frames are matched by their Plane Position (Patient) to the slice positions (tolerance 0.01 mm
  in-plane and 1 % of the slice spacing along the normal).

Segments may overlap, so the result has one channel per segment: (D, H, W, K) uint8 in {0, 1}.
FRACTIONAL segmentations are thresholded at 0.5 of MaximumFractionalValue.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple, Sequence

import numpy as np

from medtf.io.header import SEG_SOP_CLASS, float_vector, header_value, image_orientation, read_header, series_order
from medtf.io.types import Image, ReadError

POSITION_TOL_MM = 1e-2


class SegMask(NamedTuple):
    """Result of :func:`read_dicom_seg`.

    Attributes:
        mask: uint8 (D, H, W, K) aligned to the source slices; channel k is segment ``segment_numbers[k]``.
        labels: SegmentLabel of each channel.
        segment_numbers: DICOM segment number of each channel.
    """

    mask: np.ndarray
    labels: tuple[str, ...]
    segment_numbers: tuple[int, ...]


def _segread(seg_path):
    import highdicom as hd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return hd.seg.segread(str(seg_path))
    except Exception as exc:  # noqa: BLE001
        raise ReadError(seg_path, f"not a readable DICOM Segmentation object ({type(exc).__name__})") from None


def _labels(seg) -> tuple[tuple[int, ...], tuple[str, ...]]:
    numbers = tuple(int(n) for n in seg.get_segment_numbers())
    labels = []
    for n in numbers:
        desc = seg.get_segment_description(n)
        labels.append(str(getattr(desc, "segment_label", "") or f"segment-{n}"))
    return numbers, tuple(labels)


def _binarize(arr: np.ndarray, seg) -> np.ndarray:
    if str(getattr(seg, "SegmentationType", "BINARY")) == "FRACTIONAL":
        maxv = float(getattr(seg, "MaximumFractionalValue", 255) or 255)
        return (arr.astype(np.float64) >= 0.5 * maxv).astype(np.uint8)
    return (arr > 0).astype(np.uint8)


def _frames(seg) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = np.asarray(seg.pixel_array)
    return _binarize(frames[None] if frames.ndim == 2 else frames, seg)


def _frame_info(seg_path, seg, n_frames: int):
    """[(segment number, IPP or None, referenced SOP instance UID or None)] per frame."""
    per_frame = seg.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n_frames:
        raise ReadError(seg_path, "segmentation lacks per-frame functional groups for every frame")
    shared_number = None  # a single-segment SEG may identify its segment once, in the shared groups (highdicom)
    try:
        shared = seg.SharedFunctionalGroupsSequence[0]
        shared_number = int(shared.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    except (AttributeError, IndexError, TypeError, ValueError, KeyError):
        shared_number = None
    info = []
    for f, item in enumerate(per_frame):
        try:
            number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        except (AttributeError, IndexError, TypeError, ValueError):
            if shared_number is None:
                raise ReadError(seg_path, f"frame {f} lacks a referenced segment number") from None
            number = shared_number
        ipp = None
        if "PlanePositionSequence" in item:
            try:
                ipp = np.asarray([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
            except (AttributeError, IndexError, TypeError, ValueError):
                ipp = None
        uid = None
        try:
            uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        except (AttributeError, IndexError):
            uid = None
        info.append((number, ipp, uid))
    return info


def _match_position(positions: np.ndarray, normal: np.ndarray, ipp: np.ndarray) -> tuple[int, bool]:
    """(nearest slice index, whether it is within tolerance)."""
    proj = positions @ normal
    spacing = float(np.median(np.abs(np.diff(proj)))) if len(proj) > 1 else 1.0
    d = np.abs(proj - ipp @ normal)
    k = int(np.argmin(d))
    off = positions[k] - ipp
    inplane = np.linalg.norm(off - (off @ normal) * normal)
    return k, bool(d[k] <= max(POSITION_TOL_MM, 0.01 * spacing) and inplane <= POSITION_TOL_MM)


def _assemble(seg_path, seg, shape_dhw, slice_of) -> np.ndarray:
    """Place every frame on its slice; ``slice_of(f, number, ipp, uid)`` returns the slice index."""
    d, h, w = shape_dhw
    if (int(seg.Rows), int(seg.Columns)) != (h, w):
        raise ReadError(seg_path, f"segmentation frames are {int(seg.Rows)}x{int(seg.Columns)} but the source "
                                  f"slices are {h}x{w}")
    numbers = [int(n) for n in seg.get_segment_numbers()]
    channel = {n: k for k, n in enumerate(numbers)}
    frames = _frames(seg)
    out = np.zeros((d, h, w, len(numbers)), dtype=np.uint8)
    for f, (number, ipp, uid) in enumerate(_frame_info(seg_path, seg, frames.shape[0])):
        if number not in channel:
            raise ReadError(seg_path, f"frame {f} references undefined segment {number}")
        k = slice_of(f, number, ipp, uid)
        out[k, :, :, channel[number]] |= frames[f]
    return out


def _by_uid(seg_path, seg, source_paths: Sequence) -> np.ndarray:
    pairs = []
    for p in source_paths:
        ds = read_header(p)
        if str(header_value(ds, "SOPClassUID", "")) != SEG_SOP_CLASS:
            pairs.append((str(p), ds))
    if not pairs:
        raise ReadError(seg_path, "no source images given to align the segmentation to")
    if len(pairs) > 1:
        pairs = series_order(pairs)[0]
    index = {str(header_value(ds, "SOPInstanceUID", "")): k for k, (_, ds) in enumerate(pairs)}
    positions = [header_value(ds, "ImagePositionPatient") for _, ds in pairs]
    positions = [(float_vector(v, 3) if v is not None else None) for v in positions]
    iop = image_orientation(pairs[0][1])
    normal = np.cross(iop[:3], iop[3:]) if iop is not None else None
    pos_arr = np.stack(positions) if all(p is not None for p in positions) and normal is not None else None

    def slice_of(f, number, ipp, uid):
        if uid is not None and uid in index:
            k = index[uid]
            if ipp is not None and pos_arr is not None:
                k2, ok = _match_position(pos_arr, normal, ipp)
                if not ok or k2 != k:
                    raise ReadError(seg_path, f"frame {f}: plane position disagrees with its referenced source image")
            return k
        if uid is None and ipp is not None and pos_arr is not None:
            k, ok = _match_position(pos_arr, normal, ipp)
            if ok:
                return k
        raise ReadError(seg_path, f"segmentation frame {f} references none of the given source images")

    rows, cols = int(header_value(pairs[0][1], "Rows", 0)), int(header_value(pairs[0][1], "Columns", 0))
    return _assemble(seg_path, seg, (len(pairs), rows, cols), slice_of)


def _slice_positions(images: Sequence[Image]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(positions (D, 3), normal, (H, W)) of the slices of a volume Image or of 2D Images."""
    if len(images) == 1 and images[0].spatial_dims == 3:
        im = images[0]
        if im.origin is None or im.direction is None:
            raise ValueError("source image has no origin/direction; cannot align a DICOM-SEG by position")
        d = np.asarray(im.direction, float).reshape(3, 3)
        step = d[:, 2] * im.spacing[0]
        n = im.array.shape[0]
        pos = np.asarray(im.origin, float)[None, :] + np.arange(n)[:, None] * step[None, :]
        return pos, d[:, 2], im.array.shape[1:3]
    pos, normal, hw = [], None, None
    for im in images:
        if im.spatial_dims != 2 or im.origin is None or im.direction is None:
            raise ValueError("source images must be one 3D volume or 2D slices with origin and direction")
        d = np.asarray(im.direction, float).reshape(3, 3)
        normal = d[:, 2] if normal is None else normal
        hw = hw or im.array.shape[:2]
        pos.append(np.asarray(im.origin, float))
    return np.stack(pos), normal, hw


def _by_position(seg_path, seg, images: Sequence[Image]) -> np.ndarray:
    try:
        positions, normal, (h, w) = _slice_positions(images)
    except ValueError as exc:
        raise ReadError(seg_path, str(exc)) from None

    def slice_of(f, number, ipp, uid):
        if ipp is None:
            raise ReadError(seg_path, f"frame {f} has no plane position; align by source paths instead")
        k, ok = _match_position(positions, normal, ipp)
        if not ok:
            raise ReadError(seg_path, f"segmentation frame {f} lies on none of the source slices")
        return k

    return _assemble(seg_path, seg, (len(positions), h, w), slice_of)


def read_dicom_seg(seg_path, source_images) -> SegMask:
    """Read a DICOM-SEG as per-segment binary masks aligned to its source slices.

    Args:
        seg_path: the Segmentation file.
        source_images: the source slice files (paths; aligned by SOP Instance UID in series order) or
            medtf Images (one 3D volume or 2D slices with geometry; aligned by plane position).

    Returns:
        :class:`SegMask` (mask (D, H, W, K) uint8, labels, segment_numbers).

    Raises:
        ReadError: not a SEG, references other images, frames off the source slices, size mismatch.
    """
    seg = _segread(seg_path)
    numbers, labels = _labels(seg)
    if isinstance(source_images, Image):
        source_images = [source_images]
    source_images = list(source_images)
    if not source_images:
        raise ReadError(seg_path, "no source images given to align the segmentation to")
    if all(isinstance(s, Image) for s in source_images):
        mask = _by_position(seg_path, seg, source_images)
    elif not any(isinstance(s, Image) for s in source_images):
        mask = _by_uid(seg_path, seg, source_images)
    else:
        raise TypeError("source_images: expected all paths or all medtf Images, received a mix")
    return SegMask(mask=np.ascontiguousarray(mask, dtype=np.uint8), labels=labels, segment_numbers=numbers)
