"""Walk inputs, classify files by content, group DICOM slices into series, dispatch to readers."""

from __future__ import annotations

import gzip
import os
import pathlib
import zipfile
from collections import defaultdict
from typing import Sequence

from medtf.io.types import Image, ReadError, ReadOptions, SourceUnit

MODES = ("auto", "volume", "slice")
KINDS = ("dicom", "dicom_series", "nifti", "image", "npz", "stack", "itk")

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_GIF = (b"GIF87a", b"GIF89a")


def classify(path) -> tuple[str | None, str]:
    """Classify a file by its content (not only its name).

    Args:
        path: file path.

    Returns:
        (kind, reason): kind in {"dicom", "nifti", "image", "npz", "itk"} or None with the reason it is not
        a readable source. "image" is PNG, JPEG, TIFF or GIF; "itk" is NRRD (magic ``NRRD000``, also a
        detached ``.nhdr``) or MetaImage (a MetaIO ``key = value`` header with ``NDims``/``ObjectType``:
        ``.mha``, ``.mhd``), read with SimpleITK. A detached header's data file is no source of its own:
        :func:`discover` puts it in the header's unit.
    """
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(544)
    except OSError as exc:
        return None, f"cannot open file ({exc.strerror or type(exc).__name__})"
    if size == 0:
        return None, "empty file"
    name = path.name.lower()
    # DICOM first: a DICOM preamble may legally hold a TIFF header (dual-personality files)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom", ""
    if head.startswith(_PNG) or head.startswith(_JPEG) or head[:4] in _TIFF or head[:6] in _GIF:
        return "image", ""
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return None, "corrupt zip/npz archive"
        if names and all(n.endswith(".npy") for n in names):
            return "npz", ""
        return None, "zip archive that is not an .npz of NumPy arrays"
    if _is_nifti_header(head):
        return "nifti", ""
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as fh:
                inner = fh.read(544)
        except (OSError, EOFError):
            return None, "corrupt gzip file"
        if _is_nifti_header(inner):
            return "nifti", ""
        return None, "gzip file that is not a NIfTI image"
    from medtf.io.itk import classify_itk

    itk = classify_itk(head if len(head) < 544 or not head[:1].isalpha() else head + _more(path))
    if itk is not None:
        return itk
    from medtf.io.dicom import looks_like_dicom

    if looks_like_dicom(path):
        return "dicom", ""
    if len(head) >= 132 and head[128:132] != b"DICM" and name.endswith(".dcm"):
        return None, "named .dcm but not a DICOM file (no DICM preamble, no parseable dataset)"
    return None, "unknown file type (not DICOM, NIfTI, NRRD, MetaImage, PNG/JPEG/TIFF/GIF or .npz)"


def _more(path, n: int = 4096) -> bytes:
    """Bytes 544.. of a file whose start looks like a text header (a MetaImage header can be longer)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(544)
            return fh.read(n)
    except OSError:
        return b""


def _is_nifti_header(head: bytes) -> bool:
    if len(head) < 348:
        return False
    for order in ("little", "big"):
        sizeof = int.from_bytes(head[0:4], order)
        if sizeof == 348 and head[344:347] in (b"n+1", b"ni1"):
            return True
        if sizeof == 540 and len(head) >= 8 and head[4:7] in (b"n+2", b"ni2"):
            return True
    return False


def safe_name(text: str) -> str:
    """A file name as text that any output can hold: bytes that are not UTF-8 (kept by Python as surrogate
    escapes) become ``\\xNN`` escapes, so one such name never aborts a run."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", errors="backslashreplace")


