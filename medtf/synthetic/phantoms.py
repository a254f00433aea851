"""Phantom generator: realistic DICOM / NIfTI files with a learnable signal (the embedded default data).

Three kinds, each written as a small "archive" of fake patients with several studies each:

* **CXR** (:func:`write_cxr_phantoms`): DX chest-X-ray-like images (dark lungs, mediastinum, heart,
  ribs, clavicles, diaphragm, noise) with or without lung opacities, 12 bits stored, written in several
  transfer syntaxes (explicit VR little endian, RLE lossless, JPEG-LS lossless, JPEG 2000 lossless),
  some as MONOCHROME1 (inverted stored values). Labels (1 = opacity) in ``labels.csv``.
* **CT** (:func:`write_ct_phantoms`): axial CT series, one file per slice, with proper
  ImagePositionPatient / ImageOrientationPatient / SliceLocation, HU through RescaleIntercept −1024,
  body with fat and soft tissue, lungs ≈ −850 HU with vessels, spine, and (positives) spherical nodules
  ≈ +40 HU. Labels per series in ``labels.csv``, nodule centres (LPS mm) in ``nodules.csv``.
* **MRI** (:func:`write_mri_phantoms`): NIfTI brain-like volumes (FLAIR-like and T1c-like) with
  BraTS-style tumour masks (0 background, 1 necrotic core, 2 oedema, 4 enhancing) in NIfTI.

Every output directory also gets ``phantoms.json`` (what was generated, with which parameters).
All randomness comes from ``numpy.random.default_rng([seed, kind, index])``, so a seed reproduces the
same bytes, and one image can be regenerated alone (:func:`cxr_image`, :func:`ct_volume`,
:func:`mri_volume`). No TensorFlow here.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import json
import pathlib
from typing import Iterable, Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------------
# constants
# ----------------------------------------------------------------------------------------------------

DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage

#: Transfer syntaxes by short name.
TRANSFER_SYNTAXES = {
    "explicit": "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "rle": "1.2.840.10008.1.2.5",  # RLE Lossless
    "jpegls": "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "j2k": "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
}

#: HU of the CT phantom tissues (air outside the body is -1000).
CT_HU = {"air": -1000.0, "lung": -850.0, "fat": -100.0, "soft_tissue": 40.0, "nodule": 40.0, "bone": 700.0}

_KIND_IDS = {"cxr": 1, "ct": 2, "mri": 3}
_EPOCH = _dt.date(2020, 1, 6)


@dataclasses.dataclass(frozen=True)
class PhantomSet:
    """What a ``write_*_phantoms`` call wrote.

    Attributes:
        root: the output directory.
        kind: "cxr" | "ct" | "mri".
        items: one dict per labelled unit (a CXR file, a CT series directory, an MRI study), with
            ``path`` (relative to ``images_dir``, POSIX), ``label`` (int), ``patient`` (fake patient
            ID), ``study`` (1-based) and kind-specific extras (``transfer_syntax``, ``photometric``,
            ``nodules``, ``mask``...).
        labels_csv: ``root/labels.csv`` (``path,label``; paths relative to ``images_dir``, which is
            what ``tfrecord-convert images_dir --labels labels.csv`` expects).
        images_dir: ``root/dicom`` (CXR, CT) or ``root/nifti`` (MRI): only image files, so the
            converter can take it as its input without rejecting the CSV/JSON side files.
    """

    root: pathlib.Path
    kind: str
    items: tuple[dict, ...]
    labels_csv: pathlib.Path
    images_dir: pathlib.Path

    @property
    def labels(self) -> dict[str, int]:
        return {it["path"]: int(it["label"]) for it in self.items}

    @property
    def patients(self) -> tuple[str, ...]:
        return tuple(sorted({it["patient"] for it in self.items}))

    def __len__(self) -> int:
        return len(self.items)


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _rng(seed: int, kind: str, *index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _KIND_IDS[kind], *[int(i) for i in index]])


def _uid(*parts) -> str:
    """Deterministic UID under the UUID-derived root 2.25 (PS3.5 B.2)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big") >> 1)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], cells: int | Sequence[int]) -> np.ndarray:
    """Smooth random field in about [-1, 1]: a coarse Gaussian grid, linearly interpolated to ``shape``."""
    from scipy import ndimage

    cells = (cells,) * len(shape) if np.isscalar(cells) else tuple(cells)
    coarse = rng.standard_normal([max(2, int(c)) for c in cells])
    zoom = [s / c for s, c in zip(shape, coarse.shape)]
    fine = ndimage.zoom(coarse, zoom, order=1, mode="nearest", grid_mode=True)
    fine = fine[tuple(slice(0, s) for s in shape)]
    return (fine / 1.5).astype(np.float32)


