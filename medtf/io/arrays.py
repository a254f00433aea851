"""NumPy ``.npz`` archives in the MedMNIST layout.

Keys ``{split}_images`` / ``{split}_labels`` for split in train, val, test (a plain ``images`` /
``labels`` pair is read with ``split=None``). Images: 2D (N, H, W) or (N, H, W, 3); 3D (N, D, H, W) or
(N, D, H, W, C). Labels: (N,) or (N, K) integers. Every row becomes one Image with its split, label
tuple, ``index`` = row and a pseudonymous patient per row (MedMNIST has no patient IDs):
``pseudonymizer.patient(f"{file}#{split}#{i}")``.
"""

from __future__ import annotations

import pathlib
from typing import Iterator

import numpy as np

from medtf.io import deid
from medtf.io.types import Image, ReadError, ReadOptions

SPLITS = ("train", "val", "test")


def _layout(path, images: np.ndarray) -> tuple[int, bool]:
    """(spatial dims, has channel axis) for an (N, ...) image array."""
    if images.ndim == 3:
        return 2, False
    if images.ndim == 4:
        # (N, H, W, C) with few channels vs. (N, D, H, W) volumes (MedMNIST 3D are cubes)
        return (2, True) if images.shape[-1] in (1, 3, 4) and images.shape[-1] != images.shape[1] else (3, False)
    if images.ndim == 5:
        return 3, True
    raise ReadError(path, f"npz images must be (N,H,W), (N,H,W,3), (N,D,H,W) or (N,D,H,W,C); received {images.shape}")


def npz_splits(path) -> list[tuple[str | None, str, str | None]]:
    """[(split, images key, labels key or None)] present in the archive, in train/val/test order."""
    try:
        with np.load(str(path), allow_pickle=False) as z:
            keys = set(z.files)
    except Exception as exc:  # noqa: BLE001
        raise ReadError(path, f"not a readable .npz archive ({type(exc).__name__})") from None
    found = []
    for split in SPLITS:
        if f"{split}_images" in keys:
            found.append((split, f"{split}_images", f"{split}_labels" if f"{split}_labels" in keys else None))
    if not found and "images" in keys:
        found.append((None, "images", "labels" if "labels" in keys else None))
    if not found:
        raise ReadError(path, f"npz has no MedMNIST image arrays: expected keys like 'train_images', "
                              f"received {sorted(keys)[:10]}")
    return found


def iter_npz(path, *, pseudonymizer, file_key: str | None = None, splits=None,
             options: ReadOptions = ReadOptions()) -> Iterator[Image]:
    """Yield one Image per row of a MedMNIST-layout npz (each split array is loaded once).

    Args:
        path: the .npz file.
        pseudonymizer: for the per-row patient pseudonym.
        file_key: file name used in the patient stand-in (default: the file's name).
        splits: restrict to these split names (default all present).
        options: ``max_pixels`` applies per split array.

    Yields:
        Image with array (H, W, C) or (D, H, W, C) (views into the loaded split array), ``split``,
        ``label`` (tuple of ints) and ``index``.

    Raises:
        ReadError: missing/invalid arrays, label count mismatch, non-integer labels.
    """
    file_key = file_key or pathlib.Path(path).name
    layout = npz_splits(path)
    with np.load(str(path), allow_pickle=False) as z:
        for split, img_key, lab_key in layout:
            if splits is not None and split not in splits:
                continue
            try:
                images = z[img_key]
                labels = z[lab_key] if lab_key else None
            except Exception as exc:  # noqa: BLE001
                raise ReadError(path, f"array {img_key!r} could not be read ({type(exc).__name__})") from None
            if images.size > options.max_pixels * max(1, images.shape[0]):
                raise ReadError(path, f"{img_key} rows exceed max_pixels={options.max_pixels}")
            dims, has_c = _layout(path, images)
            if not has_c:
                images = images[..., None]
            if labels is not None:
                if labels.shape[0] != images.shape[0]:
                    raise ReadError(path, f"{lab_key} has {labels.shape[0]} rows but {img_key} has {images.shape[0]}")
                if not np.issubdtype(labels.dtype, np.integer):
                    if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
                        raise ReadError(path, f"{lab_key} must hold integer class labels")
                labels = labels.reshape(labels.shape[0], -1).astype(np.int64)
            spacing = (1.0,) * dims
            meta = deid.check_meta({"format": "npz", "spacing_default": True})
            for i in range(images.shape[0]):
                yield Image(
                    array=images[i], spacing=spacing,
                    patient=pseudonymizer.patient(f"{file_key}#{split}#{i}"),
                    modality="NPZ", label=tuple(int(v) for v in labels[i]) if labels is not None else None,
                    split=split, meta=dict(meta), index=i,
                )


def read_npz(path, *, pseudonymizer, file_key: str | None = None, options: ReadOptions = ReadOptions()) -> list[Image]:
    """All rows of a MedMNIST-layout npz as Images (see :func:`iter_npz`)."""
    return list(iter_npz(path, pseudonymizer=pseudonymizer, file_key=file_key, options=options))
