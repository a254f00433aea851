"""① Reading sources: DICOM files and series, NIfTI, PNG/JPEG/TIFF, MedMNIST npz, segmentations.

Patient identity never leaves this package: readers return :class:`~medtf.io.types.Image` objects whose
``patient`` is a keyed pseudonym.
"""

from medtf.io.types import Image, ReadError, SourceUnit

__all__ = ["Image", "ReadError", "SourceUnit"]
