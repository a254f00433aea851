"""A PNG grid of (augmented) examples from a records split: mid-slices for 3D, labels as titles."""

from __future__ import annotations

import math
import pathlib

import numpy as np


def _title(label: np.ndarray, names) -> str:
    label = np.asarray(label).ravel()
    if label.size == 0:
        return "(unlabelled)"
    if label.size == 1:
        k = int(label[0])
        return names[k] if names and 0 <= k < len(names) else str(k)
    on = [i for i, v in enumerate(label) if v > 0]  # multi-hot
    return ", ".join(names[i] if names and i < len(names) else str(i) for i in on) or "none"


def _display(image: np.ndarray) -> np.ndarray:
    """Mid-slice for 3D; 1 channel → grey, 3 → RGB, else channel 0; min-max scaled to [0, 1]."""
    x = np.asarray(image, np.float32)
    if x.ndim == 4:
        x = x[x.shape[0] // 2]
    x = x if x.shape[-1] == 3 else x[..., 0]
    lo, hi = float(np.min(x)), float(np.max(x))
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def render_preview(records_dir, split: str, out, config, *, n: int = 16, seed: int = 0, training: bool = True,
                   columns: int | None = None) -> pathlib.Path:
    """Write a PNG grid of ``n`` examples of ``split`` as ``build_dataset`` would produce them
    (augmented when ``training``; mixup/cutmix, which act on batches, are not shown).

    Args:
        records_dir: records directory.
        split: split name.
        out: PNG path (parent directories are created).
        config: ``DataConfig``.
        n: number of examples.
        seed: augmentation seed.
        training: apply the training-time augmentation.
        columns: grid columns (default ≈ sqrt(n)).

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medtf.records.reader import read_manifest
    from medtf.data.pipeline import build_examples

    manifest = read_manifest(records_dir)
    names = manifest.get("label_names")
    ds = build_examples(records_dir, split, config.replace(repeat=False), training=training, seed=seed,
                        keep_mask=True).take(n)
    examples = list(ds.as_numpy_iterator())
    if not examples:
        raise ValueError(f"{records_dir}: split {split!r} yielded no examples")
    cols = columns or int(math.ceil(math.sqrt(len(examples))))
    rows = int(math.ceil(len(examples) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, e in zip(axes.ravel(), examples):
        img = _display(e["image"])
        ax.imshow(img, cmap=None if img.ndim == 3 else "gray", interpolation="nearest")
        if "mask" in e and e["mask"].size:
            m = e["mask"]
            m = m[m.shape[0] // 2] if m.ndim == 4 else m
            if np.any(m[..., 0] > 0):
                ax.contour(m[..., 0] > 0, levels=[0.5], colors="r", linewidths=0.8)
        ax.set_title(_title(e["label"], names), fontsize=8)
    mode = "augmented" if training else "preprocessed"
    fig.suptitle(f"{pathlib.Path(records_dir).name} / {split}: {len(examples)} {mode} examples", fontsize=9)
    fig.tight_layout()
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
