"""Write a small CT series and an RT Structure Set referencing it, with pydicom, for the RTSTRUCT tests.

Contours are given in continuous pixel coordinates of a slice (x = column, y = row; pixel (r, c) has its
centre at (c, r)) and written in patient mm through that slice's ImagePositionPatient,
ImageOrientationPatient and PixelSpacing, so the tests know which pixels each contour covers.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from io_dicom_factory import make_series  # noqa: E402

PATIENT_ID = "RTCANARY_ID_90210"
PATIENT_NAME = "Canaryson^Rtstructa"
FOR_UID = "1.2.826.0.1.3680043.10.1234.77"


def write_ct(folder, *, n: int = 6, rows: int = 32, cols: int = 32, pixel_spacing=(0.8, 0.7), dz: float = 2.5,
             z0: float = -40.0, origin_xy=(-12.3, 7.9), iop=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
             series_uid: str = "1.2.826.0.1.3680043.10.1234.55", for_uid: str = FOR_UID) -> list[pathlib.Path]:
    """A CT series of ``n`` slices (rows x cols) with the canary patient; returns its paths."""
    return make_series(folder, n, dz=dz, z0=z0, rows=rows, cols=cols, pixel_spacing=pixel_spacing,
                        origin_xy=origin_xy, iop=iop, series_uid=series_uid, patient_id=PATIENT_ID,
                        extra={"PatientName": PATIENT_NAME, "FrameOfReferenceUID": for_uid})


def slice_headers(paths) -> list:
    """Headers of the series sorted along the normal (slice k of the volume)."""
    hdrs = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in paths]
    iop = np.asarray(hdrs[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(hdrs, key=lambda d: float(np.asarray(d.ImagePositionPatient, float) @ normal))


def to_mm(ds, xy, dz: float = 0.0) -> np.ndarray:
    """(N, 2) pixel coordinates (x = column, y = row) on slice ``ds`` → (N, 3) patient mm (+ dz along the normal)."""
    iop = np.asarray(ds.ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    dr, dc = (float(v) for v in ds.PixelSpacing)
    ipp = np.asarray(ds.ImagePositionPatient, float)
    xy = np.asarray(xy, float)
    return ipp + xy[:, :1] * dc * row + xy[:, 1:2] * dr * col + dz * np.cross(row, col)


def write_rtstruct(path, ct_paths, rois, *, reference: str = "series", patient_id: str = PATIENT_ID,
                   patient_name: str = PATIENT_NAME, for_uid: str = FOR_UID) -> pathlib.Path:
    """Write an RT Structure Set.

    Args:
        path: output file.
        ct_paths: the series it is drawn on.
        rois: ``[(roi number, name, [(slice index, (N, 2) pixel xy, dz mm, geometric type), ...]), ...]``.
        reference: how it names the series: "series" (RTReferencedSeriesSequence, the usual way), "sops"
            (only ContourImageSequence SOP instance UIDs), "for" (only the FrameOfReferenceUID), "none".
    """
    hdrs = slice_headers(ct_paths)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.StudyInstanceUID = str(hdrs[0].StudyInstanceUID) if reference != "none" else generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "RS"

    def image_ref(h):
        item = Dataset()
        item.ReferencedSOPClassUID = h.SOPClassUID
        item.ReferencedSOPInstanceUID = h.SOPInstanceUID
        return item

    ref = Dataset()
    ref.FrameOfReferenceUID = for_uid if reference in ("series", "for") else generate_uid()
    if reference == "series":
        study = Dataset()
        study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        study.ReferencedSOPInstanceUID = str(hdrs[0].StudyInstanceUID)
        ser = Dataset()
        ser.SeriesInstanceUID = str(hdrs[0].SeriesInstanceUID)
        ser.ContourImageSequence = Sequence([image_ref(h) for h in hdrs])
        study.RTReferencedSeriesSequence = Sequence([ser])
        ref.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ss, rc, obs = [], [], []
    for number, name, contours in rois:
        item = Dataset()
        item.ROINumber = number
        item.ReferencedFrameOfReferenceUID = ref.FrameOfReferenceUID
        item.ROIName = name
        item.ROIGenerationAlgorithm = "MANUAL"
        ss.append(item)
        c = Dataset()
        c.ReferencedROINumber = number
        c.ROIDisplayColor = [255, 0, 0]
        seq = []
        for k, xy, dz, kind in contours:
            cont = Dataset()
            if reference in ("series", "sops"):
                cont.ContourImageSequence = Sequence([image_ref(hdrs[k])])
            cont.ContourGeometricType = kind
            pts = to_mm(hdrs[k], xy, dz)
            cont.NumberOfContourPoints = len(pts)
            cont.ContourData = [f"{v:.6f}" for v in pts.reshape(-1)]
            seq.append(cont)
        c.ContourSequence = Sequence(seq)
        rc.append(c)
        o = Dataset()
        o.ObservationNumber = number
        o.ReferencedROINumber = number
        o.RTROIInterpretedType = "ORGAN"
        o.ROIInterpreter = patient_name  # an identifying name in a nested sequence: must not leak either
        obs.append(o)
    ds.StructureSetROISequence = Sequence(ss)
    ds.ROIContourSequence = Sequence(rc)
    ds.RTROIObservationsSequence = Sequence(obs)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def rect(x0, y0, x1, y1) -> np.ndarray:
    """An axis-aligned rectangle's 4 corners (pixel coordinates)."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def circle(cx, cy, r, n: int = 720) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
