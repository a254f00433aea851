#!/usr/bin/env python
"""LIDC CT slices + simulated low-dose noise → paired (noisy, clean) npz for the ct_denoising recipe.

The 41 contiguous LIDC-IDRI-0001 slices (512², 0.70 mm, 2.5 mm apart) are split by position: slices
0-27 train, 28-31 validation, 32-40 test (held out; never used for tuning). Intensities: HU clipped
to [-1024, 1024] and mapped to [0, 1].

Low-dose simulation (image domain, documented rather than physical): zero-mean Gaussian noise,
band-pass filtered (difference of Gaussians, σ 0.7 and 3 px) to give a CT-like mid-frequency noise
power spectrum, scaled to ``--sigma-hu`` HU standard deviation in water and growing with attenuation
(×(1 + 0.5·clip((HU + 1000)/1000, 0, 2))). Seeded per slice, so noisy inputs are reproducible.

    python data_tools/prepare_ct_denoising.py --out runs/data/ct_denoising.npz
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _records import shared_data_dir  # noqa: E402

HU_RANGE = (-1024.0, 1024.0)
SPLITS = {"train": range(0, 28), "val": range(28, 32), "test": range(32, 41)}


def to_unit(hu: np.ndarray) -> np.ndarray:
    lo, hi = HU_RANGE
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def low_dose_noise(hu: np.ndarray, sigma_hu: float, rng: np.random.Generator) -> np.ndarray:
    """Correlated, attenuation-dependent noise (HU) for one slice (see the module docstring)."""
    from scipy import ndimage

    white = rng.standard_normal(hu.shape)
    band = ndimage.gaussian_filter(white, 0.7) - ndimage.gaussian_filter(white, 3.0)
    band /= band.std() + 1e-12
    weight = 1.0 + 0.5 * np.clip((hu + 1000.0) / 1000.0, 0.0, 2.0)
    return (sigma_hu * weight * band).astype(np.float32)


def prepare(src, out, sigma_hu: float = 60.0, seed: int = 0) -> dict:
    """Write ``out`` (npz: {split}_clean, {split}_noisy, float32 (N, 512, 512, 1) in [0, 1]); returns counts."""
    from nodule_patches import read_series

    src = pathlib.Path(src)
    image = read_series(src / "dicom" if (src / "dicom").is_dir() else src)
    hu = image.array[..., 0].astype(np.float32)
    arrays, counts = {}, {}
    for name, idx in SPLITS.items():
        clean, noisy = [], []
        for k in idx:
            rng = np.random.default_rng([seed, k])
            clean.append(to_unit(hu[k]))
            noisy.append(to_unit(hu[k] + low_dose_noise(hu[k], sigma_hu, rng)))
        arrays[f"{name}_clean"] = np.stack(clean)[..., None]
        arrays[f"{name}_noisy"] = np.stack(noisy)[..., None]
        counts[name] = len(clean)
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays, hu_range=np.array(HU_RANGE), sigma_hu=np.array(sigma_hu),
                        spacing=np.array(image.spacing[1:]))
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(shared_data_dir() / "tcia_lidc_idri_0001_ct_subset"))
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--sigma-hu", type=float, default=60.0, help="noise std in water, HU (default 60)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(prepare(a.src, a.out, a.sigma_hu, a.seed), "→", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
