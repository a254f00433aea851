#!/usr/bin/env python
"""BraTS 2015 (DeepMedic example cases) → an nnU-Net raw dataset folder that ``tfrecord-convert`` reads.

The DeepMedic examples keep each case in its own folder (``Flair_subtrMeanDivStd.nii.gz``,
``T1c_subtrMeanDivStd.nii.gz``, ``OTMultiClass.nii.gz`` with the BraTS labels 0-4). nnU-Net's raw layout
is the exchange format the converter understands, so this script only *re-files* the cases:

* ``imagesTr/<case>_0000.nii.gz`` (FLAIR) and ``<case>_0001.nii.gz`` (T1c): symbolic links to the source
  files (nothing is copied; ``--copy`` copies instead, e.g. for a file system without links). The 4 cases
  of ``train/`` and ``validation/`` are the training cases, the 2 of ``test/`` go to ``imagesTs``.
* ``labelsTr``/``labelsTs/<case>.nii.gz``: the label map re-numbered the way nnU-Net's own BraTS conversion
  does (Dataset137): 0 background, 1 oedema (BraTS 2), 2 necrotic / non-enhancing core (BraTS 1 and 3),
  3 enhancing tumour (BraTS 4), written with the source's affine and header.
* ``dataset.json`` with region-based labels, as nnU-Net declares BraTS: whole tumour = {1, 2, 3}, tumour
  core = {2, 3}, enhancing = {3} (``regions_class_order`` [1, 2, 3]).

The case folder names (``brats_2013_pat0001_1``) are kept: they are the public dataset's case names, and
the converter replaces them with keyed pseudonyms in records and manifests.

    python data_tools/brats2015_to_nnunet.py --out runs/data/Dataset501_BraTS2015
    tfrecord-convert runs/data/Dataset501_BraTS2015 --mode slice --size 208,208 --resize crop_or_pad --split train=1.0 -o runs/records/brats2015
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _records import shared_data_dir  # noqa: E402

CHANNELS = {"0": "FLAIR", "1": "T1c"}
FILES = ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")
LABELS = "OTMultiClass.nii.gz"
#: BraTS label → nnU-Net BraTS label (oedema 1, necrotic/non-enhancing 2, enhancing 3)
RENUMBER = {0: 0, 1: 2, 2: 1, 3: 2, 4: 3}
SPLIT_FOLDERS = {"imagesTr": ("train", "validation"), "imagesTs": ("test",)}
DATASET_JSON = {
    "name": "BraTS2015_DeepMedicExamples",
    "description": "BraTS 2015 cases from the DeepMedic examples (Menze et al. 2015; Kamnitsas et al. 2017); "
                   "FLAIR and T1c z-scored within the brain by the DeepMedic authors. CC BY-NC-SA 3.0.",
    "channel_names": CHANNELS,
    "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
    "regions_class_order": [1, 2, 3],
    "file_ending": ".nii.gz",
}


def renumber(label: np.ndarray) -> np.ndarray:
    """BraTS labels 0-4 → nnU-Net's BraTS numbering (see the module docstring).

    Raises:
        ValueError: a value outside 0-4.
    """
    values = np.rint(label).astype(np.int64)
    bad = sorted(set(np.unique(values).tolist()) - set(RENUMBER))
    if bad:
        raise ValueError(f"BraTS label map holds values {bad[:5]}; expected 0-4")
    lut = np.zeros(5, np.uint8)
    for k, v in RENUMBER.items():
        lut[k] = v
    return lut[values]


def build(src, out, *, copy: bool = False) -> dict:
    """Write the nnU-Net folder ``out``; returns {images folder: number of cases}.

    Raises:
        FileNotFoundError: a case folder lacks one of the expected files, or a split has no case.
    """
    import nibabel as nib

    src, out = pathlib.Path(src), pathlib.Path(out)
    if out.exists():
        shutil.rmtree(out)
    counts = {}
    for images, folders in SPLIT_FOLDERS.items():
        cases = sorted(p for f in folders for p in (src / f).glob("brats_*") if p.is_dir())
        if not cases:
            raise FileNotFoundError(f"{src}: no brats_* case folders under {folders}")
        labels = out / images.replace("images", "labels")
        (out / images).mkdir(parents=True)
        labels.mkdir(parents=True)
        for case in cases:
            for name in (*FILES, LABELS):
                if not (case / name).is_file():
                    raise FileNotFoundError(f"{case}: expected {name} (DeepMedic BraTS 2015 example layout)")
            for ch, name in enumerate(FILES):
                dst = out / images / f"{case.name}_{ch:04d}.nii.gz"
                if copy:
                    shutil.copyfile(case / name, dst)
                else:
                    os.symlink((case / name).resolve(), dst)
            lab = nib.load(str(case / LABELS))
            img = nib.Nifti1Image(renumber(np.asarray(lab.dataobj)), lab.affine, lab.header)
            img.set_data_dtype(np.uint8)
            nib.save(img, str(labels / f"{case.name}.nii.gz"))
        counts[images] = len(cases)
    (out / "dataset.json").write_text(json.dumps({**DATASET_JSON, "numTraining": counts["imagesTr"]}, indent=2) + "\n")
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(shared_data_dir() / "brats2015_deepmedic"))
    p.add_argument("--out", required=True, help="the nnU-Net dataset folder to write (replaced)")
    p.add_argument("--copy", action="store_true", help="copy the image files instead of linking them")
    a = p.parse_args(argv)
    try:
        print(build(a.src, a.out, copy=a.copy), "→", a.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