def _check_count(name: str, value: int, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. Received: {value!r}")
    return int(value)


def _check_fraction(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]. Received: {value!r}")
    return float(value)


def _balanced_labels(rng: np.random.Generator, n: int, positive_fraction: float) -> np.ndarray:
    n_pos = int(round(n * positive_fraction))
    labels = np.zeros(n, np.int64)
    labels[:n_pos] = 1
    return rng.permutation(labels)


def _prepare_out(out) -> pathlib.Path:
    root = pathlib.Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"out must be a directory. Received a file: {root}")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _write_labels(root: pathlib.Path, items: Iterable[dict], names: tuple[str, str]) -> pathlib.Path:
    """``labels.csv``: path (relative to ``dicom/`` or the images folder), label (0/1) and its name."""
    path = root / "labels.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "label_name"])
        for it in items:
            w.writerow([it["path"], int(it["label"]), names[int(it["label"])]])
    return path


def _write_summary(root: pathlib.Path, kind: str, params: dict, items: Sequence[dict]) -> None:
    from medtf import __version__

    labels = [int(it["label"]) for it in items]
    summary = {
        "generator": f"medtf.synthetic.phantoms/{kind}",
        "medtf_version": __version__,
        "kind": kind,
        "params": params,
        "units": len(items),
        "patients": len({it["patient"] for it in items}),
        "labels": {str(k): labels.count(k) for k in sorted(set(labels))},
        "note": "Synthetic phantoms; all patient names and IDs are fake.",
    }
    (root / "phantoms.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img")


