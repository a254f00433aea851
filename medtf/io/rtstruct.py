"""DICOM RT Structure Sets (RTSTRUCT) → a label map on the grid of the series they were drawn on.

Each ROI's CLOSED_PLANAR (and CLOSED_PLANAR_XOR) contours are rasterised onto the series' slices:

* **Slice**: a contour's points are projected on the slice normal (row cosine x column cosine); the
  contour goes to the slice whose ImagePositionPatient projection is nearest, which must lie within half
  the slice spacing, else the structure set is rejected with the reason (a contour off the series' grid
  means it was drawn on other images).
* **Pixels**: patient mm → continuous pixel index through that slice's geometry:
  column = (P - IPP)·row cosine / column spacing, row = (P - IPP)·column cosine / row spacing
  (PixelSpacing is [row spacing, column spacing]); pixel (r, c) has its centre at (c, r).
* **Inclusion**: a pixel belongs to a contour when its centre lies inside the polygon or on its outline
  (inside: :meth:`matplotlib.path.Path.contains_points`, the crossing-number test; on the outline: an exact
  lattice test per edge, so that centres on the contour line are decided the same way whatever the edge
  direction). Several contours of one ROI on one slice combine with the even-odd rule (XOR), so a contour
  inside another is a hole.
* **Labels**: the chosen ROIs get label ids 1..K — by default every ROI of StructureSetROISequence in ROI
  Number order, or the ``rois`` named (exact names, case-insensitive) in the order given. Where ROIs
  overlap, the later ROI (higher label id) wins. Contours that enclose no area (POINT, OPEN_PLANAR,
  OPEN_NONPLANAR) are not rasterised.

No patient identifier leaves this module: reasons name ROIs by number and name only, and an ROI name that
contains one of the structure set's patient attributes is replaced by ``ROI-<number>``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from medtf.io import deid
from medtf.io.header import float_vector, header_value, image_orientation, pixel_spacing, read_header, series_order
from medtf.io.types import Image, ReadError

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
AREA_TYPES = ("CLOSED_PLANAR", "CLOSED_PLANAR_XOR")
_EPS_PX = 1e-6  # pixel centres closer than this to a contour edge lie on it


class StructureMask(NamedTuple):
    """Result of :func:`read_rtstruct`.

    Attributes:
        mask: uint8 (D, H, W) label map on the series grid; label ``i + 1`` is ``labels[i]``, 0 background.
        labels: ROI name of each label id (patient identifiers replaced, see the module docstring).
        roi_numbers: ROI Number of each label id.
    """

    mask: np.ndarray
    labels: tuple[str, ...]
    roi_numbers: tuple[int, ...]


# ------------------------------------------------------------------------------------------- references
def structure_set_references(ds) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """What an RT Structure Set header references: (series UIDs from ReferencedFrameOfReferenceSequence →
    RTReferencedStudySequence → RTReferencedSeriesSequence, SOP instance UIDs from the ContourImageSequence
    items (there and in every contour), frame-of-reference UIDs)."""
    series, sops, fors = [], [], []

    def uid(item, keyword):
        try:
            value = str(item.get(keyword, "") or "").strip()
        except Exception:  # noqa: BLE001 - malformed element
            return ""
        return value

    for ref in header_value(ds, "ReferencedFrameOfReferenceSequence", []) or []:
        if uid(ref, "FrameOfReferenceUID"):
            fors.append(uid(ref, "FrameOfReferenceUID"))
        for study in ref.get("RTReferencedStudySequence", []) or []:
            for ser in study.get("RTReferencedSeriesSequence", []) or []:
                if uid(ser, "SeriesInstanceUID"):
                    series.append(uid(ser, "SeriesInstanceUID"))
                for img in ser.get("ContourImageSequence", []) or []:
                    if uid(img, "ReferencedSOPInstanceUID"):
                        sops.append(uid(img, "ReferencedSOPInstanceUID"))
    for roi in header_value(ds, "StructureSetROISequence", []) or []:
        if uid(roi, "ReferencedFrameOfReferenceUID"):
            fors.append(uid(roi, "ReferencedFrameOfReferenceUID"))
    for rc in header_value(ds, "ROIContourSequence", []) or []:
        for contour in rc.get("ContourSequence", []) or []:
            for img in contour.get("ContourImageSequence", []) or []:
                if uid(img, "ReferencedSOPInstanceUID"):
                    sops.append(uid(img, "ReferencedSOPInstanceUID"))
    if uid(ds, "FrameOfReferenceUID"):
        fors.append(uid(ds, "FrameOfReferenceUID"))
    return tuple(dict.fromkeys(series)), tuple(dict.fromkeys(sops)), tuple(dict.fromkeys(fors))


def _names_sop_class(path, sop_class: str) -> bool:
    """Whether the first 8 KiB of ``path`` hold the UID ``sop_class`` (a byte scan: a pre-filter only)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError:
        return False
    uid = sop_class.encode()
    i = head.find(uid)
    while i >= 0:
        nxt = head[i + len(uid): i + len(uid) + 1]
        if not nxt or nxt not in b"0123456789.":
            return True
        i = head.find(uid, i + 1)
    return False