def walk_inputs(inputs: Sequence) -> tuple[list[tuple[pathlib.Path, str]], list[tuple[str, str]]]:
    """(path, key) for every file under the inputs, sorted and deterministic, and ``(path, reason)`` for
    everything the walk cannot use — nothing disappears without a trace.

    Rules: symlinked files are read under the name the user gave (the link's own path); symlinked
    folders are followed once — a link back to one of its own ancestors (a loop) or to a folder already
    walked is reported instead; unreadable folders are reported; a file reached twice (through a link) is
    reported as a duplicate of the first path. Keys of names that are not UTF-8 carry ``\\xNN`` escapes.

    Raises:
        FileNotFoundError: an input does not exist.
    """
    out: list[tuple[pathlib.Path, str]] = []
    rejected: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    walked_dirs: set[str] = set()
    for inp in inputs:
        root = pathlib.Path(inp)
        if not root.exists() and not root.is_symlink():
            raise FileNotFoundError(f"input {root} does not exist (expected a file or a folder)")
        if not root.is_dir():
            pairs = [(root, safe_name(root.name))]
        else:
            pairs = []
            stack = [(root, "", (os.path.realpath(root),))]
            walked_dirs.add(os.path.realpath(root))
            while stack:
                folder, rel, ancestors = stack.pop()
                try:
                    entries = sorted(os.scandir(folder), key=lambda e: e.name)
                except OSError as exc:
                    rejected.append((str(folder), f"folder not readable ({exc.strerror or type(exc).__name__}); "
                                                  "its files are not converted"))
                    continue
                subdirs = []
                for e in entries:
                    key = f"{rel}{safe_name(e.name)}"
                    path = pathlib.Path(e.path)
                    try:
                        is_dir = e.is_dir(follow_symlinks=True)
                    except OSError:
                        is_dir = False
                    if is_dir:
                        real = os.path.realpath(path)
                        if e.is_symlink():
                            if real in ancestors:
                                rejected.append((str(path), "symlink loop: the linked folder contains this link"))
                                continue
                            if real in walked_dirs:
                                rejected.append((str(path), "symlinked folder whose target is already among the "
                                                            "inputs (not read twice)"))
                                continue
                        walked_dirs.add(real)
                        subdirs.append((path, key + "/", ancestors + (real,)))
                    else:
                        pairs.append((path, key))
                stack.extend(reversed(subdirs))
            pairs.sort(key=lambda pk: pk[1])
        for p, key in pairs:
            real = os.path.realpath(p)
            if real in seen:
                rejected.append((str(p), f"the same file as {seen[real]!r} (reached through a symlink); read once"))
                continue
            seen[real] = key
            out.append((p, key))
    return out, rejected


