"""① Reading sources: DICOM files and series, NIfTI, NRRD/MetaImage, PNG/JPEG/TIFF/GIF, MedMNIST npz,
segmentations (DICOM-SEG, RT Structure Sets).

Patient identity never leaves this package: readers return :class:`~medtf.io.types.Image` objects whose
``patient`` is a keyed pseudonym.

Entry points (lazily imported; importing ``medtf.io`` imports neither TensorFlow nor pydicom)::

    units, rejected = discover(inputs, pseudonymizer=Pseudonymizer.default(), mode="auto")
    for unit in units:
        images = read_unit(unit, pseudonymizer=pz, options=ReadOptions())
"""

from __future__ import annotations

import importlib

from medtf.io.types import Image, ReadError, ReadOptions, SourceUnit

_LAZY = {
    "discover": "medtf.io.sources",
    "read_unit": "medtf.io.sources",
    "classify": "medtf.io.sources",
    "Pseudonymizer": "medtf.io.deid",
    "ANNEX_E_KEYWORDS": "medtf.io.deid",
    "SAFE_META_KEYS": "medtf.io.deid",
    "read_dicom_file": "medtf.io.dicom",
    "read_dicom_series": "medtf.io.dicom",
    "read_nifti": "medtf.io.nifti",
    "read_nifti_case": "medtf.io.nifti",
    "read_nifti_mask": "medtf.io.nifti",
    "read_image": "medtf.io.images",
    "iter_npz": "medtf.io.arrays",
    "read_npz": "medtf.io.arrays",
    "read_dicom_seg": "medtf.io.seg",
    "SegMask": "medtf.io.seg",
    "read_itk": "medtf.io.itk",
    "read_rtstruct": "medtf.io.rtstruct",
    "StructureMask": "medtf.io.rtstruct",
}

__all__ = ["Image", "ReadError", "ReadOptions", "SourceUnit", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medtf.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
