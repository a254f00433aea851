"""Class balancing, class weights, random patches relative to a mask, and 2D tiling."""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf



# ------------------------------------------------------------------------------------------------
# class statistics
# ------------------------------------------------------------------------------------------------


def class_counts_from_manifest(manifest: dict, split: str = "train", num_classes: int | None = None) -> np.ndarray:
    """Per-class example counts of ``split`` from ``manifest["splits"][split]["labels"]``.

    Label keys may be class indices ("0", "1", ...) or names listed in ``manifest["label_names"]``.

    Raises:
        ValueError: unknown split, missing counts, or a key that is neither an index nor a name.
    """
    splits = manifest.get("splits", {})
    if split not in splits:
        raise ValueError(f"manifest has no split {split!r}; available: {sorted(splits)}")
    labels = splits[split].get("labels")
    if not labels:
        raise ValueError(f"manifest split {split!r} has no label counts ('labels': {{label: count}})")
    names = list(manifest.get("label_names") or [])
    idx = {}
    for key, count in labels.items():
        k = str(key)
        if k.lstrip("-").isdigit():
            idx[int(k)] = int(count)
        elif k in names:
            idx[names.index(k)] = int(count)
        else:
            raise ValueError(f"manifest split {split!r}: label key {key!r} is neither a class index nor in label_names {names}")
    n = num_classes or max(len(names), max(idx) + 1)
    if min(idx) < 0 or max(idx) >= n:
        raise ValueError(f"manifest split {split!r}: label indices {sorted(idx)} outside [0, {n})")
    counts = np.zeros(n, np.int64)
    for k, c in idx.items():
        counts[k] = c
    return counts


