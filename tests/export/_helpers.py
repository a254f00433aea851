"""Small shared builders for the export tests (tiny models, generated DICOM)."""

from __future__ import annotations

import pathlib

import numpy as np


def tiny_classifier(input_shape=(32, 32, 1), task="binary", num_classes=2, seed=0):
    import keras

    from medtf import models

    keras.utils.set_random_seed(seed)
    model = models.build("simple_cnn", input_shape=input_shape, num_classes=num_classes, task=task,
                         filters=(8, 16))
    # non-trivial BatchNorm statistics so folding is exercised
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            rng = np.random.default_rng(seed)
            layer.set_weights([g * rng.uniform(0.5, 1.5, g.shape), b + rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.2, m.shape), rng.uniform(0.5, 2.0, v.shape)])
    return model


def write_ct_dicom(path: pathlib.Path, rows=40, cols=48, seed=0, photometric="MONOCHROME2",
                   slope=1.0, intercept=-1024.0) -> np.ndarray:
    """Write a synthetic CT slice (int16 stored values) and return its expected modality values."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    stored = rng.integers(0, 2000, size=(rows, cols)).astype(np.int16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientID = "ANON"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelSpacing = [0.7, 0.7]
    ds.PixelData = stored.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    if photometric == "MONOCHROME1":  # inverted over the signed 16-bit stored range, before the LUT
        stored = (-1 - stored.astype(np.int64)).astype(np.int16)
    values = stored.astype(np.float64) * slope + intercept
    return values.astype(np.float32)[..., None]
