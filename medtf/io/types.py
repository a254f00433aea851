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


@dataclasses.dataclass(frozen=True)
class SourceUnit:
    """What a reader reads in one call: a single file, or all files of one DICOM series.

    ``key`` identifies the unit in the manifest (a relative path, or ``series:<pseudonym>``), and
    ``paths`` are the files it consumes (every input file belongs to exactly one unit or is rejected).
    """

    kind: str  # "dicom" | "dicom_series" | "nifti" | "image" | "npz"
    paths: tuple[str, ...]
    key: str


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
