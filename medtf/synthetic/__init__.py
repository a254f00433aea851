"""Synthetic medical images with a learnable signal: the embedded default data of ``medtf demo``.

``medtf.synthetic.phantoms`` writes DICOM chest X-rays (with/without opacities), CT series (with/without
spherical nodules at realistic HU) and NIfTI MRI-like volumes with tumour masks. Pure NumPy + pydicom
(+ nibabel for NIfTI); importing this package never imports TensorFlow.
"""

from __future__ import annotations

__all__ = [
    "PhantomSet", "write_phantoms", "write_cxr_phantoms", "write_ct_phantoms", "write_mri_phantoms",
    "cxr_image", "ct_volume", "mri_volume", "CT_HU", "MRI_LABELS", "TRANSFER_SYNTAXES",
]


def __getattr__(name):  # PEP 562 lazy re-exports
    if name in __all__:
        from medtf.synthetic import phantoms

        return getattr(phantoms, name)
    raise AttributeError(f"module 'medtf.synthetic' has no attribute {name!r}")