def _base_dataset(*, sop_class: str, sop_uid: str, patient_index: int, study_index: int, study_uid: str,
                  series_uid: str, modality: str, transfer_syntax: str, kind_tag: str):
    """A dataset with the patient/study/series/equipment modules filled with fake, deterministic values."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = TRANSFER_SYNTAXES["explicit"]
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    date = (_EPOCH + _dt.timedelta(days=97 * patient_index + 180 * (study_index - 1))).strftime("%Y%m%d")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = f"PHANTOM^{kind_tag}{patient_index:04d}"
    ds.PatientID = f"PHANTOM-{kind_tag}-{patient_index:04d}"
    ds.PatientBirthDate = f"{1940 + (patient_index * 7) % 60:04d}0101"
    ds.PatientSex = "FM"[patient_index % 2]
    ds.PatientIdentityRemoved = "NO"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = f"{8 + study_index % 10:02d}3000"
    ds.AccessionNumber = f"A{kind_tag}{patient_index:04d}{study_index:02d}"
    ds.StudyID = f"{study_index}"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = f"medtf phantom {kind_tag}"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.Manufacturer = "medtf"
    ds.ManufacturerModelName = "synthetic phantom"
    ds.SoftwareVersions = "medtf.synthetic"
    ds.BurnedInAnnotation = "NO"
    ds._medtf_transfer_syntax = transfer_syntax  # consumed by _save
    return ds


def _save(ds, path: pathlib.Path, pixels: np.ndarray) -> None:
    """Attach ``pixels`` (uint16) and write ``ds`` in its chosen transfer syntax."""
    ts = ds._medtf_transfer_syntax
    del ds._medtf_transfer_syntax
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    if ts != TRANSFER_SYNTAXES["explicit"]:
        plugin = "pylibjpeg" if ts == TRANSFER_SYNTAXES["j2k"] else ""
        ds.compress(ts, encoding_plugin=plugin, generate_instance_uid=False)
        ds.LossyImageCompression = "00"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# ----------------------------------------------------------------------------------------------------
# chest X-ray
# ----------------------------------------------------------------------------------------------------


def _ellipse(u, v, cu, cv, ru, rv):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2


def cxr_image(rng: np.random.Generator, size: int = 256, opacity: bool = False) -> tuple[np.ndarray, dict]:
    """One chest-X-ray-like image (presentation values, brighter = denser), 12-bit.

    Args:
        rng: the random generator (all variation comes from it).
        size: rows = columns.
        opacity: add 1-3 soft-tissue opacities (consolidation-like) inside the lung fields.

    Returns:
        ``(pixels, info)``: uint16 (size, size) in [0, 4095] as displayed in MONOCHROME2, and a dict
        with the opacity centres/sizes in normalised coordinates.
    """
    size = _check_count("size", size, 32)
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    v, u = np.meshgrid(t, t, indexing="ij")  # v: rows (head → feet), u: columns (patient right → left)
    du, dv = rng.uniform(-0.05, 0.05, 2)
    u, v = u - du, v - dv
    scale = rng.uniform(0.92, 1.06)
    u, v = u / scale, v / scale
    edge = 2.0 / size * 1.5

    def soft(f, sharp=1.0):  # inside (f < 1) → 1, smooth edge
        return _sigmoid((1.0 - f) / (edge * 4 * sharp))

    body = soft(_ellipse(u, v, 0.0, 0.1, 0.88, 1.15))
    lung_r = soft(_ellipse(u, v, -0.40 + rng.uniform(-0.03, 0.03), -0.05, 0.30 * rng.uniform(0.9, 1.1), 0.58))
    lung_l = soft(_ellipse(u, v, 0.40 + rng.uniform(-0.03, 0.03), -0.05, 0.28 * rng.uniform(0.9, 1.1), 0.56))
    dome = soft(_ellipse(u, v, 0.0, 0.95 + rng.uniform(-0.05, 0.05), 0.95, 0.45))  # diaphragm / abdomen
    heart = soft(_ellipse(u, v, 0.13, 0.30, 0.30 * rng.uniform(0.9, 1.15), 0.25))
    mediast = soft(np.maximum((u / 0.13) ** 2, 0.0) + np.where(v < -0.75, ((v + 0.75) / 0.1) ** 2, 0.0))
    lungs = np.clip(lung_r + lung_l, 0, 1) * (1 - dome) * (1 - 0.85 * heart) * (1 - mediast)
    a = 0.05 + 0.55 * body - 0.38 * lungs + 0.22 * mediast * body + 0.12 * heart * body + 0.15 * dome * body
    # ribs: posterior arcs in both hemithoraces, and clavicles
    phase = rng.uniform(0, 1)
    rib = np.zeros_like(u)
    for k in range(9):
        v0 = -0.72 + (k + phase * 0.5) * 0.16
        curve = v - (v0 + 0.32 * (np.abs(u) - 0.15) ** 2 * np.sign(np.abs(u) - 0.15))
        rib += np.exp(-0.5 * (curve / 0.018) ** 2) * (np.abs(u) > 0.12)
    clav = np.exp(-0.5 * ((v + 0.70 - 0.15 * np.abs(u)) / 0.025) ** 2) * (np.abs(u) < 0.55) * (np.abs(u) > 0.06)
    a = a + body * (0.07 * np.clip(rib, 0, 1) + 0.08 * clav)
    a = a + 0.05 * body * _sigmoid(-(np.abs(u) - 0.05) / 0.01)  # spine
    # background lung texture (both classes)
    a = a + lungs * 0.025 * _smooth_noise(rng, (size, size), 12)
    info = {"opacities": []}
    if opacity:
        for _ in range(int(rng.integers(1, 4))):
            side = -1 if rng.random() < 0.5 else 1
            cu = side * rng.uniform(0.28, 0.5)
            cv = rng.uniform(-0.35, 0.35)
            sig = rng.uniform(0.08, 0.16)
            amp = rng.uniform(0.16, 0.26)
            blob = np.exp(-0.5 * _ellipse(u, v, cu, cv, sig, sig * rng.uniform(0.8, 1.4)))
            blob = blob * (1 + 0.35 * _smooth_noise(rng, (size, size), 16))
            a = a + amp * np.clip(blob, 0, None) * lungs
            info["opacities"].append({"u": float(cu), "v": float(cv), "sigma": float(sig), "amplitude": float(amp)})
    exposure = rng.uniform(0.9, 1.1)
    img = 4095.0 * (0.04 + 0.9 * np.clip(a * exposure, 0, 1))
    img = img + rng.normal(0.0, 20.0, img.shape)
    return np.clip(np.rint(img), 0, 4095).astype(np.uint16), info


def write_cxr_phantoms(
    out,
    n_patients: int = 20,
    studies_per_patient: int = 2,
    size: int = 256,
    seed: int = 0,
    *,
    positive_fraction: float = 0.5,
    transfer_syntaxes: Sequence[str] = ("explicit", "rle", "jpegls", "j2k"),
    monochrome1_fraction: float = 0.25,
    progress: bool = False,
) -> PhantomSet:
    """Write DX chest-X-ray phantoms, one DICOM file per study, and ``labels.csv`` (1 = opacity).

    Layout: ``out/dicom/pNNNN/sNN/cxr.dcm``, ``out/labels.csv`` (paths relative to ``out/dicom``),
    ``out/phantoms.json``. Transfer syntaxes cycle through ``transfer_syntaxes``; a
    ``monochrome1_fraction`` of the files are MONOCHROME1 (stored = 4095 − displayed value,
    PresentationLUTShape INVERSE). Labels are balanced: exactly ``round(n * positive_fraction)``
    positives, randomly placed.

    Args:
        out: output directory (created).
        n_patients: number of fake patients.
        studies_per_patient: studies (one image each) per patient.
        size: rows = columns (pixel spacing scales so the field of view stays 350 mm).
        seed: random seed; the same seed writes the same bytes.
        positive_fraction: fraction of images with opacities.
        transfer_syntaxes: names from :data:`TRANSFER_SYNTAXES`.
        monochrome1_fraction: fraction of images stored as MONOCHROME1.
        progress: show a tqdm progress bar.

    Returns:
        The :class:`PhantomSet` written.

    Raises:
        ValueError: bad counts, fractions or transfer syntax names.
    """
    n_patients = _check_count("n_patients", n_patients)
    studies_per_patient = _check_count("studies_per_patient", studies_per_patient)
    size = _check_count("size", size, 32)
    positive_fraction = _check_fraction("positive_fraction", positive_fraction)
    monochrome1_fraction = _check_fraction("monochrome1_fraction", monochrome1_fraction)
    unknown = [t for t in transfer_syntaxes if t not in TRANSFER_SYNTAXES]
    if unknown or not transfer_syntaxes:
        raise ValueError(f"transfer_syntaxes must be a non-empty subset of {sorted(TRANSFER_SYNTAXES)}. Received: {list(transfer_syntaxes)}")
    root = _prepare_out(out)
    images = root / "dicom"
    n = n_patients * studies_per_patient
    plan = _rng(seed, "cxr")
    labels = _balanced_labels(plan, n, positive_fraction)
    mono1 = np.zeros(n, bool)
    mono1[: int(round(n * monochrome1_fraction))] = True
    mono1 = plan.permutation(mono1)
    spacing = 350.0 / size
    items = []
    for i in _progress(range(n), n, "CXR phantoms", progress):
        p, s = i // studies_per_patient + 1, i % studies_per_patient + 1
        pixels, info = cxr_image(_rng(seed, "cxr", i), size, opacity=bool(labels[i]))
        ts_name = transfer_syntaxes[i % len(transfer_syntaxes)]
        photometric = "MONOCHROME1" if mono1[i] else "MONOCHROME2"
        stored = (4095 - pixels).astype(np.uint16) if mono1[i] else pixels
        study_uid = _uid("medtf-phantom", seed, "cxr", p, s, "study")
        ds = _base_dataset(
            sop_class=DX_SOP_CLASS, sop_uid=_uid("medtf-phantom", seed, "cxr", p, s, "image"), patient_index=p,
            study_index=s, study_uid=study_uid, series_uid=_uid("medtf-phantom", seed, "cxr", p, s, "series"),
            modality="DX", transfer_syntax=TRANSFER_SYNTAXES[ts_name], kind_tag="CXR",
        )
        ds.SeriesDescription = "CHEST PA"
        ds.InstanceNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = "PA"
        ds.PatientOrientation = ["L", "F"]
        ds.ImageLaterality = "U"
        ds.KVP = 120
        ds.DistanceSourceToDetector = 1800
        ds.ImagerPixelSpacing = [spacing, spacing]
        ds.PixelSpacing = [spacing, spacing]
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.PresentationLUTShape = "INVERSE" if mono1[i] else "IDENTITY"
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        ds.LossyImageCompression = "00"
        rel = f"p{p:04d}/s{s:02d}/cxr.dcm"
        _save(ds, images / rel, stored)
        items.append({
            "path": rel, "label": int(labels[i]), "patient": ds.PatientID, "study": s,
            "transfer_syntax": ts_name, "photometric": photometric, "opacities": info["opacities"],
        })
    labels_csv = _write_labels(root, items, ("normal", "opacity"))
    _write_summary(root, "cxr", {
        "n_patients": n_patients, "studies_per_patient": studies_per_patient, "size": size, "seed": seed,
        "positive_fraction": positive_fraction, "transfer_syntaxes": list(transfer_syntaxes),
        "monochrome1_fraction": monochrome1_fraction, "pixel_spacing_mm": spacing,
    }, items)
    return PhantomSet(root, "cxr", tuple(items), labels_csv, images)


# ----------------------------------------------------------------------------------------------------
# CT
# ----------------------------------------------------------------------------------------------------


def ct_volume(
    rng: np.random.Generator,
    shape: Sequence[int] = (48, 128, 128),
    spacing: Sequence[float] = (2.5, 2.8125, 2.8125),
    n_nodules: int = 0,
    nodule_radius_mm: tuple[float, float] = (4.0, 10.0),
    noise_hu: float = 20.0,
) -> tuple[np.ndarray, list[dict]]:
    """One chest CT volume in HU, (slices, rows, cols), slice 0 the most cranial.

    Tissues (see :data:`CT_HU`): air −1000, subcutaneous fat −100, soft tissue / mediastinum +40,
    lungs −850 (with a faint texture and a few vessels), vertebra +700, nodules +40 (spherical, partial
    volume at the edge). Gaussian noise of ``noise_hu``.

    Args:
        rng: the random generator.
        shape: (slices, rows, cols).
        spacing: mm per voxel (slice, row, col).
        n_nodules: spherical nodules to place inside the lungs.
        nodule_radius_mm: (min, max) radius.
        noise_hu: noise standard deviation.

    Returns:
        ``(hu, nodules)``: int16 HU volume and, per nodule, ``{"center_vox": [k, i, j], "radius_mm": r}``.
    """
    d, h, w = (int(s) for s in shape)
    sz, sy, sx = (float(s) for s in spacing)
    z = (np.arange(d, dtype=np.float32) - (d - 1) / 2) * sz
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2) * sy
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2) * sx
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    fov_x, fov_y = w * sx, h * sy
    ext_z = d * sz
    # normalised z: -1 cranial → +1 caudal; lungs shrink toward the apex and the diaphragm
    zn = zz / (ext_z / 2)
    bx, by = 0.42 * fov_x * rng.uniform(0.92, 1.05), 0.30 * fov_y * rng.uniform(0.92, 1.05)
    body_f = (xx / bx) ** 2 + ((yy - 0.02 * fov_y) / by) ** 2
    inner_f = (xx / (bx - 9.0)) ** 2 + ((yy - 0.02 * fov_y) / (by - 9.0)) ** 2
    hu = np.full(zz.shape, CT_HU["air"], np.float32)
    hu[body_f < 1] = CT_HU["fat"]
    hu[inner_f < 1] = CT_HU["soft_tissue"]
    lung_scale = np.clip(1.0 - 0.35 * zn**2, 0.3, 1.0)
    lungs = np.zeros(zz.shape, bool)
    lung_fs = []
    for side in (-1, 1):
        cx = side * 0.21 * fov_x * rng.uniform(0.95, 1.05)
        rx = 0.15 * fov_x * rng.uniform(0.9, 1.1) * lung_scale
        ry = 0.21 * fov_y * rng.uniform(0.9, 1.1) * lung_scale
        f = ((xx - cx) / rx) ** 2 + ((yy + 0.01 * fov_y) / ry) ** 2
        lung_fs.append(f)
        lungs |= f < 1
    hu[lungs] = CT_HU["lung"]
    hu += np.where(lungs, 25.0 * _smooth_noise(rng, shape, (max(2, d // 6), h // 10, w // 10)), 0.0)
    # vessels: thin tubes running cranio-caudally with a slight slope, partial volume
    for _ in range(int(rng.integers(4, 9))):
        side = -1 if rng.random() < 0.5 else 1
        x0 = side * rng.uniform(0.1, 0.3) * fov_x
        y0 = rng.uniform(-0.15, 0.15) * fov_y
        ax, ay = rng.uniform(-0.2, 0.2, 2)
        r = rng.uniform(1.0, 2.2)
        dist = np.sqrt((xx - x0 - ax * zz) ** 2 + (yy - y0 - ay * zz) ** 2)
        frac = np.clip((r - dist) / sx + 0.5, 0, 1) * lungs
        hu = hu * (1 - frac) + (-50.0) * frac
    # vertebra (posterior midline) and sternum
    spine = (xx / (0.05 * fov_x)) ** 2 + ((yy - 0.24 * fov_y) / (0.05 * fov_y)) ** 2 < 1
    hu[spine] = CT_HU["bone"]
    sternum = (xx / (0.03 * fov_x)) ** 2 + ((yy + 0.27 * fov_y) / (0.012 * fov_y)) ** 2 < 1
    hu[sternum] = CT_HU["bone"] - 200.0
    nodules: list[dict] = []
    lung_idx = np.argwhere(lungs)
    tries = 0
    while len(nodules) < n_nodules and len(lung_idx) and tries < 500:
        tries += 1
        r = float(rng.uniform(*nodule_radius_mm))
        k, i, j = lung_idx[rng.integers(len(lung_idx))]
        c = np.array([z[k], y[i], x[j]])
        # keep the whole sphere (+2 mm) inside a lung: check points on its surface
        dirs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
        pts = c + (r + 2.0) * dirs
        kk = np.rint(pts[:, 0] / sz + (d - 1) / 2).astype(int)
        ii = np.rint(pts[:, 1] / sy + (h - 1) / 2).astype(int)
        jj = np.rint(pts[:, 2] / sx + (w - 1) / 2).astype(int)
        if (kk < 0).any() or (kk >= d).any() or (ii < 0).any() or (ii >= h).any() or (jj < 0).any() or (jj >= w).any():
            continue
        if not lungs[kk, ii, jj].all():
            continue
        if any(np.linalg.norm(c - np.array(nd["center_mm_zyx"])) < r + nd["radius_mm"] + 4 for nd in nodules):
            continue
        dist = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        frac = np.clip((r - dist) / min(sx, sy, sz) + 0.5, 0, 1)
        hu = hu * (1 - frac) + CT_HU["nodule"] * frac
        nodules.append({"center_vox": [int(k), int(i), int(j)], "center_mm_zyx": [float(v) for v in c], "radius_mm": r})
    hu = hu + rng.normal(0.0, noise_hu, hu.shape).astype(np.float32)
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return hu, nodules


def write_ct_phantoms(
    out,
    n_patients: int = 6,
    studies_per_patient: int = 2,
    *,
    size: int = 128,
    n_slices: int = 48,
    slice_thickness: float = 2.5,
    fov_mm: float = 360.0,
    seed: int = 0,
    positive_fraction: float = 0.5,
    nodule_radius_mm: tuple[float, float] = (4.0, 10.0),
    max_nodules: int = 2,
    transfer_syntaxes: Sequence[str] = ("explicit", "jpegls"),
    progress: bool = False,
) -> PhantomSet:
    """Write axial CT phantom series (one DICOM file per slice), ``labels.csv`` and ``nodules.csv``.

    Layout: ``out/dicom/pNNNN/sNN/ct/IM-KKKK.dcm``; ``out/labels.csv`` has one row per series
    directory relative to ``out/dicom`` (label 1 = at least one nodule). Stored values are HU + 1024 (unsigned 12 bits, RescaleIntercept
    −1024, RescaleSlope 1). ``nodules.csv`` lists each nodule centre in patient coordinates (LPS mm)
    and in voxels, with its radius.

    Args:
        out: output directory (created).
        n_patients: number of fake patients.
        studies_per_patient: studies (one series each) per patient.
        size: rows = columns.
        n_slices: slices per series.
        slice_thickness: mm between slice centres (= slice thickness).
        fov_mm: reconstruction field of view (pixel spacing = fov_mm / size).
        seed: random seed; the same seed writes the same bytes.
        positive_fraction: fraction of series with nodules.
        nodule_radius_mm: (min, max) nodule radius.
        max_nodules: positives get 1..max_nodules nodules.
        transfer_syntaxes: names from :data:`TRANSFER_SYNTAXES`, cycled per series.
        progress: show a tqdm progress bar.

    Returns:
        The :class:`PhantomSet` written (``items[k]["nodules"]`` lists the nodules).

    Raises:
        ValueError: bad counts, sizes or transfer syntax names.
    """
    n_patients = _check_count("n_patients", n_patients)
    studies_per_patient = _check_count("studies_per_patient", studies_per_patient)
    size = _check_count("size", size, 16)
    n_slices = _check_count("n_slices", n_slices, 4)
    max_nodules = _check_count("max_nodules", max_nodules)
    positive_fraction = _check_fraction("positive_fraction", positive_fraction)
    if not slice_thickness > 0 or not fov_mm > 0:
        raise ValueError(f"slice_thickness and fov_mm must be > 0. Received: {slice_thickness}, {fov_mm}")
    unknown = [t for t in transfer_syntaxes if t not in TRANSFER_SYNTAXES]
    if unknown or not transfer_syntaxes:
        raise ValueError(f"transfer_syntaxes must be a non-empty subset of {sorted(TRANSFER_SYNTAXES)}. Received: {list(transfer_syntaxes)}")
    root = _prepare_out(out)
    images = root / "dicom"
    n = n_patients * studies_per_patient
    plan = _rng(seed, "ct")
    labels = _balanced_labels(plan, n, positive_fraction)
    ps = fov_mm / size
    spacing = (float(slice_thickness), ps, ps)
    items = []
    nodule_rows = []
    for idx in _progress(range(n), n, "CT phantoms", progress):
        p, s = idx // studies_per_patient + 1, idx % studies_per_patient + 1
        rng = _rng(seed, "ct", idx)
        k_nod = int(rng.integers(1, max_nodules + 1)) if labels[idx] else 0
        hu, nodules = ct_volume(rng, (n_slices, size, size), spacing, k_nod, nodule_radius_mm)
        ts_name = transfer_syntaxes[idx % len(transfer_syntaxes)]
        study_uid = _uid("medtf-phantom", seed, "ct", p, s, "study")
        series_uid = _uid("medtf-phantom", seed, "ct", p, s, "series")
        for_uid = _uid("medtf-phantom", seed, "ct", p, s, "frame")
        x0 = -(size - 1) / 2 * ps
        y0 = -(size - 1) / 2 * ps
        z_top = 0.5 * (n_slices - 1) * slice_thickness - 100.0 - 10.0 * s
        rel_dir = f"p{p:04d}/s{s:02d}/ct"
        stored_all = (hu.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)
        for k in range(n_slices):
            zpos = z_top - k * slice_thickness  # slice 0 cranial: highest z in LPS (superior = +z)
            ds = _base_dataset(
                sop_class=CT_SOP_CLASS, sop_uid=_uid("medtf-phantom", seed, "ct", p, s, "slice", k),
                patient_index=p, study_index=s, study_uid=study_uid, series_uid=series_uid, modality="CT",
                transfer_syntax=TRANSFER_SYNTAXES[ts_name], kind_tag="CT",
            )
            ds.SeriesDescription = "CHEST AXIAL"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.BodyPartExamined = "CHEST"
            ds.PatientPosition = "HFS"
            ds.FrameOfReferenceUID = for_uid
            ds.PositionReferenceIndicator = ""
            ds.InstanceNumber = k + 1
            ds.KVP = 120
            ds.SliceThickness = slice_thickness
            ds.SpacingBetweenSlices = slice_thickness
            ds.ImagePositionPatient = [round(x0, 4), round(y0, 4), round(zpos, 4)]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.SliceLocation = round(zpos, 4)
            ds.PixelSpacing = [ps, ps]
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = ds.Columns = size
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
            ds.WindowCenter, ds.WindowWidth = -600, 1500
            _save(ds, images / rel_dir / f"IM-{k + 1:04d}.dcm", stored_all[k])
        for nd in nodules:
            k, i, j = nd["center_vox"]
            lps = (x0 + j * ps, y0 + i * ps, z_top - k * slice_thickness)
            nd["center_lps_mm"] = [round(float(c), 4) for c in lps]
            nodule_rows.append([rel_dir, *nd["center_lps_mm"], k, i, j, round(nd["radius_mm"], 4)])
        items.append({
            "path": rel_dir, "label": int(labels[idx]), "patient": f"PHANTOM-CT-{p:04d}", "study": s,
            "transfer_syntax": ts_name, "nodules": nodules, "slices": n_slices, "spacing": list(spacing),
        })
    labels_csv = _write_labels(root, items, ("normal", "nodule"))
    with open(root / "nodules.csv", "w", newline="") as f:
        wcsv = csv.writer(f)
        wcsv.writerow(["series", "x_mm", "y_mm", "z_mm", "slice", "row", "col", "radius_mm"])
        wcsv.writerows(nodule_rows)
    _write_summary(root, "ct", {
        "n_patients": n_patients, "studies_per_patient": studies_per_patient, "size": size, "n_slices": n_slices,
        "slice_thickness": slice_thickness, "fov_mm": fov_mm, "seed": seed, "positive_fraction": positive_fraction,
        "nodule_radius_mm": list(nodule_radius_mm), "max_nodules": max_nodules,
        "transfer_syntaxes": list(transfer_syntaxes), "hu": CT_HU,
    }, items)
    return PhantomSet(root, "ct", tuple(items), labels_csv, images)


# ----------------------------------------------------------------------------------------------------
# MRI
# ----------------------------------------------------------------------------------------------------

#: BraTS label values used in the MRI phantom masks.
MRI_LABELS = {"background": 0, "necrosis": 1, "edema": 2, "enhancing": 4}


def mri_volume(
    rng: np.random.Generator,
    shape: Sequence[int] = (48, 64, 64),
    tumor: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One brain-MRI-like volume (FLAIR- and T1c-like channels) with a BraTS-style tumour mask.

    Args:
        rng: the random generator.
        shape: (slices, rows, cols).
        tumor: place a tumour (necrotic core, enhancing rim, oedema); otherwise the mask is empty.

    Returns:
        ``({"flair": f32, "t1c": f32}, mask uint8)`` all of ``shape``; mask values in :data:`MRI_LABELS`.
    """
    d, h, w = (int(s) for s in shape)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in (d, h, w)], indexing="ij")
    brain_f = (xx / 0.78) ** 2 + (yy / 0.88) ** 2 + (zz / 0.85) ** 2
    wobble = 0.06 * _smooth_noise(rng, shape, 5)
    brain = brain_f < 1 + wobble
    skull = (brain_f < 1.22 + wobble) & ~brain
    wm = brain_f < 0.55 + 0.15 * _smooth_noise(rng, shape, 6)
    vent = ((xx / 0.12) ** 2 + (yy / 0.3) ** 2 + (zz / 0.3) ** 2) < 1
    t1c = np.zeros(shape, np.float32)
    flair = np.zeros(shape, np.float32)
    t1c[skull], flair[skull] = 0.35, 0.25
    t1c[brain], flair[brain] = 0.6, 0.62  # grey matter
    t1c[brain & wm], flair[brain & wm] = 0.8, 0.5
    t1c[vent], flair[vent] = 0.2, 0.1
    mask = np.zeros(shape, np.uint8)
    if tumor:
        for _ in range(50):
            c = rng.uniform(-0.45, 0.45, 3)
            if brain_f[tuple(int((ci + 1) / 2 * (n - 1)) for ci, n in zip(c, shape))] < 0.5:
                break
        r = rng.uniform(0.13, 0.22)
        dist = np.sqrt(((zz - c[0]) / r) ** 2 + ((yy - c[1]) / r) ** 2 + ((xx - c[2]) / r) ** 2)
        dist = dist * (1 + 0.15 * _smooth_noise(rng, shape, 6))
        edema = (dist < rng.uniform(1.7, 2.1)) & brain
        enh = (dist < 1.0) & brain
        nec = (dist < rng.uniform(0.45, 0.7)) & brain
        mask[edema] = MRI_LABELS["edema"]
        mask[enh] = MRI_LABELS["enhancing"]
        mask[nec] = MRI_LABELS["necrosis"]
        flair[edema] = 1.05
        flair[enh] = 0.95
        flair[nec] = 0.8
        t1c[edema] = 0.55
        t1c[enh] = 1.25
        t1c[nec] = 0.25
    bias = 1.0 + 0.1 * _smooth_noise(rng, shape, 3)
    out = {}
    for name, img in (("flair", flair), ("t1c", t1c)):
        img = img * bias
        noisy = np.sqrt((img + rng.normal(0, 0.04, shape)) ** 2 + rng.normal(0, 0.04, shape) ** 2)  # Rician
        out[name] = (noisy * 1000.0).astype(np.float32)
    return out, mask


