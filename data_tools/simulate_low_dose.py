#!/usr/bin/env python
"""LIDC CT slices → full-dose and simulated low-dose per-slice NIfTI (HU) + ``splits.csv`` for ct_denoising.

Why this stays in ``data_tools``: it is a *simulation*, not a file format. ``tfrecord-convert`` reads the
two folders it writes (``--targets`` pairs each low-dose slice with its full-dose slice by file name);
nothing a converter could do replaces making the low-dose images in the first place.

Output (``--out DIR``)::

    DIR/full/slice_000.nii.gz ... slice_040.nii.gz   full-dose HU (int16, as stored in the DICOM series)
    DIR/low/slice_000.nii.gz  ... slice_040.nii.gz   simulated low-dose HU (float32: HU + noise, not rounded)
    DIR/splits.csv                                   path,split — slices 0-27 train, 28-31 val, 32-40 test

Each file is one axial slice (1 × 512 × 512, 0.70 mm pixels, 2.5 mm slice thickness) with its position and
orientation from the series (written with SimpleITK), so ``tfrecord-convert --mode slice`` gives one 2D
record per slice. The split is by position: the test slices 32-40 are held out and never used for tuning.

Low-dose simulation (image domain, documented rather than physical; unchanged from the recipe's previous
preparer): zero-mean Gaussian noise, band-pass filtered (difference of Gaussians, σ 0.7 and 3 px) to give a
CT-like mid-frequency noise power spectrum, scaled to ``--sigma-hu`` HU standard deviation in water and
growing with attenuation (×(1 + 0.5·clip((HU + 1000)/1000, 0, 2))). Seeded per slice (``[seed, slice]``), so
the low-dose images are reproducible.

    python data_tools/simulate_low_dose.py --out runs/data/ct_low_dose
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _records import shared_data_dir  # noqa: E402

SPLITS = {"train": range(0, 28), "val": range(28, 32), "test": range(32, 41)}


def low_dose_noise(hu: np.ndarray, sigma_hu: float, rng: np.random.Generator) -> np.ndarray:
    """Correlated, attenuation-dependent noise (HU) for one slice (see the module docstring)."""
    from scipy import ndimage

    white = rng.standard_normal(hu.shape)
    band = ndimage.gaussian_filter(white, 0.7) - ndimage.gaussian_filter(white, 3.0)
    band /= band.std() + 1e-12
    weight = 1.0 + 0.5 * np.clip((hu + 1000.0) / 1000.0, 0.0, 2.0)
    return (sigma_hu * weight * band).astype(np.float32)


def _write_slice(path: pathlib.Path, plane: np.ndarray, image, k: int) -> None:
    """One (H, W) slice of ``image`` as a 1-slice NIfTI volume at the slice's position (SimpleITK, LPS → RAS)."""
    import SimpleITK as sitk

    from medtf.preprocess import shift_origin

    vol = sitk.GetImageFromArray(plane[None])
    dz, dy, dx = (float(s) for s in image.spacing)
    vol.SetSpacing((dx, dy, dz))
    if image.origin is not None:
        vol.SetOrigin(shift_origin(image.origin, image.direction, image.spacing, (float(k), 0.0, 0.0)))
    if image.direction is not None:
        vol.SetDirection(tuple(float(v) for v in image.direction))
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    sitk.WriteImage(vol, str(tmp))
    tmp.replace(path)  # atomic: a reader sees the old file or the complete new one


def simulate(src, out, sigma_hu: float = 60.0, seed: int = 0) -> dict:
    """Write ``out/full``, ``out/low`` and ``out/splits.csv`` (see the module docstring); returns slices per split."""
    from nodule_patches import read_series

    src = pathlib.Path(src)
    image = read_series(src / "dicom" if (src / "dicom").is_dir() else src)
    hu = image.array[..., 0]
    out = pathlib.Path(out)
    (out / "full").mkdir(parents=True, exist_ok=True)
    (out / "low").mkdir(parents=True, exist_ok=True)
    rows, counts = ["path,split"], {}
    for split, idx in SPLITS.items():
        for k in idx:
            rng = np.random.default_rng([seed, k])
            full = hu[k]
            low = full.astype(np.float32) + low_dose_noise(full.astype(np.float32), sigma_hu, rng)
            name = f"slice_{k:03d}.nii.gz"
            _write_slice(out / "full" / name, full, image, k)
            _write_slice(out / "low" / name, low.astype(np.float32), image, k)
            rows.append(f"{name},{split}")
        counts[split] = len(idx)
    tmp = out / ".splits.csv.tmp"
    tmp.write_text("\n".join(rows) + "\n")
    tmp.replace(out / "splits.csv")
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(shared_data_dir() / "tcia_lidc_idri_0001_ct_subset"))
    p.add_argument("--out", required=True, help="output folder (full/, low/, splits.csv)")
    p.add_argument("--sigma-hu", type=float, default=60.0, help="noise std in water, HU (default 60)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(simulate(a.src, a.out, a.sigma_hu, a.seed), "→", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