def discover(inputs: Sequence, *, pseudonymizer, mode: str = "auto", keep_paths: bool = False,
             annotated_volumes: bool = False) -> tuple[list[SourceUnit], list[tuple[str, str]]]:
    """Find the source units under files/folders.

    Every input file ends up in exactly one unit or in the rejected list. DICOM headers are read
    without pixel data. Single-frame DICOM slices of one SeriesInstanceUID become one
    ``"dicom_series"`` unit (mode "auto": when the series has more than one slice and all slices carry
    ImagePositionPatient/ImageOrientationPatient; mode "volume": always); DICOM-SEG files and RT Structure
    Sets referencing such a series join its unit (read as its mask). In mode "slice" every file is its own
    unit, except, with ``annotated_volumes``, a series that a DICOM-SEG or RT Structure Set references (it
    stays one unit so that the converter can cut it into slices, each with its mask slice).

    An RT Structure Set finds its series through ReferencedFrameOfReferenceSequence → RTReferencedStudySequence
    → RTReferencedSeriesSequence (SeriesInstanceUID), else the SOP instances its ContourImageSequence items
    name, else its FrameOfReferenceUID (when exactly one input series shares it); one that references no
    series among the inputs, or one whose series already has a mask, is rejected with the reason.

    The data file of a detached NRRD/MetaImage header (``.nhdr``/``.mhd``) belongs to the header's unit.

    Args:
        inputs: files and/or folders.
        pseudonymizer: used for series keys (``"series-" + token(SeriesInstanceUID)``).
        mode: "auto" | "volume" | "slice".
        keep_paths: key single files by their relative path (UIDs in it replaced) instead of its keyed
            pseudonym (:meth:`medtf.io.deid.Pseudonymizer.source`) — only for data known to be anonymous.
        annotated_volumes: with mode "slice", keep a series with a DICOM-SEG / RT Structure Set as one unit.

    Returns:
        (units, rejected) — units sorted by key; rejected ``[(path, reason)]``.

    Raises:
        ValueError: unknown mode.
        FileNotFoundError: an input does not exist.
    """
    if mode not in MODES:
        raise ValueError(f"discover(mode=...): expected one of {MODES}, received {mode!r}")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    from medtf.io.header import SEG_SOP_CLASS, header_value, image_orientation, read_header
    from medtf.io.rtstruct import RTSTRUCT_SOP_CLASS, structure_set_references

    units: list[SourceUnit] = []
    rejected: list[tuple[str, str]] = []
    series: dict[str, list[tuple[str, str, bool]]] = defaultdict(list)  # uid -> [(path, key, has_geometry)]
    segs: list[tuple[str, str, set]] = []  # (path, key, referenced series uids)
    structs: list[tuple[str, str, tuple]] = []  # (path, key, (series uids, SOP instance uids, FoR uids))
    sop_series: dict[str, str] = {}  # SOPInstanceUID -> SeriesInstanceUID of the image slices
    for_series: dict[str, set] = defaultdict(set)  # FrameOfReferenceUID -> series uids
    single: dict[str, list[tuple[str, str]]] = defaultdict(list)  # series uid -> its files as units (mode slice)

    def name(rel: str) -> str:
        return pseudonymizer.source(rel, keep_path=keep_paths)

    walked, rejected_walk = walk_inputs(inputs)
    rejected.extend(rejected_walk)
    classified = [(path, key, *classify(path)) for path, key in walked]
    parts: dict[str, list[str]] = {}  # detached NRRD/MetaImage header -> its data files among the inputs
    if any(kind == "itk" for _, _, kind, _ in classified):
        from medtf.io.itk import data_files_of

        parts = data_files_of([p for p, _, kind, _ in classified if kind == "itk"], [p for p, *_ in classified])
    data_files = {p for ps in parts.values() for p in ps}
    for path, key, kind, reason in classified:
        if str(path) in data_files:
            continue  # a detached header's data file: read with (and listed under) its header
        if kind is None:
            rejected.append((str(path), reason))
            continue
        if kind == "itk":
            units.append(SourceUnit(kind=kind, paths=(str(path), *parts.get(str(path), ())), key=name(key), rel=key))
            continue
        if kind != "dicom":
            units.append(SourceUnit(kind=kind, paths=(str(path),), key=name(key), rel=key))
            continue
        try:
            ds = read_header(path)
        except ReadError as exc:
            rejected.append((str(path), exc.reason))
            continue
        sop = str(header_value(ds, "SOPClassUID", ""))
        if sop == SEG_SOP_CLASS:
            refs = set()
            for item in header_value(ds, "ReferencedSeriesSequence", []) or []:
                uid = str(item.get("SeriesInstanceUID", "") or "")
                if uid:
                    refs.add(uid)
            segs.append((str(path), key, refs))
            continue
        if sop == RTSTRUCT_SOP_CLASS:
            structs.append((str(path), key, structure_set_references(ds)))
            continue
        if header_value(ds, "Rows") is None or header_value(ds, "Columns") is None:
            rejected.append((str(path), "DICOM object without image pixel data (no Rows/Columns)"))
            continue
        try:
            frames = int(header_value(ds, "NumberOfFrames", 1) or 1)
            uid = str(header_value(ds, "SeriesInstanceUID", "") or "")
        except (TypeError, ValueError):  # malformed header: a unit of its own; read_unit explains
            units.append(SourceUnit(kind="dicom", paths=(str(path),), key=name(key), rel=key))
            continue
        if frames > 1 or not uid:
            units.append(SourceUnit(kind="dicom", paths=(str(path),), key=name(key), rel=key))
            continue
        has_geo = image_orientation(ds) is not None and header_value(ds, "ImagePositionPatient") is not None
        series[uid].append((str(path), key, has_geo))
        sop_uid = str(header_value(ds, "SOPInstanceUID", "") or "")
        if sop_uid:
            sop_series[sop_uid] = uid
        for_uid = str(header_value(ds, "FrameOfReferenceUID", "") or "")
        if for_uid:
            for_series[for_uid].add(uid)

    # which series each annotation (DICOM-SEG / RT Structure Set) belongs to: uid, or None with a reason
    targets: list[tuple[str, str, str | None, str]] = []  # (path, kind, series uid, reason)
    for path, _, refs in segs:
        hits = sorted(u for u in refs if u in series)
        if len(hits) == 1:
            targets.append((path, "seg", hits[0], ""))
        elif not hits:
            targets.append((path, "seg", None, "DICOM-SEG whose referenced series is not among the inputs as a volume "
                                               "(use mode 'auto'/'volume' and include the source images)"))
        else:
            targets.append((path, "seg", None, "DICOM-SEG referencing several series; read it with "
                                               "medtf.io.seg.read_dicom_seg"))
    for path, _, (ser, sops, fors) in structs:
        uid, reason = _structure_target(ser, sops, fors, series, sop_series, for_series)
        targets.append((path, "rtstruct", uid, reason))
    referenced = {uid for _, _, uid, _ in targets if uid is not None}

    series_units: dict[str, int] = {}
    for uid, members in series.items():
        if mode == "slice":
            grouped = annotated_volumes and uid in referenced
        else:
            grouped = mode == "volume" or (len(members) > 1 and all(g for _, _, g in members))
        if grouped:
            series_units[uid] = len(units)
            units.append(SourceUnit(kind="dicom_series", paths=tuple(sorted(p for p, _, _ in members)),
                                    key=f"series-{pseudonymizer.token(uid)}"))
        else:
            units.extend(SourceUnit(kind="dicom", paths=(p,), key=name(k), rel=k) for p, k, _ in members)
    masked: dict[str, str] = {}  # series uid -> kind of the annotation it already has
    for path, kind, uid, reason in targets:
        what = "DICOM-SEG" if kind == "seg" else "RT Structure Set"
        if uid is None:
            rejected.append((path, reason))
        elif uid not in series_units:
            rejected.append((path, f"{what} whose referenced series is not among the inputs as a volume (use mode "
                                   "'auto'/'volume' and include the source images)"))
        elif masked.get(uid) not in (None, "seg") or (masked.get(uid) == "seg" and kind != "seg"):
            rejected.append((path, f"{what} for a series that already has a "
                                   f"{'DICOM-SEG' if masked[uid] == 'seg' else 'RT Structure Set'} mask among the "
                                   "inputs (convert them separately)"))
        else:
            masked[uid] = kind
            i = series_units[uid]
            units[i] = SourceUnit(kind="dicom_series", paths=units[i].paths + (path,), key=units[i].key)
    units.sort(key=lambda u: u.key)
    return units, rejected