def is_rtstruct(path) -> bool:
    """True when ``path`` is a DICOM RT Structure Set (a byte scan of the file's start, then the header)."""
    if not _names_sop_class(path, RTSTRUCT_SOP_CLASS):
        return False
    try:
        return str(header_value(read_header(path), "SOPClassUID", "")) == RTSTRUCT_SOP_CLASS
    except ReadError:
        return False


# ------------------------------------------------------------------------------------------------- ROIs
def _phi_values(ds) -> list[str]:
    """Lower-cased patient attribute values (Annex E keywords at the top level) of 3+ characters."""
    values = []
    for elem in ds:
        try:
            if elem.VR == "SQ" or not deid.is_phi_keyword(elem.keyword):
                continue
            text = str(elem.value or "")
        except Exception:  # noqa: BLE001
            continue
        for part in text.replace("\\", "^").split("^"):
            part = part.strip().lower()
            if len(part) >= 3:
                values.append(part)
    return values


def roi_table(ds, path) -> list[tuple[int, str, str]]:
    """[(ROI Number, ROI Name, name safe to output)] of StructureSetROISequence in ROI Number order.

    Raises:
        ReadError: no StructureSetROISequence, or an ROI without a valid ROI Number.
    """
    items = header_value(ds, "StructureSetROISequence", None)
    if not items:
        raise ReadError(path, "RT Structure Set without StructureSetROISequence (no ROIs)")
    phi = _phi_values(ds)
    rows = []
    for i, item in enumerate(items):
        try:
            number = int(item.ROINumber)
        except (AttributeError, TypeError, ValueError):
            raise ReadError(path, f"StructureSetROISequence item {i} lacks a valid ROINumber") from None
        name = str(item.get("ROIName", "") or "").strip()
        safe = name if name and not any(v in name.lower() for v in phi) else f"ROI-{number}"
        rows.append((number, name or f"ROI-{number}", safe))
    rows.sort(key=lambda r: r[0])
    return rows


def select_rois(path, table: list[tuple[int, str, str]], rois: Sequence[str] = ()) -> list[tuple[int, str, str]]:
    """The ROIs to rasterise, in label order: ``rois`` (case-insensitive exact names) or the whole table.

    Raises:
        ReadError: a named ROI is not in the structure set (the reason lists the available names), a name
            matches several ROIs, or more than 255 ROIs would be needed.
    """
    if not rois:
        chosen = list(table)
    else:
        chosen = []
        available = ", ".join(repr(s) for _, _, s in table)
        for name in rois:
            hits = [r for r in table if r[1].lower() == name.strip().lower()]
            if not hits:
                raise ReadError(path, f"RT Structure Set has no ROI named {name!r}; available: {available}"[:500])
            if len(hits) > 1:
                raise ReadError(path, f"ROI name {name!r} names {len(hits)} ROIs (numbers "
                                      f"{[h[0] for h in hits]}) in the structure set")
            chosen.append(hits[0])
    if len(chosen) > 255:
        raise ReadError(path, f"{len(chosen)} ROIs do not fit a uint8 label map; choose at most 255 with --roi")
    return chosen


