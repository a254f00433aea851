"""NIfTI-1/2 (.nii, .nii.gz) via nibabel, with geometry in the LPS/ITK convention SimpleITK uses.

nibabel indexes voxels (i, j, k) with a RAS affine; SimpleITK/ITK gives arrays (k, j, i) and LPS
geometry. This reader returns the SimpleITK view: array (D, H, W, C) = (k, j, i, t), spacing
(k, j, i), origin = LPS position of voxel (0, 0, 0), direction = ITK 3x3 (row-major; columns are the
i, j, k axes in LPS). The transform is chosen like ITK's NiftiImageIO (checked against SimpleITK): the
sform when its code is SCANNER_ANAT (1) or there is no qform, provided its rotation part is
orthonormal; else the qform when its code is set; else the pixel sizes with origin 0.
"""

from __future__ import annotations

import numpy as np

from medtf.io import deid
from medtf.io.types import Image, ReadError, ReadOptions

_LPS = np.diag([-1.0, -1.0, 1.0])


def _load(path):
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ReadError(path, f"not a readable NIfTI file ({type(exc).__name__})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ReadError(path, f"expected a NIfTI-1/2 image, received {type(img).__name__}")
    return img


def nifti_affine(img) -> tuple[np.ndarray, str]:
    """The RAS voxel→world affine ITK would use, and which transform it is ("sform"/"qform"/"pixdim").

    Raises:
        ValueError: only a sheared (non-orthonormal) sform is available.
    """
    hdr = img.header
    s_code, q_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    # ITK 5.4 (verified against SimpleITK for every code pair): sform when its code is
    # NIFTI_XFORM_SCANNER_ANAT or when there is no qform; otherwise the qform.
    if s_code > 0 and (s_code == 1 or q_code == 0):
        aff = hdr.get_sform()
        m = aff[:3, :3]
        norms = np.linalg.norm(m, axis=0)
        if np.all(norms > 0):
            r = m / norms
            if np.allclose(r.T @ r, np.eye(3), atol=1e-4):
                return aff, "sform"
    if q_code > 0:
        return hdr.get_qform(), "qform"
    if s_code > 0:
        raise ValueError("the sform is sheared/not orthonormal and there is no qform (ITK rejects this too)")
    zooms = [float(z) for z in hdr.get_zooms()[:3]] + [1.0] * (3 - len(hdr.get_zooms()[:3]))
    aff = np.eye(4)
    aff[:3, :3] = np.diag(zooms)
    return aff, "pixdim"


def nifti_geometry(img) -> tuple[tuple, tuple, tuple, str]:
    """(spacing (k, j, i), origin LPS (x, y, z), direction ITK row-major 9-tuple, transform name)."""
    aff, which = nifti_affine(img)
    m = _LPS @ aff[:3, :3]
    origin = _LPS @ aff[:3, 3]
    spacing_ijk = np.linalg.norm(m, axis=0)
    spacing_ijk[spacing_ijk == 0] = 1.0
    direction = m / spacing_ijk
    return (
        tuple(float(v) for v in spacing_ijk[::-1]),
        tuple(float(v) for v in origin),
        tuple(float(v) for v in direction.reshape(-1)),
        which,
    )


def read_nifti(path, *, patient: str, options: ReadOptions = ReadOptions(), modality: str = "NIFTI") -> Image:
    """Read a 3D (or 4D → channels) NIfTI image.

    Args:
        path: .nii or .nii.gz.
        patient: the patient pseudonym (NIfTI has no patient ID; see ``ReadOptions.patient_from``).
        options: ``max_pixels`` is checked against the header before loading.
        modality: tag to store (e.g. "MR").

    Returns:
        Image with array (D, H, W, C) in the file's dtype, or float32 when scl_slope/scl_inter scale it (as ITK).

    Raises:
        ReadError: unreadable, not 3D/4D, too large.
    """
    img = _load(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) == 5 and shape[3] == 1:
        pass
    elif len(shape) not in (3, 4):
        raise ReadError(path, f"expected a 3D or 4D NIfTI image, received {len(shape)} dimensions")
    if int(np.prod(shape, dtype=np.int64)) > options.max_pixels:
        raise ReadError(path, f"header claims {int(np.prod(shape, dtype=np.int64))} voxels, more than max_pixels={options.max_pixels}")
    try:
        proxy = img.dataobj
        slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
        if slope == 1.0 and inter == 0.0:
            data = np.asanyarray(proxy)  # stored dtype, exact
            scaled = False
        else:  # like ITK: scaled voxels are returned as float32
            data = np.asarray(proxy, dtype=np.float64).astype(np.float32)
            scaled = True
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt payload
        raise ReadError(path, f"NIfTI voxel data could not be read ({type(exc).__name__})") from None
    data = data.reshape(shape)
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    if data.ndim == 3:
        arr = data.transpose(2, 1, 0)[..., None]
    elif data.ndim == 4:
        arr = data.transpose(2, 1, 0, 3)
    else:  # (i, j, k, 1, c): ITK vector image
        arr = data[:, :, :, 0, :].transpose(2, 1, 0, 3)
    try:
        spacing, origin, direction, which = nifti_geometry(img)
    except ValueError as exc:
        raise ReadError(path, f"unsupported NIfTI geometry: {exc}") from None
    meta = {"format": "nifti", "nifti_xform": which, "modality_lut": "scl_slope" if scaled else "none"}
    intent = img.header.get_intent()[0]
    if isinstance(intent, str) and intent.replace(" ", "").isalnum():
        meta["nifti_intent"] = intent
    return Image(array=np.ascontiguousarray(arr), spacing=spacing, patient=patient, modality=modality,
                 origin=origin, direction=direction, meta=deid.check_meta(meta))


def same_geometry(a: Image, b: Image, *, tol: float = 1e-4) -> bool:
    """True when two images share spatial shape, spacing, origin and direction (within ``tol``)."""
    if a.array.shape[: a.spatial_dims] != b.array.shape[: b.spatial_dims]:
        return False
    for x, y in ((a.spacing, b.spacing), (a.origin, b.origin), (a.direction, b.direction)):
        if (x is None) != (y is None):
            return False
        if x is not None and not np.allclose(np.asarray(x, float), np.asarray(y, float), atol=tol, rtol=0):
            return False
    return True


def read_nifti_mask(path, reference: Image, *, tol: float = 1e-4) -> np.ndarray:
    """Read a NIfTI label map aligned to ``reference`` and return it as uint8 (D, H, W).

    Args:
        path: label map (integral values 0..255, any stored dtype).
        reference: the image it annotates.
        tol: geometry tolerance (mm / direction cosine).

    Returns:
        uint8 array with ``reference``'s spatial shape.

    Raises:
        ReadError: geometry differs from the reference, or values are not integral labels in 0..255.
    """
    mask_img = read_nifti(path, patient=reference.patient)
    if mask_img.array.shape[-1] != 1:
        raise ReadError(path, f"label map must have one channel, received {mask_img.array.shape[-1]}")
    if not same_geometry(mask_img, reference, tol=tol):
        raise ReadError(path, "label map geometry (shape/spacing/origin/direction) differs from its image")
    values = mask_img.array[..., 0]
    if values.size and (not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 255
                        or not np.array_equal(values, np.round(values))):
        raise ReadError(path, "label map values must be integers in 0..255")
    return values.astype(np.uint8)


def read_nifti_case(image_paths, mask_path=None, *, patient: str, options: ReadOptions = ReadOptions(),
                    modality: str = "MR") -> Image:
    """Stack co-registered NIfTI volumes (e.g. FLAIR, T1c) as channels, with an optional label map.

    Args:
        image_paths: one path per channel, all with the same geometry.
        mask_path: label map aligned to them, or None.
        patient: patient pseudonym.
        options: read options.
        modality: tag to store.

    Returns:
        Image with array (D, H, W, len(image_paths)) and ``mask`` (D, H, W) uint8 when given.

    Raises:
        ReadError: geometry mismatch between channels or with the mask; dtype mismatch.
    """
    if not image_paths:
        raise ValueError("read_nifti_case: image_paths is empty (expected at least one NIfTI path)")
    images = [read_nifti(p, patient=patient, options=options, modality=modality) for p in image_paths]
    first = images[0]
    for p, im in zip(image_paths[1:], images[1:]):
        if im.array.shape[-1] != 1 or not same_geometry(first, im):
            raise ReadError(p, "channel geometry (shape/spacing/origin/direction) differs from the first channel")
    dtype = np.result_type(*[im.array.dtype for im in images])
    first.array = np.concatenate([im.array.astype(dtype, copy=False) for im in images], axis=-1)
    if mask_path is not None:
        first.mask = read_nifti_mask(mask_path, first)
    return first