def _structure_target(ser, sops, fors, series, sop_series, for_series) -> tuple[str | None, str]:
    """(series uid, "") that an RT Structure Set references among the input series, else (None, reason)."""
    for found, how in (({u for u in ser if u in series}, "RTReferencedSeriesSequence"),
                       ({sop_series[s] for s in sops if s in sop_series}, "ContourImageSequence"),
                       ({u for f in fors for u in for_series.get(f, ())}, "FrameOfReferenceUID")):
        if len(found) == 1:
            return next(iter(found)), ""
        if len(found) > 1:
            return None, (f"RT Structure Set whose {how} matches {len(found)} series among the inputs; convert its "
                          "series with it alone")
    return None, ("RT Structure Set whose referenced series is not among the inputs (include the images it "
                  "was drawn on)")


def _patient_stand_in(unit: SourceUnit, options: ReadOptions) -> str:
    key = pathlib.PurePosixPath(unit.rel or unit.key)
    if options.patient_from == "parent" and str(key.parent) not in ("", "."):
        return str(key.parent)
    name = key.name
    for ext in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".nrrd", ".nhdr", ".mha",
                ".mhd"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return str(key.parent / name) if str(key.parent) not in ("", ".") else name


def read_unit(unit: SourceUnit, *, pseudonymizer, options: ReadOptions = ReadOptions()) -> list[Image]:
    """Read one source unit into Images.

    Args:
        unit: from :func:`discover` (or built by hand).
        pseudonymizer: :class:`medtf.io.deid.Pseudonymizer`.
        options: :class:`medtf.io.types.ReadOptions`.

    Returns:
        the unit's images (one for most files; one per row for npz; one per frame with frames="each").

    Raises:
        ReadError: bad input (the reason holds no header values).
        ValueError: unknown unit kind.
    """
    if unit.kind not in KINDS:
        raise ValueError(f"SourceUnit.kind: expected one of {KINDS}, received {unit.kind!r}")
    if not unit.paths:
        raise ValueError(f"SourceUnit {unit.key!r} has no paths")
    if unit.kind == "dicom_series":
        from medtf.io.dicom import read_dicom_series

        return read_dicom_series(list(unit.paths), pseudonymizer=pseudonymizer, options=options, key=unit.key)
    if unit.kind == "stack":
        return [read_stack(unit, pseudonymizer=pseudonymizer, options=options)]
    path = unit.paths[0]
    if unit.kind == "dicom":
        from medtf.io.dicom import read_dicom_file

        return read_dicom_file(path, pseudonymizer=pseudonymizer, options=options, key=unit.rel or unit.key)
    if unit.kind == "npz":
        from medtf.io.arrays import read_npz

        return read_npz(path, pseudonymizer=pseudonymizer, file_key=unit.rel or unit.key, options=options)
    patient = pseudonymizer.patient(_patient_stand_in(unit, options))
    if unit.kind == "nifti":
        from medtf.io.nifti import read_nifti

        return [read_nifti(path, patient=patient, options=options)]
    if unit.kind == "itk":
        from medtf.io.itk import read_itk

        return [read_itk(path, patient=patient, options=options)]
    from medtf.io.images import read_image

    return read_image(path, patient=patient, options=options)