# ------------------------------------------------------------------------------------------- rasteriser
def _outline(poly: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixel centres lying on the polygon's edges (within ``_EPS_PX``)."""
    h, w = shape
    rows, cols = [], []
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
        c0, c1 = max(0, math.ceil(min(x0, x1) - _EPS_PX)), min(w - 1, math.floor(max(x0, x1) + _EPS_PX))
        r0, r1 = max(0, math.ceil(min(y0, y1) - _EPS_PX)), min(h - 1, math.floor(max(y0, y1) + _EPS_PX))
        if c0 > c1 or r0 > r1:
            continue
        yy, xx = np.mgrid[r0:r1 + 1, c0:c1 + 1]
        length = math.hypot(x1 - x0, y1 - y0)
        cross = (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0)
        on = np.abs(cross) <= _EPS_PX * max(length, 1.0)
        rows.append(yy[on])
        cols.append(xx[on])
    if not rows:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(rows), np.concatenate(cols)


def rasterize_polygon(poly, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside or on one closed polygon.

    Args:
        poly: (N, 2) vertices in continuous pixel index coordinates (x = column, y = row; pixel (r, c) has
            its centre at (c, r)); the polygon closes from the last vertex to the first.
        shape: (H, W) of the slice.

    Returns:
        bool (H, W).
    """
    h, w = shape
    out = np.zeros((h, w), dtype=bool)
    poly = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if len(poly) < 3 or not np.all(np.isfinite(poly)):
        return out
    c0, c1 = max(0, math.floor(poly[:, 0].min())), min(w - 1, math.ceil(poly[:, 0].max()))
    r0, r1 = max(0, math.floor(poly[:, 1].min())), min(h - 1, math.ceil(poly[:, 1].max()))
    if c0 > c1 or r0 > r1:
        return out
    from matplotlib.path import Path

    yy, xx = np.mgrid[r0:r1 + 1, c0:c1 + 1]
    inside = Path(poly, closed=False).contains_points(np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64))
    out[r0:r1 + 1, c0:c1 + 1] = inside.reshape(yy.shape)
    rr, cc = _outline(poly, shape)
    out[rr, cc] = True
    return out


def rasterize_contours(polygons: Sequence, shape: tuple[int, int]) -> np.ndarray:
    """Several contours of one ROI on one slice, combined with the even-odd rule (a contour inside another
    is a hole): bool (H, W). See :func:`rasterize_polygon` for the pixel rule."""
    out = np.zeros(shape, dtype=bool)
    for poly in polygons:
        out ^= rasterize_polygon(poly, shape)
    return out


# ---------------------------------------------------------------------------------------- series geometry
class _Grid(NamedTuple):
    positions: np.ndarray  # (D, 3) ImagePositionPatient per slice, in series order
    row_cos: np.ndarray
    col_cos: np.ndarray
    normal: np.ndarray
    spacing_rc: np.ndarray  # (row spacing, column spacing)
    shape: tuple[int, int, int]
    slice_spacing: float


def _grid_from_headers(rt_path, pairs, slice_spacing: float | None) -> _Grid:
    positions = [float_vector(header_value(ds, "ImagePositionPatient"), 3)
                 if header_value(ds, "ImagePositionPatient") is not None else None for _, ds in pairs]
    iop = image_orientation(pairs[0][1])
    sp, _ = pixel_spacing(pairs[0][1])
    if iop is None or any(p is None for p in positions) or sp is None:
        raise ReadError(rt_path, "the referenced series lacks ImagePositionPatient/ImageOrientationPatient/PixelSpacing; "
                                 "contours cannot be placed on it")
    pos = np.stack(positions)
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    if slice_spacing is None:
        proj = pos @ normal
        slice_spacing = float(np.median(np.abs(np.diff(proj)))) if len(proj) > 1 else 1.0
    rows, cols = int(header_value(pairs[0][1], "Rows", 0)), int(header_value(pairs[0][1], "Columns", 0))
    return _Grid(pos, row, col, normal, np.asarray(sp, float), (len(pairs), rows, cols), float(slice_spacing))


def _grid_from_image(rt_path, image: Image) -> _Grid:
    if image.spatial_dims != 3 or image.origin is None or image.direction is None:
        raise ReadError(rt_path, "source image must be a volume with origin and direction to place contours on")
    d = np.asarray(image.direction, float).reshape(3, 3)
    n = image.array.shape[0]
    pos = np.asarray(image.origin, float)[None, :] + np.arange(n)[:, None] * (d[:, 2] * image.spacing[0])[None, :]
    return _Grid(pos, d[:, 0], d[:, 1], d[:, 2], np.asarray(image.spacing[1:], float),
                 tuple(int(s) for s in image.array.shape[:3]), float(image.spacing[0]))


def _contours_of(rt_path, ds) -> dict[int, list[np.ndarray]]:
    """{ROI Number: [(N, 3) contour points in mm]} of the area-enclosing contours."""
    out: dict[int, list[np.ndarray]] = {}
    for i, rc in enumerate(header_value(ds, "ROIContourSequence", []) or []):
        try:
            number = int(rc.ReferencedROINumber)
        except (AttributeError, TypeError, ValueError):
            raise ReadError(rt_path, f"ROIContourSequence item {i} lacks a valid ReferencedROINumber") from None
        for j, contour in enumerate(rc.get("ContourSequence", []) or []):
            kind = str(contour.get("ContourGeometricType", "") or "").strip().upper()
            if kind not in AREA_TYPES:
                continue
            try:
                pts = np.asarray([float(v) for v in contour.ContourData], dtype=np.float64)
            except (AttributeError, TypeError, ValueError):
                raise ReadError(rt_path, f"ROI {number}: contour {j} has no valid ContourData") from None
            if pts.size % 3 or not np.all(np.isfinite(pts)):
                raise ReadError(rt_path, f"ROI {number}: contour {j} ContourData is not a list of (x, y, z) points")
            out.setdefault(number, []).append(pts.reshape(-1, 3))
    return out


def _rasterize(rt_path, ds, grid: _Grid, rois: Sequence[str]) -> StructureMask:
    chosen = select_rois(rt_path, roi_table(ds, rt_path), rois)
    contours = _contours_of(rt_path, ds)
    d, h, w = grid.shape
    proj = grid.positions @ grid.normal
    half = 0.5 * grid.slice_spacing
    mask = np.zeros((d, h, w), dtype=np.uint8)
    for label, (number, _, safe) in enumerate(chosen, start=1):
        per_slice: dict[int, list[np.ndarray]] = {}
        for j, pts in enumerate(contours.get(number, [])):
            z = pts @ grid.normal
            zc = float(np.median(z))
            if float(np.max(np.abs(z - zc))) > half + 1e-6:
                raise ReadError(rt_path, f"ROI {number} ({safe!r}): contour {j} is not planar on a slice (its points "
                                         f"spread {float(np.ptp(z)):.3g} mm along the slice normal)")
            dist = np.abs(proj - zc)
            k = int(np.argmin(dist))
            if dist[k] > half + 1e-6:
                raise ReadError(rt_path, f"ROI {number} ({safe!r}): contour {j} lies {float(dist[k]):.3g} mm from the "
                                         f"nearest slice of the series, more than half the slice spacing "
                                         f"({half:.3g} mm)")
            off = pts - grid.positions[k][None, :]
            xy = np.stack([off @ grid.row_cos / grid.spacing_rc[1], off @ grid.col_cos / grid.spacing_rc[0]], axis=1)
            per_slice.setdefault(k, []).append(xy)
        for k, polys in per_slice.items():
            mask[k][rasterize_contours(polys, (h, w))] = label  # a later ROI wins where ROIs overlap
    return StructureMask(mask, tuple(s for _, _, s in chosen), tuple(n for n, _, _ in chosen))


def read_rtstruct(rt_path, source, *, rois: Sequence[str] = (), slice_spacing: float | None = None) -> StructureMask:
    """Rasterise an RT Structure Set onto the grid of its series (see the module docstring).

    Args:
        rt_path: the RTSTRUCT file.
        source: the series' slices as paths (ordered like :func:`medtf.io.dicom.read_dicom_series`), as
            ``(path, header)`` pairs already in series order, or a medtf volume :class:`Image` with origin and
            direction.
        rois: ROI names to rasterise, in label order (case-insensitive); empty: every ROI by ROI Number.
        slice_spacing: the series' slice spacing in mm (default: from the slice positions; 1.0 for one slice).

    Returns:
        :class:`StructureMask` (label map (D, H, W) uint8, ROI names, ROI numbers).

    Raises:
        ReadError: not an RT Structure Set, unknown ROI name, contour off the series' slices, malformed contours.
    """
    ds = read_header(rt_path)
    if str(header_value(ds, "SOPClassUID", "")) != RTSTRUCT_SOP_CLASS:
        raise ReadError(rt_path, "not an RT Structure Set (SOP class 1.2.840.10008.5.1.4.1.1.481.3)")
    if isinstance(source, Image):
        grid = _grid_from_image(rt_path, source)
    else:
        source = list(source)
        if not source:
            raise ReadError(rt_path, "no source images given to place the contours on")
        if all(isinstance(s, tuple) for s in source):
            pairs = source
        else:
            pairs = [(str(p), read_header(p)) for p in source]
            if len(pairs) > 1:
                ordered = series_order(pairs)
                pairs = ordered[0]
                slice_spacing = ordered[1] if slice_spacing is None else slice_spacing
        grid = _grid_from_headers(rt_path, pairs, slice_spacing)
    return _rasterize(rt_path, ds, grid, rois)


# -------------------------------------------------------------------------------- dataset label names
def structure_label_names(units, rois: Sequence[str] = ()) -> tuple[list[str] | None, dict[str, str]]:
    """Label names of a dataset whose series carry RT Structure Sets, and the units that do not fit them.

    With ``rois`` the names are ``["background", *rois]`` (each structure set is checked when it is read).
    Without, every structure set's ROIs (ROI Number order) must be the same list (case-insensitive) for the
    label ids to mean the same everywhere: the list most structure sets share (ties: the first unit's) is
    the dataset's, and units with another list are returned with the reason.

    Args:
        units: ``medtf.io.SourceUnit`` s as :func:`medtf.io.discover` builds them (a series' DICOM-SEG /
            RTSTRUCT files after its slices); only ``dicom_series`` units holding an RTSTRUCT are looked at.
        rois: the ``--roi`` names.

    Returns:
        (label names or None when no unit holds a structure set, {unit key: rejection reason}).
    """
    from medtf.io.header import SEG_SOP_CLASS

    found: list[tuple[str, list[str]]] = []
    for unit in sorted(units, key=lambda u: u.key):
        if unit.kind != "dicom_series":
            continue
        for p in reversed(unit.paths):  # discover() appends a series' SEG / RTSTRUCT files after its slices
            if is_rtstruct(p):
                try:
                    ds = read_header(p)
                    found.append((unit.key, [s for _, _, s in roi_table(ds, p)]))
                except ReadError:
                    pass  # the reader rejects it with the reason
                break
            if not _names_sop_class(p, SEG_SOP_CLASS):
                break  # an image slice: no annotation before it
    if not found:
        return None, {}
    if rois:
        return ["background", *rois], {}
    counts: dict[tuple, int] = {}
    for _, names in found:
        counts[tuple(n.lower() for n in names)] = counts.get(tuple(n.lower() for n in names), 0) + 1
    best = max(counts.values())
    ref = next(names for _, names in found if counts[tuple(n.lower() for n in names)] == best)
    ref_key = tuple(n.lower() for n in ref)
    reject = {key: (f"its RT Structure Set's ROIs {names} differ from the other structure sets' {ref} (label ids "
                    "would disagree); choose and order the ROIs with --roi")[:500]
              for key, names in found if tuple(n.lower() for n in names) != ref_key}
    return ["background", *ref], reject