def write_mri_phantoms(
    out,
    n_patients: int = 6,
    studies_per_patient: int = 2,
    *,
    shape: Sequence[int] = (48, 64, 64),
    spacing: Sequence[float] = (3.0, 3.0, 3.0),
    seed: int = 0,
    tumor_fraction: float = 1.0,
    progress: bool = False,
) -> PhantomSet:
    """Write MRI-like NIfTI volumes (``flair.nii.gz``, ``t1c.nii.gz``) with tumour masks (``mask.nii.gz``).

    Layout: ``out/nifti/pNNNN/sNN/{flair,t1c,mask}.nii.gz`` (paths in the CSVs relative to ``out/nifti``). NIfTI arrays are (x = col, y = row, z = slice)
    with an affine of ``spacing``; :func:`mri_volume` returns (slice, row, col). ``labels.csv`` lists each
    FLAIR file with label 1 when a tumour is present; ``pairs.csv`` has ``image,channels,mask`` rows.

    Args:
        out: output directory (created).
        n_patients, studies_per_patient: counts.
        shape: (slices, rows, cols).
        spacing: mm (slice, row, col).
        seed: random seed; the same seed writes the same voxels.
        tumor_fraction: fraction of studies with a tumour.
        progress: show a tqdm progress bar.

    Returns:
        The :class:`PhantomSet` written.

    Raises:
        ValueError: bad counts or shapes.
    """
    import nibabel as nib

    n_patients = _check_count("n_patients", n_patients)
    studies_per_patient = _check_count("studies_per_patient", studies_per_patient)
    tumor_fraction = _check_fraction("tumor_fraction", tumor_fraction)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be (slices, rows, cols) each >= 8. Received: {tuple(shape)}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive values. Received: {tuple(spacing)}")
    root = _prepare_out(out)
    images = root / "nifti"
    n = n_patients * studies_per_patient
    labels = _balanced_labels(_rng(seed, "mri"), n, tumor_fraction)
    sz, sy, sx = (float(v) for v in spacing)
    affine = np.diag([sx, sy, sz, 1.0])
    items, pairs = [], []
    for idx in _progress(range(n), n, "MRI phantoms", progress):
        p, s = idx // studies_per_patient + 1, idx % studies_per_patient + 1
        chans, mask = mri_volume(_rng(seed, "mri", idx), shape, tumor=bool(labels[idx]))
        rel = f"p{p:04d}/s{s:02d}"
        (images / rel).mkdir(parents=True, exist_ok=True)
        for name, arr in chans.items():
            img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), affine)
            img.header.set_xyzt_units("mm")
            nib.save(img, str(images / rel / f"{name}.nii.gz"))
        m = nib.Nifti1Image(np.ascontiguousarray(mask.transpose(2, 1, 0)), affine)
        m.header.set_xyzt_units("mm")
        nib.save(m, str(images / rel / "mask.nii.gz"))
        items.append({
            "path": f"{rel}/flair.nii.gz", "label": int(labels[idx]), "patient": f"PHANTOM-MR-{p:04d}", "study": s,
            "channels": [f"{rel}/flair.nii.gz", f"{rel}/t1c.nii.gz"], "mask": f"{rel}/mask.nii.gz",
            "tumor_voxels": int((mask > 0).sum()),
        })
        pairs.append([f"{rel}/flair.nii.gz", f"{rel}/flair.nii.gz;{rel}/t1c.nii.gz", f"{rel}/mask.nii.gz"])
    labels_csv = _write_labels(root, items, ("no_tumour", "tumour"))
    with open(root / "pairs.csv", "w", newline="") as f:
        wcsv = csv.writer(f)
        wcsv.writerow(["image", "channels", "mask"])
        wcsv.writerows(pairs)
    _write_summary(root, "mri", {
        "n_patients": n_patients, "studies_per_patient": studies_per_patient, "shape": list(shape),
        "spacing": list(spacing), "seed": seed, "tumor_fraction": tumor_fraction, "mask_labels": MRI_LABELS,
    }, items)
    return PhantomSet(root, "mri", tuple(items), labels_csv, images)


def write_phantoms(kind: str, out, **kwargs) -> PhantomSet:
    """Dispatch to ``write_{kind}_phantoms`` (kind in cxr|ct|mri)."""
    writers = {"cxr": write_cxr_phantoms, "ct": write_ct_phantoms, "mri": write_mri_phantoms}
    if kind not in writers:
        raise ValueError(f"kind must be one of {sorted(writers)}. Received: {kind!r}")
    return writers[kind](out, **kwargs)


__all__ = [
    "CT_HU", "MRI_LABELS", "PhantomSet", "TRANSFER_SYNTAXES", "ct_volume", "cxr_image", "mri_volume",
    "write_ct_phantoms", "write_cxr_phantoms", "write_mri_phantoms", "write_phantoms",
]
