"""The contract between readers (medtf.io) and the record writer (medtf.records).

A reader turns one *source unit* (a file, or the files of one DICOM series) into one or more
:class:`Image` objects. Patient identity never leaves ``medtf.io``: ``Image.patient`` is already a
keyed pseudonym (see ``medtf.io.deid``), and ``Image.meta`` holds only non-identifying values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


class ReadError(Exception):
    """A source could not be read. ``str(err)`` is ``"<path>: <reason>"`` and contains no PHI."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NoReadableInput(ValueError):
    """None of the inputs could be read (every command maps it to exit code 3: nothing done)."""


@dataclasses.dataclass(frozen=True)
class SourceUnit:
    """What a reader reads in one call: a single file, or all files of one DICOM series.

    ``key`` identifies the unit in records, manifests and outputs: for single files the keyed pseudonym of
    the path relative to its input root (``Pseudonymizer.source``: ``"F-<16 hex>.dcm"``; the path itself
    only with ``keep_paths``, UIDs still replaced), ``"series-<token of SeriesInstanceUID>"`` for series
    (UIDs are never output raw). ``rel`` is that relative path, for use inside this process only (patient
    stand-ins, labels lookup); it is never written.
    ``paths`` are the files it consumes (every input file belongs to exactly one unit or is rejected);
    for a ``dicom_series`` they may include DICOM-SEG files or an RT Structure Set referencing the series,
    which :func:`medtf.io.read_unit` turns into ``Image.mask``; for an ``itk`` detached header
    (``.nhdr``/``.mhd``) the first path is the header, the others its data files.
    """

    kind: str  # "dicom" | "dicom_series" | "nifti" | "image" | "npz" | "stack" | "itk" (NRRD / MetaImage)
    paths: tuple[str, ...]
    key: str
    rel: str = ""


@dataclasses.dataclass
class Image:
    """A decoded image with its geometry.

    Attributes:
        array: pixels, channels last: (H, W, C) for 2D or (D, H, W, C) for 3D with the slice axis first.
            Modality values (HU for CT) unless a window was applied.
        spacing: mm per voxel in the same axis order as the spatial axes of ``array``
            ((row, col) for 2D, (slice, row, col) for 3D).
        origin: LPS position of the first voxel in mm (x, y, z), or None when unknown.
        direction: 3x3 direction cosines, row-major, ITK convention (columns are the image's x, y, z
            axes in LPS), or None.
        patient: keyed pseudonym of the patient (never the raw ID).
        modality: DICOM modality or a file-type tag ("CT", "DX", "MR", "PNG", ...).
        label: optional class label(s).
        mask: optional segmentation aligned to ``array``'s spatial axes ((H, W) / (D, H, W), or with a
            trailing channel axis for overlapping segments), uint8.
        split: split decided by the source itself (npz splits), else None.
        meta: non-identifying extras (photometric interpretation, transfer syntax, window...).
        index: position of this image inside its unit (frame / npz row), for the record key.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    patient: str
    modality: str = ""
    origin: tuple[float, float, float] | None = None
    direction: tuple[float, ...] | None = None
    label: tuple[int, ...] | None = None
    mask: np.ndarray | None = None
    split: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    index: int = 0

    @property
    def spatial_dims(self) -> int:
        return self.array.ndim - 1


FRAMES_CHOICES = ("all", "first", "middle", "each")


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How readers decode a source unit.

    Attributes:
        apply_voi: apply the header VOI window (or VOI LUT) and return float32 values in [0, 1]
            (MONOCHROME1 is then shown inverted, 1 = white); a file without a window is rejected.
        max_pixels: reject a header claiming more samples (rows x cols x frames x samples per pixel)
            than this before anything is allocated or decoded.
        frames: for multi-frame DICOM and multi-page TIFF: ``"all"`` (one (F, H, W, C) volume),
            ``"first"``, ``"middle"``, ``"each"`` (one 2D image per frame, ``index`` = frame) or an int.
        patient_from: patient stand-in for formats without a patient ID (NIfTI, PNG/JPEG/TIFF):
            ``"file"`` (each file is its own patient) or ``"parent"`` (the folder holding the file, e.g.
            one folder per case).
        rois: RT Structure Set ROIs to rasterise into a series' mask, in label order (label ``i + 1`` is
            ``rois[i]``; exact ROI names, case-insensitive); empty: every ROI, in ROI Number order.
    """

    apply_voi: bool = False
    max_pixels: int = 2**31
    frames: str | int = "all"
    patient_from: str = "file"
    rois: tuple[str, ...] = ()

    def __post_init__(self):
        if isinstance(self.rois, str) or not all(isinstance(r, str) and r.strip() for r in self.rois):
            raise ValueError(f"ReadOptions.rois: expected a sequence of ROI names, received {self.rois!r}")
        object.__setattr__(self, "rois", tuple(self.rois))
        if not (isinstance(self.frames, int) and not isinstance(self.frames, bool)) and self.frames not in FRAMES_CHOICES:
            raise ValueError(f"ReadOptions.frames: expected one of {FRAMES_CHOICES} or an int, received {self.frames!r}")
        if self.patient_from not in ("file", "parent"):
            raise ValueError(f"ReadOptions.patient_from: expected 'file' or 'parent', received {self.patient_from!r}")
        if not isinstance(self.max_pixels, int) or self.max_pixels <= 0:
            raise ValueError(f"ReadOptions.max_pixels: expected a positive int, received {self.max_pixels!r}")
