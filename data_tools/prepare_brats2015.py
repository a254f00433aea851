#!/usr/bin/env python
"""BraTS 2015 (DeepMedic example cases: FLAIR + T1c, labels 0-4) → 2D axial-slice medtf records.

Protocol of the brain_tumor_mri recipe: the 4 cases of ``train/`` and ``validation/`` are the training
split, the 2 cases of ``test/`` the test split (no validation split: the recipe selects by training
loss). Each axial slice that contains brain becomes one record: image float32 (192, 192, 2) =
(FLAIR, T1c), z-scored within the brain by the data's authors; mask uint8 with classes 0 background,
1 necrotic/non-enhancing core (BraTS 1 and 3), 2 oedema (2), 3 enhancing tumour (4). The fixed crop
(rows 32-223, cols 24-215 of the 240×240 grid, 1 mm) holds every case's brain. ``source`` is
``<case pseudonym>/z<slice>``, so predictions can be re-stacked into volumes for 3D Dice.

Regions for evaluation (BraTS): whole tumour = classes {1, 2, 3}, tumour core = {1, 3}, enhancing = {3}.

    python data_tools/prepare_brats2015.py --out runs/records/brats2015
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _records import pseudonymizer, shared_data_dir, write_records  # noqa: E402

ROWS, COLS = slice(32, 224), slice(24, 216)
LABEL_MAP = {0: 0, 1: 1, 2: 2, 3: 1, 4: 3}
CLASS_NAMES = ["background", "core (necrotic/non-enhancing)", "edema", "enhancing"]
REGIONS = {"whole_tumor": (1, 2, 3), "tumor_core": (1, 3), "enhancing": (3,)}
SPLIT_FOLDERS = {"train": ("train", "validation"), "test": ("test",)}


def load_case(case_dir) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (Z, H, W, 2) float32, mask (Z, H, W) uint8 in recipe classes, brain (Z, H, W) bool), cropped.

    Raises:
        FileNotFoundError: a modality, label or brain-mask file is missing.
    """
    import nibabel as nib

    case_dir = pathlib.Path(case_dir)
    names = ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz", "OTMultiClass.nii.gz", "brainmask.nii.gz")
    for n in names:
        if not (case_dir / n).is_file():
            raise FileNotFoundError(f"{case_dir}: expected {n} (DeepMedic BraTS 2015 example layout)")
    # NIfTI (x, y, z) → (z, y, x) = (slice, row, col)
    vols = [np.asarray(nib.load(str(case_dir / n)).dataobj).transpose(2, 1, 0) for n in names]
    flair, t1c, ot, brain = vols
    image = np.stack([flair, t1c], -1).astype(np.float32)[:, ROWS, COLS]
    lut = np.zeros(256, np.uint8)
    for k, v in LABEL_MAP.items():
        lut[k] = v
    mask = lut[np.rint(ot).astype(np.uint8)][:, ROWS, COLS]
    return image, mask, (brain > 0)[:, ROWS, COLS]


def cases(src) -> dict[str, list[pathlib.Path]]:
    src = pathlib.Path(src)
    out = {}
    for split, folders in SPLIT_FOLDERS.items():
        out[split] = sorted(p for f in folders for p in (src / f).glob("brats_*") if p.is_dir())
        if not out[split]:
            raise FileNotFoundError(f"{src}: no brats_* case folders under {folders}")
    return out


def prepare(src, out) -> dict:
    """Write the records; returns the manifest."""
    ps = pseudonymizer()

    def examples(case_dirs):
        for d in case_dirs:
            image, mask, brain = load_case(d)
            pid = ps.patient(f"brats2015:{d.name}")
            for z in range(image.shape[0]):
                if not brain[z].any():
                    continue
                yield {"image": image[z], "mask": mask[z], "spacing": (1.0, 1.0), "patient": pid,
                       "source": f"{pid}/z{z:03d}", "modality": "MR"}

    return write_records(out, {k: examples(v) for k, v in cases(src).items()}, image_dtype="float32",
                         intensity={"kind": "raw", "note": "z-scored within the brain by the DeepMedic authors"},
                         tool="data_tools/prepare_brats2015", mask_names=CLASS_NAMES,
                         extra={"source_data": "BraTS 2015 (Menze et al. 2015) via DeepMedic examples; CC BY-NC-SA 3.0",
                                "regions": {k: list(v) for k, v in REGIONS.items()}})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(shared_data_dir() / "brats2015_deepmedic"))
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    m = prepare(a.src, a.out)
    print({k: v["examples"] for k, v in m["splits"].items()}, "→", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
