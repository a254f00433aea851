"""NRRD (``.nrrd``, detached ``.nhdr``) and MetaImage (``.mha``, ``.mhd`` + data file) via SimpleITK.

Geometry follows :mod:`medtf.io.nifti` (the SimpleITK view): a 3D image is returned as array
(D, H, W, C) = (k, j, i, components), spacing (k, j, i), origin = LPS position of voxel (0, 0, 0) and
direction = ITK 3x3 row-major (columns are the i, j, k axes in LPS), all as SimpleITK reads them. A 4D
scalar image becomes (k, j, i, t) with its first three axes' geometry (like a 4D NIfTI). A 2D image is
(H, W, C) with spacing (row, col); its 2D origin and direction are embedded in 3D as (x, y, 0) and
``[[d00, d01, 0], [d10, d11, 0], [0, 0, 1]]`` (what :func:`medtf.preprocess.shift_origin` expects).
Multi-component pixels (RGB, vectors) become channels. Values keep the stored dtype.

A detached header names its data file(s) (NRRD ``data file:``, MetaImage ``ElementDataFile =``);
:func:`companion_files` lists them so that :func:`medtf.io.sources.discover` puts them in the header's
unit instead of treating them as inputs of their own.
"""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np

from medtf.io import deid
from medtf.io.types import Image, ReadError, ReadOptions

