"""Craft small DICOM files with pydicom for the medtf.io tests."""

from __future__ import annotations

import pathlib

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SERIES_UID = "1.2.826.0.1.3680043.10.1234.1"
STUDY_UID = "1.2.826.0.1.3680043.10.1234.2"


def make_slice(
    path,
    *,
    z: float = 0.0,
    pixels: np.ndarray | None = None,
    rows: int = 8,
    cols: int = 6,
    iop=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    origin_xy=(-10.0, -20.0),
    pixel_spacing=(0.5, 0.75),
    series_uid: str = SERIES_UID,
    patient_id: str = "PAT-0001",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    signed: bool = False,
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    extra: dict | None = None,
    seed: int = 0,
) -> pathlib.Path:
    """Write one single-frame CT slice; ``z`` is the offset along the slice normal."""
    iop = np.asarray(iop, float)
    normal = np.cross(iop[:3], iop[3:])
    ipp = origin_xy[0] * iop[:3] + origin_xy[1] * iop[3:] + z * normal
    if pixels is None:
        rng = np.random.default_rng(seed)
        hi = 2 ** (bits_stored - 1) - 1 if signed else 2**bits_stored - 1
        lo = -(2 ** (bits_stored - 1)) if signed else 0
        pixels = rng.integers(lo, hi + 1, size=(rows, cols))
    pixels = np.asarray(pixels).astype(np.int16 if signed else np.uint16)
    rows, cols = pixels.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.PatientName = "Doe^Jane"
    ds.Modality = "CT"
    ds.InstanceNumber = 1
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = 9.99  # deliberately wrong: spacing must come from positions
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.PixelData = pixels.tobytes()
    path = pathlib.Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_series(folder, n: int = 5, *, dz: float = 2.5, z0: float = -30.0, skip=(), duplicate=None, **kw):
    """Write ``n`` slices (names shuffled w.r.t. position); return their paths."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    order = list(range(n))[::-1]
    for k, i in enumerate(order):
        if i in skip:
            continue
        paths.append(make_slice(folder / f"f{k:03d}.dcm", z=z0 + i * dz, seed=i, **kw))
    if duplicate is not None:
        paths.append(make_slice(folder / "dup.dcm", z=z0 + duplicate * dz, seed=99, **kw))
    return paths


def read(path):
    return pydicom.dcmread(str(path))
