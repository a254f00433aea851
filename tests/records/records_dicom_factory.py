"""Small generated DICOMs for the converter tests (pydicom Dataset + FileMetaDataset, no real data)."""

from __future__ import annotations

import pathlib

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROWS = COLS = 16


def ct_slice(pixels: np.ndarray, *, patient_id: str, series_uid: str, z: float, instance: int = 1,
             intercept: float = -1024.0, slope: float = 1.0, study_uid: str | None = None,
             spacing=(0.75, 0.8), transfer_syntax=ExplicitVRLittleEndian, extra: dict | None = None) -> Dataset:
    """One CT slice (uint16 stored values) at z = ``z`` mm, axial, with a modality LUT."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = f"{patient_id}^Test"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [-12.0, -8.0, float(z)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 5.0  # deliberately not the position spacing
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleIntercept = intercept
    ds.RescaleSlope = slope
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax)
    return ds


def save(ds: Dataset, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder: pathlib.Path, patient_id: str, n_slices: int = 4, seed: int = 0, dz: float = 2.5,
                 shuffle_names: bool = True, extra: dict | None = None, shape=(ROWS, COLS)) -> tuple[np.ndarray, list]:
    """Write one axial series; file names deliberately not in slice order.

    Returns:
        (HU volume in ascending z order as float64, file paths).
    """
    rng = np.random.default_rng(seed)
    series_uid = generate_uid()
    study_uid = generate_uid()
    stored = rng.integers(0, 3000, (n_slices,) + tuple(shape)).astype(np.uint16)
    order = rng.permutation(n_slices) if shuffle_names else np.arange(n_slices)
    paths = []
    for i in range(n_slices):
        ds = ct_slice(stored[i], patient_id=patient_id, series_uid=series_uid, study_uid=study_uid, z=10.0 + dz * i,
                      instance=int(n_slices - i), extra=extra)
        paths.append(save(ds, folder / f"img{int(order[i]):03d}.dcm"))
    return stored.astype(np.float64) - 1024.0, paths


def write_single(path: pathlib.Path, patient_id: str, seed: int = 0, extra: dict | None = None,
                 transfer_syntax=ExplicitVRLittleEndian, shape=(ROWS, COLS)) -> np.ndarray:
    """One standalone CT image (its own series); returns its HU values."""
    rng = np.random.default_rng(seed)
    stored = rng.integers(0, 3000, shape).astype(np.uint16)
    save(ct_slice(stored, patient_id=patient_id, series_uid=generate_uid(), z=0.0, extra=extra,
                  transfer_syntax=transfer_syntax), path)
    return stored.astype(np.float64) - 1024.0
