#!/usr/bin/env python
"""ISBI 2012 EM membrane segmentation (30 annotated 512x512 slices) → medtf records.

Split (fixed, by slice index, the recipe's protocol): slices 0-20 train, 21-23 val (model selection),
24-29 test — i.e. 24 slices for training/validation and 6 held-out test slices. Image: uint8 (512, 512, 1);
mask: 1 = membrane (label PNG value 0), 0 = cell interior (255).

    python data_tools/prepare_isbi2012.py --out runs/records/isbi2012 --tile 256 [--context 1] [--src ../shared/data/isbi2012_em_membrane]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _records import pseudonymizer, shared_data_dir, write_records  # noqa: E402

SPLITS = {"train": range(0, 21), "val": range(21, 24), "test": range(24, 30)}


def load_pairs(src) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image uint8 (H, W), membrane mask uint8 (H, W)) for the 30 annotated slices, in index order.

    Raises:
        FileNotFoundError: missing ``train/image/<i>.png`` or ``train/label/<i>.png``.
    """
    import cv2

    src = pathlib.Path(src)
    pairs = []
    for i in range(30):
        ip, lp = src / "train" / "image" / f"{i}.png", src / "train" / "label" / f"{i}.png"
        if not ip.is_file() or not lp.is_file():
            raise FileNotFoundError(f"{src}: expected train/image/{i}.png and train/label/{i}.png (ISBI 2012 layout)")
        img = cv2.imread(str(ip), cv2.IMREAD_GRAYSCALE)
        lab = cv2.imread(str(lp), cv2.IMREAD_GRAYSCALE)
        pairs.append((img, (lab < 128).astype(np.uint8)))
    return pairs


def _tiles(img: np.ndarray, mask: np.ndarray, tile: int):
    for r in range(0, img.shape[0] - tile + 1, tile):
        for c in range(0, img.shape[1] - tile + 1, tile):
            yield r, c, img[r:r + tile, c:c + tile], mask[r:r + tile, c:c + tile]


def with_context(images: list[np.ndarray], i: int, context: int) -> np.ndarray:
    """Slice ``i`` with its ``context`` neighbours on each side of the serial-section stack as channels
    (``i - context … i + context``, the end slices repeated at the stack's ends) → (H, W, 2·context + 1)."""
    n = len(images)
    return np.stack([images[min(max(j, 0), n - 1)] for j in range(i - context, i + context + 1)], axis=-1)


def prepare(src, out, tile: int | None = None, context: int = 0) -> dict:
    """Write the records; returns the manifest.

    Args:
        src: the ISBI 2012 folder (``train/image``, ``train/label``).
        out: records directory.
        tile: cut the *training* slices into non-overlapping ``tile``×``tile`` tiles (validation and
            test slices stay whole), so training runs on smaller images while a fully convolutional
            model is evaluated on full slices.
        context: neighbouring sections on each side stacked as extra input channels (2.5D; the mask stays
            the centre slice's). Only images cross split borders this way, never labels: test slice 24 sees
            the image of validation slice 23, as a challenge entry sees the whole unlabelled test volume.
    """
    if context < 0:
        raise ValueError(f"context: expected >= 0 neighbouring sections, got {context}")
    pairs = load_pairs(src)
    images = [img for img, _ in pairs]
    ps = pseudonymizer()
    splits = {}
    for name, idx in SPLITS.items():
        exs = []
        for i in idx:
            img, mask = with_context(images, i, context), pairs[i][1]
            pid = ps.patient(f"isbi2012-slice-{i}")
            if tile and name == "train":
                exs += [{"image": t, "mask": m, "spacing": (1.0, 1.0), "patient": pid,
                         "source": f"isbi2012/train/{i}@{r},{c}", "modality": "EM"} for r, c, t, m in _tiles(img, mask, tile)]
            else:
                exs.append({"image": img, "mask": mask, "spacing": (1.0, 1.0), "patient": pid,
                            "source": f"isbi2012/train/{i}", "modality": "EM"})
        splits[name] = exs
    return write_records(out, splits, image_dtype="uint8", intensity={"kind": "raw8"}, tool="data_tools/prepare_isbi2012",
                         mask_names=["background", "membrane"],
                         extra={"source_data": "ISBI 2012 EM segmentation challenge (Cardona et al. 2010), 30 train slices"})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(shared_data_dir() / "isbi2012_em_membrane"))
    p.add_argument("--out", required=True)
    p.add_argument("--tile", type=int, default=None, help="tile the training slices (e.g. 256)")
    p.add_argument("--context", type=int, default=0,
                   help="neighbouring sections on each side as extra channels (2.5D input; default 0)")
    a = p.parse_args(argv)
    m = prepare(a.src, a.out, a.tile, a.context)
    print({k: v["examples"] for k, v in m["splits"].items()}, "→", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