NRRD_MAGIC = b"NRRD000"
#: MetaIO header keys (MetaImage ``.mha``/``.mhd``); a header's first line names one of them.
METAIO_KEYS = frozenset({
    "ObjectType", "ObjectSubType", "NDims", "Name", "Comment", "ID", "ParentID", "Color", "CompressedData",
    "CompressedDataSize", "BinaryData", "BinaryDataByteOrderMSB", "ElementByteOrderMSB", "TransformMatrix",
    "Rotation", "Orientation", "Offset", "Position", "Origin", "CenterOfRotation", "AnatomicalOrientation",
    "ElementSpacing", "DimSize", "HeaderSize", "Modality", "SequenceID", "ElementMin", "ElementMax",
    "ElementNumberOfChannels", "ElementSize", "ElementType", "ElementDataFile", "FileName", "AcquisitionDate",
})
_META_LINE = re.compile(rb"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def metaimage_header(head: bytes) -> dict[str, str] | None:
    """The ``key = value`` lines at the start of ``head`` when it is a MetaIO header (its first line names a
    MetaIO key and ``NDims`` or ``ObjectType`` is among the keys read), else None."""
    fields: dict[str, str] = {}
    for line in head.split(b"\n"):
        m = _META_LINE.match(line.rstrip(b"\r"))
        if m is None:
            break
        key = m.group(1).decode("ascii")
        if not fields and key not in METAIO_KEYS:
            return None
        fields[key] = m.group(2).decode("latin-1")
        if key == "ElementDataFile":
            break
    if not fields or not ({"NDims", "ObjectType"} & set(fields)):
        return None
    return fields


def classify_itk(head: bytes) -> tuple[str | None, str] | None:
    """("itk", "") for an NRRD or MetaImage header, (None, reason) for a MetaIO object that is not an image,
    None when ``head`` is neither."""
    if head.startswith(NRRD_MAGIC):
        return "itk", ""
    fields = metaimage_header(head)
    if fields is None:
        return None
    kind = fields.get("ObjectType", "Image").strip()
    if kind.lower() != "image":
        return None, f"MetaIO object of type {kind[:20]!r}, not an image"
    return "itk", ""


def _header_text(path, limit: int = 1 << 16) -> tuple[bytes, list[bytes]]:
    """(format tag, header lines) of an NRRD or MetaImage header (the first ``limit`` bytes)."""
    with open(path, "rb") as fh:
        data = fh.read(limit)
    fmt = b"nrrd" if data.startswith(NRRD_MAGIC) else b"meta"
    return fmt, data.split(b"\n")


def _expand(spec: str, folder: pathlib.Path, extra_lines: list[bytes]) -> list[str]:
    """Data file names of a header field value (one name, ``LIST`` + following lines, or a printf pattern)."""
    parts = spec.split()
    if not parts or parts[0].upper() == "LOCAL":
        return []
    if parts[0].upper() == "LIST":
        names = [ln.decode("latin-1").strip() for ln in extra_lines]
        return [str(folder / n) for n in names if n]
    if "%" in parts[0] and len(parts) >= 4:
        try:
            lo, hi, step = int(parts[1]), int(parts[2]), int(parts[3])
            if step == 0:
                return []
            return [str(folder / (parts[0] % i)) for i in range(lo, hi + (1 if step > 0 else -1), step)]
        except (ValueError, TypeError):
            return []
    return [str(folder / spec.strip())]


def companion_files(path) -> list[str]:
    """Data files a detached NRRD (``.nhdr``) or MetaImage (``.mhd``) header names, as paths next to it
    (existing or not); ``[]`` for attached data (``.nrrd``, ``.mha``) or an unreadable header."""
    path = pathlib.Path(path)
    try:
        fmt, lines = _header_text(path)
    except OSError:
        return []
    folder = path.parent
    if fmt == b"nrrd":
        for i, raw in enumerate(lines[1:], start=1):
            line = raw.rstrip(b"\r")
            if not line.strip():  # end of the header
                return []
            text = line.decode("latin-1")
            if text.startswith("#") or ":" not in text:
                continue
            key, _, value = text.partition(":")
            if key.strip().lower() in ("data file", "datafile"):
                value = value.lstrip("=").strip()
                rest = [ln.rstrip(b"\r") for ln in lines[i + 1:]]
                return _expand(value, folder, rest)
        return []
    for i, raw in enumerate(lines):
        m = _META_LINE.match(raw.rstrip(b"\r"))
        if m is None:
            return []
        if m.group(1) == b"ElementDataFile":
            rest = [ln.rstrip(b"\r") for ln in lines[i + 1:]]
            return _expand(m.group(2).decode("latin-1"), folder, rest)
    return []


def data_files_of(headers, paths) -> dict[str, list[str]]:
    """{header: the entries of ``paths`` that are its data files} for the detached NRRD/MetaImage ``headers``
    (files are compared by real path; each data file goes to the first header naming it)."""
    by_real: dict[str, str] = {}
    for p in paths:
        by_real.setdefault(os.path.realpath(p), str(p))
    out: dict[str, list[str]] = {}
    taken: set[str] = set()
    for h in headers:
        for c in companion_files(h):
            p = by_real.get(os.path.realpath(c))
            if p is not None and p != str(h) and p not in taken:
                taken.add(p)
                out.setdefault(str(h), []).append(p)
    return out


def is_itk_header(path) -> bool:
    """True when ``path`` starts like an NRRD or MetaImage (image) header."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return classify_itk(head) == ("itk", "")


def _embed_2d(origin, direction) -> tuple[tuple, tuple]:
    o = (float(origin[0]), float(origin[1]), 0.0)
    d = np.eye(3)
    d[:2, :2] = np.asarray(direction, dtype=np.float64).reshape(2, 2)
    return o, tuple(float(v) for v in d.reshape(-1))


def read_itk(path, *, patient: str, options: ReadOptions = ReadOptions(), modality: str | None = None) -> Image:
    """Read an NRRD or MetaImage file (2D, 3D or 4D scalar; multi-component pixels as channels).

    Args:
        path: ``.nrrd``/``.nhdr``/``.mha``/``.mhd`` (found by content; a detached header's data file is read
            from where the header says).
        patient: patient pseudonym (these formats carry no patient ID; see ``ReadOptions.patient_from``).
        options: ``max_pixels`` is checked against the header before the data is read.
        modality: tag to store; default "NRRD" or "MHA".

    Returns:
        Image with array (H, W, C) or (D, H, W, C) in the stored dtype and the SimpleITK geometry (module
        docstring).

    Raises:
        ReadError: unreadable header, missing data file, unsupported pixel type or dimension, too large.
    """
    import SimpleITK as sitk

    with open(path, "rb") as fh:
        head = fh.read(16)
    fmt = "nrrd" if head.startswith(NRRD_MAGIC) else "metaimage"
    tag = modality or ("NRRD" if fmt == "nrrd" else "MHA")
    missing = [p for p in companion_files(path) if not os.path.isfile(p)]
    if missing:
        raise ReadError(path, f"{len(missing)} data file(s) named in the {fmt} header do not exist next to it")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ReadError(path, f"{fmt} header could not be read by SimpleITK (malformed or unsupported)") from None
    size = tuple(int(s) for s in reader.GetSize())
    comps = int(reader.GetNumberOfComponents())
    dims = len(size)
    total = int(np.prod(size, dtype=np.int64)) * comps
    if total > options.max_pixels:
        raise ReadError(path, f"header claims {'x'.join(map(str, size))}x{comps} samples, more than "
                              f"max_pixels={options.max_pixels}")
    if dims not in (2, 3, 4) or (dims == 4 and comps != 1):
        raise ReadError(path, f"expected a 2D or 3D image (or 4D scalar), received {dims}D with {comps} component(s)")
    try:
        img = reader.Execute()
    except RuntimeError:
        raise ReadError(path, f"{fmt} data could not be read (truncated, corrupt or unsupported encoding)") from None
    if "complex" in img.GetPixelIDTypeAsString():
        raise ReadError(path, f"unsupported pixel type {img.GetPixelIDTypeAsString()}")
    arr = sitk.GetArrayFromImage(img)  # (k, j, i[, c]) / (t, k, j, i)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    sp, org, dr = img.GetSpacing(), img.GetOrigin(), img.GetDirection()
    if dims == 4:
        arr = np.moveaxis(arr, 0, -1)
        spacing = tuple(float(v) for v in sp[:3][::-1])
        origin = tuple(float(v) for v in org[:3])
        direction = tuple(float(v) for v in np.asarray(dr, np.float64).reshape(4, 4)[:3, :3].reshape(-1))
    else:
        if comps == 1:
            arr = arr[..., None]
        spacing = tuple(float(v) for v in sp[::-1])
        if dims == 3:
            origin, direction = tuple(float(v) for v in org), tuple(float(v) for v in dr)
        else:
            origin, direction = _embed_2d(org, dr)
    meta = {"format": fmt}
    return Image(array=np.ascontiguousarray(arr), spacing=spacing, patient=patient, modality=tag, origin=origin,
                 direction=direction, meta=deid.check_meta(meta))
