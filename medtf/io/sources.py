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
KINDS = ("dicom", "dicom_series", "nifti", "image", "npz", "stack")

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def classify(path) -> tuple[str | None, str]:
    """Classify a file by its content (not only its name).

    Args:
        path: file path.

    Returns:
        (kind, reason): kind in {"dicom", "nifti", "image", "npz"} or None with the reason it is not
        a readable source.
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
    if head.startswith(_PNG) or head.startswith(_JPEG) or head[:4] in _TIFF:
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
    from medtf.io.dicom import looks_like_dicom

    if looks_like_dicom(path):
        return "dicom", ""
    if len(head) >= 132 and head[128:132] != b"DICM" and name.endswith(".dcm"):
        return None, "named .dcm but not a DICOM file (no DICM preamble, no parseable dataset)"
    return None, "unknown file type (not DICOM, NIfTI, PNG/JPEG/TIFF or .npz)"


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


def discover(inputs: Sequence, *, pseudonymizer, mode: str = "auto",
             keep_paths: bool = False) -> tuple[list[SourceUnit], list[tuple[str, str]]]:
    """Find the source units under files/folders.

    Every input file ends up in exactly one unit or in the rejected list. DICOM headers are read
    without pixel data. Single-frame DICOM slices of one SeriesInstanceUID become one
    ``"dicom_series"`` unit (mode "auto": when the series has more than one slice and all slices carry
    ImagePositionPatient/ImageOrientationPatient; mode "volume": always); DICOM-SEG files referencing
    such a series join its unit. In mode "slice" every file is its own unit.

    Args:
        inputs: files and/or folders.
        pseudonymizer: used for series keys (``"series-" + token(SeriesInstanceUID)``).
        mode: "auto" | "volume" | "slice".
        keep_paths: key single files by their relative path (UIDs in it replaced) instead of its keyed
            pseudonym (:meth:`medtf.io.deid.Pseudonymizer.source`) — only for data known to be anonymous.

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

    units: list[SourceUnit] = []
    rejected: list[tuple[str, str]] = []
    series: dict[str, list[tuple[str, str, bool]]] = defaultdict(list)  # uid -> [(path, key, has_geometry)]
    segs: list[tuple[str, str, set]] = []  # (path, key, referenced series uids)
    def name(rel: str) -> str:
        return pseudonymizer.source(rel, keep_path=keep_paths)

    walked, rejected_walk = walk_inputs(inputs)
    rejected.extend(rejected_walk)
    for path, key in walked:
        kind, reason = classify(path)
        if kind is None:
            rejected.append((str(path), reason))
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
        if header_value(ds, "Rows") is None or header_value(ds, "Columns") is None:
            rejected.append((str(path), "DICOM object without image pixel data (no Rows/Columns)"))
            continue
        try:
            frames = int(header_value(ds, "NumberOfFrames", 1) or 1)
            uid = str(header_value(ds, "SeriesInstanceUID", "") or "")
        except (TypeError, ValueError):  # malformed header: a unit of its own; read_unit explains
            units.append(SourceUnit(kind="dicom", paths=(str(path),), key=name(key), rel=key))
            continue
        if mode == "slice" or frames > 1 or not uid:
            units.append(SourceUnit(kind="dicom", paths=(str(path),), key=name(key), rel=key))
            continue
        has_geo = image_orientation(ds) is not None and header_value(ds, "ImagePositionPatient") is not None
        series[uid].append((str(path), key, has_geo))

    series_units: dict[str, int] = {}
    for uid, members in series.items():
        grouped = mode == "volume" or (len(members) > 1 and all(g for _, _, g in members))
        if grouped:
            series_units[uid] = len(units)
            units.append(SourceUnit(kind="dicom_series", paths=tuple(sorted(p for p, _, _ in members)),
                                    key=f"series-{pseudonymizer.token(uid)}"))
        else:
            units.extend(SourceUnit(kind="dicom", paths=(p,), key=name(k), rel=k) for p, k, _ in members)
    for path, key, refs in segs:
        hits = [series_units[u] for u in sorted(refs) if u in series_units]
        if len(hits) == 1:
            i = hits[0]
            units[i] = SourceUnit(kind="dicom_series", paths=units[i].paths + (path,), key=units[i].key)
        elif not hits:
            rejected.append((path, "DICOM-SEG whose referenced series is not among the inputs as a volume "
                                   "(use mode 'auto'/'volume' and include the source images)"))
        else:
            rejected.append((path, "DICOM-SEG referencing several series; read it with medtf.io.seg.read_dicom_seg"))
    units.sort(key=lambda u: u.key)
    return units, rejected


def _patient_stand_in(unit: SourceUnit, options: ReadOptions) -> str:
    key = pathlib.PurePosixPath(unit.rel or unit.key)
    if options.patient_from == "parent" and str(key.parent) not in ("", "."):
        return str(key.parent)
    name = key.name
    for ext in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff"):
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
        if kind not in ("nifti", "image", "dicom"):
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