def read_stack(unit: SourceUnit, *, pseudonymizer, options: ReadOptions = ReadOptions()) -> Image:
    """The files of a ``"stack"`` unit (one file per channel, e.g. an nnU-Net case's ``_0000``, ``_0001``)
    read with their own readers and stacked as channels, in ``unit.paths`` order.

    Raises:
        ReadError: a channel is unreadable, holds several images, or lies on another grid (shape or
            spacing) than the first.
    """
    patient = pseudonymizer.patient(unit.rel or unit.key)
    arrays, first = [], None
    for k, path in enumerate(unit.paths):
        kind, reason = classify(path)
        if kind not in ("nifti", "image", "dicom", "itk"):
            raise ReadError(path, f"channel {k}: {reason or 'unsupported type for a channel'}")
        images = read_unit(SourceUnit(kind=kind, paths=(path,), key=unit.key, rel=unit.rel),
                           pseudonymizer=pseudonymizer, options=options)
        if len(images) != 1:
            raise ReadError(path, f"channel {k} holds {len(images)} images")
        img = images[0]
        if first is None:
            first = img
        elif img.array.shape[:-1] != first.array.shape[:-1] or not all(
                abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(img.spacing, first.spacing)):
            raise ReadError(path, f"channel {k} lies on another grid ({tuple(img.array.shape[:-1])}, spacing "
                                  f"{tuple(round(float(v), 4) for v in img.spacing)}) than channel 0 "
                                  f"({tuple(first.array.shape[:-1])})")
        arrays.append(img.array)
    import numpy as np

    dtype = np.result_type(*[a.dtype for a in arrays])
    return Image(array=np.concatenate([a.astype(dtype, copy=False) for a in arrays], axis=-1), spacing=first.spacing,
                 patient=patient, modality=first.modality, origin=first.origin, direction=first.direction,
                 meta=dict(first.meta))