def class_weights_from_manifest(manifest: dict, split: str = "train", num_classes: int | None = None) -> np.ndarray:
    """Class weights ``n / (K × count_k)`` (scikit-learn's "balanced" rule) from the manifest counts.

    ``K`` counts the classes present; an absent class gets weight 0 (no example carries it).

    Returns:
        float32 array of shape (num_classes,).
    """
    counts = class_counts_from_manifest(manifest, split, num_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# re-sampling datasets to target class proportions
# ------------------------------------------------------------------------------------------------


def _targets(targets, n: int) -> np.ndarray:
    t = np.full(n, 1.0 / n) if targets is None else np.asarray(targets, np.float64)
    if t.shape != (n,):
        raise ValueError(f"class targets need {n} proportions. Received: {list(t)}")
    return t / t.sum()


def sample_from_datasets(ds: tf.data.Dataset, class_fn: Callable, counts, targets=None, *, seed: int = 0,
                         shuffle_buffer: int = 1024) -> tf.data.Dataset:
    """Over-sample to target proportions: one repeated, shuffled stream per class mixed by
    ``tf.data.Dataset.sample_from_datasets``. The result is infinite (``take`` an epoch).

    Args:
        ds: finite dataset of examples.
        class_fn: example → int class tensor.
        counts: examples per class (classes with 0 examples are dropped from the mix).
        targets: target proportions per class (None: uniform over present classes).
        seed: seed of the shuffles and of the mixing.
        shuffle_buffer: shuffle buffer of each class stream.
    """
    counts = np.asarray(counts)
    t = _targets(targets, len(counts))
    present = [k for k in range(len(counts)) if counts[k] > 0 and t[k] > 0]
    if not present:
        raise ValueError(f"no class has both examples and a positive target (counts {list(counts)}, targets {list(t)})")
    streams = [
        ds.filter(lambda e, k=k: tf.equal(tf.cast(class_fn(e), tf.int64), k))
        .shuffle(shuffle_buffer, seed=seed + 7919 * (k + 1), reshuffle_each_iteration=True)
        .repeat()
        for k in present
    ]
    w = [float(t[k]) for k in present]
    w = [v / sum(w) for v in w]
    return tf.data.Dataset.sample_from_datasets(streams, weights=w, seed=seed, rerandomize_each_iteration=True)


def rejection_resample(ds: tf.data.Dataset, class_fn: Callable, counts, targets=None, *, seed: int = 0) -> tf.data.Dataset:
    """Under-sample to target proportions with ``tf.data.Dataset.rejection_resample`` (finite;
    examples of over-represented classes are dropped). ``counts`` give the initial distribution."""
    counts = np.asarray(counts, np.float64)
    t = _targets(targets, len(counts))
    init = counts / counts.sum()
    out = ds.rejection_resample(
        lambda e: tf.cast(class_fn(e), tf.int32), target_dist=t.astype(np.float32),
        initial_dist=init.astype(np.float32), seed=seed,
    )
    return out.map(lambda _, e: e)


# ------------------------------------------------------------------------------------------------
# random patches (MONAI RandCropByPosNegLabel / nnU-Net foreground oversampling)
# ------------------------------------------------------------------------------------------------


def crop_padded(x, start, size):
    """Crop ``size`` starting at ``start`` (may be negative / run past the end: zero padded)."""
    nd = len(size)
    shape = tf.shape(x, out_type=tf.int64)
    start = tf.cast(start, tf.int64)
    sz = tf.constant(size, tf.int64)
    dims = shape[:nd]
    lo = tf.clip_by_value(start, 0, dims)
    hi = tf.clip_by_value(start + sz, 0, dims)
    crop = tf.slice(x, tf.concat([lo, [0]], 0), tf.concat([hi - lo, [shape[-1]]], 0))
    pads = tf.stack([lo - start, start + sz - hi], axis=1)
    crop = tf.pad(crop, tf.concat([pads, tf.zeros([1, 2], tf.int64)], 0))
    return tf.ensure_shape(crop, list(size) + [x.shape[-1]])


def random_patch_3d(image, mask, size, pos_ratio: float, seed):
    """A random patch whose centre is a foreground voxel with probability ``pos_ratio``, else a
    background voxel (MONAI ``RandCropByPosNegLabel``); regions outside the volume are zero padded.
    Works for 2D (H, W, C) too. Falls back to the other kind when a volume has no fg / no bg voxel.

    Args:
        image: (D, H, W, C) tensor.
        mask: (D, H, W, 1) tensor, foreground = > 0.
        size: patch spatial size (D, H, W).
        pos_ratio: probability of a foreground-centred patch.
        seed: shape-[2] seed.

    Returns:
        ``(image_patch, mask_patch)`` of spatial shape ``size``.
    """
    size = [int(s) for s in size]
    image = tf.convert_to_tensor(image)
    mask = tf.convert_to_tensor(mask)
    nd = len(size)
    if image.shape.rank != nd + 1 or mask.shape.rank != nd + 1:
        raise ValueError(f"random_patch_3d: image {image.shape} and mask {mask.shape} must be (spatial..., C) "
                         f"with {nd} spatial axes to match size {size}")
    u = tf.random.stateless_uniform([2], seed)
    fg = mask[..., 0] > 0
    flat = tf.reshape(fg, [-1])
    n_fg = tf.reduce_sum(tf.cast(flat, tf.int64))
    n_all = tf.size(flat, out_type=tf.int64)
    n_bg = n_all - n_fg
    want_fg = ((u[0] < pos_ratio) & (n_fg > 0)) | (n_bg == 0)
    pool = tf.where(want_fg, flat, tf.logical_not(flat))
    n_pool = tf.where(want_fg, n_fg, n_bg)
    k = tf.minimum(tf.cast(tf.floor(u[1] * tf.cast(n_pool, tf.float32)), tf.int64), n_pool - 1)
    # k-th True of ``pool`` without materialising all candidates' coordinates
    pos = tf.searchsorted(tf.cumsum(tf.cast(pool, tf.int64)), [k + 1], side="left", out_type=tf.int64)[0]
    centre = tf.unravel_index(pos, tf.shape(fg, out_type=tf.int64))
    start = centre - tf.constant([s // 2 for s in size], tf.int64)
    return crop_padded(image, start, size), crop_padded(mask, start, size)


def random_window(tensors, size, seed):
    """The same random window of ``size`` cut from every tensor of ``tensors`` (same spatial shape, any
    channels): its start is uniform over the positions that keep the window inside the image along each
    axis (zero padded where the image is smaller). Restoration pairs use it: input and target patches stay
    aligned, and no patch is mostly padding.

    Args:
        tensors: (spatial..., C) tensors sharing their spatial shape.
        size: window spatial size.
        seed: shape-[2] seed.

    Returns:
        List of the windows, in the order of ``tensors``.
    """
    size = [int(s) for s in size]
    tensors = [tf.convert_to_tensor(t) for t in tensors]
    nd = len(size)
    if any(t.shape.rank != nd + 1 for t in tensors):
        raise ValueError(f"random_window: tensors {[t.shape for t in tensors]} must be (spatial..., C) with {nd} "
                         f"spatial axes to match size {size}")
    dims = tf.shape(tensors[0], out_type=tf.int64)[:nd]
    room = tf.maximum(dims - tf.constant(size, tf.int64), 0)
    u = tf.random.stateless_uniform([nd], seed)
    start = tf.minimum(tf.cast(tf.floor(u * tf.cast(room + 1, tf.float32)), tf.int64), room)
    return [crop_padded(t, start, size) for t in tensors]


# ------------------------------------------------------------------------------------------------
# tiling of large 2D images
# ------------------------------------------------------------------------------------------------


def _starts(n, tile: int, stride: int):
    last = tf.maximum(n - tile, 0)
    s = tf.range(0, last + 1, stride)
    return tf.cond(s[-1] < last, lambda: tf.concat([s, [last]], 0), lambda: s)


def tile_2d(image, tile, overlap: int = 0):
    """Cut (H, W, C) into ``tile``-sized tiles with ``overlap`` pixels; the last row/column of tiles
    is aligned to the image edge; images smaller than a tile are zero padded (bottom/right).

    Args:
        image: (H, W, C) tensor (dynamic size ok: graph-safe).
        tile: int or (th, tw).
        overlap: overlap in pixels (< tile).

    Returns:
        ``(tiles, starts)``: (N, th, tw, C) tensor and (N, 2) int32 top-left corners.
    """
    th, tw = (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))
    if overlap < 0 or overlap >= min(th, tw):
        raise ValueError(f"overlap must be in [0, tile). Received overlap={overlap}, tile={(th, tw)}")
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    padded = tf.pad(image, [[0, tf.maximum(th - h, 0)], [0, tf.maximum(tw - w, 0)], [0, 0]])
    ys = _starts(h, th, th - overlap)
    xs = _starts(w, tw, tw - overlap)
    yy, xx = tf.meshgrid(ys, xs, indexing="ij")
    starts = tf.stack([tf.reshape(yy, [-1]), tf.reshape(xx, [-1])], axis=1)
    tiles = tf.map_fn(
        lambda s: tf.slice(padded, [s[0], s[1], 0], [th, tw, -1]), starts,
        fn_output_signature=tf.TensorSpec([th, tw, image.shape[-1]], image.dtype),
    )
    return tiles, starts


def untile_2d(tiles, starts, image_size):
    """Reassemble tiles from ``tile_2d`` into (H, W, C), averaging overlaps (exact for equal values).

    Args:
        tiles: (N, th, tw, C) tensor (e.g. per-tile predictions of the same size).
        starts: (N, 2) top-left corners from ``tile_2d``.
        image_size: (H, W) of the original image.
    """
    tiles = tf.convert_to_tensor(tiles)
    starts = tf.cast(tf.convert_to_tensor(starts), tf.int32)
    h, w = int(image_size[0]), int(image_size[1])
    th, tw = tiles.shape[1], tiles.shape[2]
    c = tf.shape(tiles)[-1]
    yy, xx = tf.meshgrid(tf.range(th), tf.range(tw), indexing="ij")
    idx = tf.stack([starts[:, 0, None, None] + yy[None], starts[:, 1, None, None] + xx[None]], axis=-1)
    hp, wp = max(h, th), max(w, tw)
    acc = tf.tensor_scatter_nd_add(tf.zeros(tf.stack([hp, wp, c]), tf.float64), idx, tf.cast(tiles, tf.float64))
    cnt = tf.tensor_scatter_nd_add(tf.zeros([hp, wp, 1], tf.float64), idx, tf.ones(tf.concat([tf.shape(idx)[:-1], [1]], 0), tf.float64))
    out = (acc / tf.maximum(cnt, 1.0))[:h, :w]
    return tf.cast(out, tiles.dtype)
