"""Deterministic graph transforms: windowing, intensity normalisation, resize/crop/pad (2D and 3D),
the graph twin of ``medtf.data.spec`` and label encoding.

All functions take channels-last tensors, unbatched: (H, W, C) or (D, H, W, C).
"""

from __future__ import annotations

import tensorflow as tf

from medtf.data.spec import Preprocessing


def window(x, width: float, level: float):
    """pydicom's linear VOI window (``apply_windowing``, PS3.3 C.11.2.1.2.1) mapped to [0, 1].

    Args:
        x: tensor of modality values (e.g. HU).
        width, level: window width (>= 1) and level (centre).

    Returns:
        float32 tensor in [0, 1], same shape.
    """
    x = tf.convert_to_tensor(x)
    x = tf.cast(x, tf.float32)
    c, w = float(level) - 0.5, float(width) - 1.0
    if w <= 0:
        return tf.cast(x > c, tf.float32)
    return tf.clip_by_value((x - c) / w + 0.5, 0.0, 1.0)


def apply_intensity(image, spec: Preprocessing):
    """Intensity step of ``spec`` (no channel or size change, except "window": one channel per window)."""
    x = tf.cast(image, tf.float32)
    if spec.intensity == "window":
        base = tf.reduce_mean(x, axis=-1) if x.shape[-1] != 1 else x[..., 0]
        return tf.stack([window(base, w, l) for w, l in spec.windows], axis=-1)
    if spec.intensity == "zscore":
        mean = tf.constant(spec.mean, tf.float32) if spec.mean is not None else tf.reduce_mean(x)
        std = tf.constant(spec.std, tf.float32) if spec.std is not None else tf.math.reduce_std(x)
        return (x - mean) / tf.maximum(std, 1e-6)
    if spec.intensity == "range":
        lo, hi = spec.value_range
        return (tf.clip_by_value(x, lo, hi) - lo) / max(hi - lo, 1e-6)
    if spec.intensity == "scale":
        return x / float(spec.scale)
    return x


def _channels(x, channels: int | None, *, reduce_only: bool = False, repeat_only: bool = False):
    if channels is None:
        return x
    c = x.shape[-1]
    if c is None:
        raise ValueError("the channel count must be static to apply Preprocessing.channels")
    if c == channels:
        return x
    if c == 1:
        return x if reduce_only else tf.tile(x, [1] * (x.shape.rank - 1) + [channels])
    if channels == 1:
        return x if repeat_only else tf.reduce_mean(x, axis=-1, keepdims=True)
    raise ValueError(f"cannot map {c} channels to {channels}")


def apply_channels(image, spec: Preprocessing):
    """Channel step: repeat a single channel to ``spec.channels`` or average to one channel."""
    return _channels(image, spec.channels)


def resize(image, size, method: str = "linear"):
    """Resize the spatial axes of (H, W, C) or (D, H, W, C) to ``size``.

    Args:
        image: channels-last tensor.
        size: one target extent per spatial axis.
        method: "linear" (bilinear / trilinear, half-pixel centres, no antialiasing — equal to
            ``medtf.data.spec.resize_numpy``) or "nearest" (for masks; dtype preserved).

    Returns:
        Resized tensor (float32 for "linear").

    Raises:
        ValueError: wrong number of sizes or unknown method.
    """
    x = tf.convert_to_tensor(image)
    size = [int(s) for s in size]
    rank = x.shape.rank
    if rank is None or len(size) != rank - 1 or rank not in (3, 4):
        raise ValueError(f"size needs one value per spatial axis of a (H, W, C) or (D, H, W, C) image. "
                         f"Received size {size} for shape {x.shape}")
    if method not in ("linear", "nearest"):
        raise ValueError(f"method must be 'linear' or 'nearest'. Received: {method!r}")
    tf_method = "bilinear" if method == "linear" else "nearest"
    dtype = x.dtype
    if method == "linear":
        x = tf.cast(x, tf.float32)
    elif not (dtype.is_floating or dtype in (tf.uint8, tf.int32, tf.int64)):
        x = tf.cast(x, tf.int32)

    def _resize2(t, hw):
        out = tf.image.resize(t, hw, method=tf_method, antialias=False)
        return out if method == "linear" else tf.cast(out, t.dtype)

    if rank == 3:
        out = _resize2(x, size)
    else:
        out = _resize2(x, size[1:])  # (D, H', W', C): depth acts as the batch
        if size[0] != x.shape[0]:
            t = tf.transpose(out, [1, 0, 2, 3])  # (H', D, W', C)
            t = _resize2(t, [size[0], size[2]])  # W' unchanged → exact along W
            out = tf.transpose(t, [1, 0, 2, 3])
    return tf.cast(out, dtype) if method == "nearest" else out


def crop_or_pad(image, size):
    """Centre crop / zero pad the spatial axes to ``size`` (``tf.image.resize_with_crop_or_pad`` rule
    for each axis: crop ``(n - out) // 2`` leading, pad ``(out - n) // 2`` leading), 2D or 3D."""
    x = tf.convert_to_tensor(image)
    size = [int(s) for s in size]
    rank = x.shape.rank
    if rank is None or len(size) != rank - 1:
        raise ValueError(f"size needs {None if rank is None else rank - 1} values. Received {size} for shape {x.shape}")
    shape = tf.shape(x)
    begin, paddings = [], []
    for axis, out in enumerate(size):
        n = shape[axis]
        begin.append(tf.maximum((n - out) // 2, 0))
        before = tf.maximum((out - n) // 2, 0)
        after = tf.maximum(out - n - before, 0)
        paddings.append(tf.stack([before, after]))
    extent = [tf.minimum(shape[a], size[a]) for a in range(len(size))]
    x = tf.slice(x, tf.stack(begin + [0]), tf.stack(extent + [shape[-1]]))
    x = tf.pad(x, tf.stack(paddings + [tf.zeros([2], tf.int32)]))
    return tf.ensure_shape(x, size + [image.shape[-1]])


def apply_size(image, spec: Preprocessing, *, mask=None):
    """Size step of ``spec`` on the image (linear or crop/pad) and optionally its mask (nearest)."""
    if spec.size is None:
        return image if mask is None else (image, mask)
    if spec.resize == "resize":
        image = resize(image, spec.size)
        mask = None if mask is None else resize(mask, spec.size, "nearest")
    else:
        image = crop_or_pad(image, spec.size)
        mask = None if mask is None else crop_or_pad(mask, spec.size)
    return image if mask is None else (image, mask)


def repeat_channels(x, spec: Preprocessing):
    """The 1 → ``spec.channels`` repetition (exact copies) of any (..., 1) tensor; else unchanged."""
    x = tf.convert_to_tensor(x)
    n = spec.channels
    if n is None or n == 1 or x.shape[-1] != 1:
        return x
    # a (…, 1) × (1, n) product of ones: exact, and faster than tf.repeat/tf.tile on CPU
    flat = tf.matmul(tf.reshape(x, [-1, 1]), tf.ones([1, n], x.dtype))
    return tf.reshape(flat, tf.concat([tf.shape(x)[:-1], [n]], 0))


def apply_preprocessing(image, spec: Preprocessing, *, mask=None, repeat_channels: bool = True):
    """Graph twin of ``medtf.data.spec.apply_numpy``: intensity → channels → size.

    Channel repetition (1 → N, exact copies) is done after resizing (identical result, cheaper).

    Args:
        image: (H, W, C) or (D, H, W, C) tensor of stored values.
        spec: the ``Preprocessing``.
        mask: optional (spatial..., 1) mask, resized with nearest neighbour / cropped alike.
        repeat_channels: False leaves a single channel unrepeated (the pipeline repeats whole
            batches at the end; see ``repeat_channels``).

    Returns:
        float32 image, or ``(image, mask)`` when a mask is given.
    """
    x = apply_intensity(image, spec)
    x = _channels(x, spec.channels, reduce_only=True)
    if mask is None:
        x = apply_size(x, spec)
    else:
        x, mask = apply_size(x, spec, mask=mask)
    if repeat_channels:
        x = _channels(x, spec.channels, repeat_only=True)
    return x if mask is None else (x, mask)


# ------------------------------------------------------------------------------------------------
# labels
# ------------------------------------------------------------------------------------------------


def encode_label(label, mode: str, num_classes: int | None):
    """Encode a record's int64 label vector (or a (B, L) batch of them) for ``mode`` (see
    ``DataConfig.label_mode``)."""
    label = tf.convert_to_tensor(label)
    if mode == "sparse":
        return tf.cast(label[..., 0], tf.int32)
    if mode == "onehot":
        return tf.one_hot(label[..., 0], num_classes, dtype=tf.float32)
    if mode == "binary":
        return tf.cast(label[..., :1] > 0, tf.float32)
    if mode == "multilabel":
        y = tf.cast(label > 0, tf.float32)
        return tf.ensure_shape(y, y.shape[:-1].concatenate([num_classes]))
    if mode == "ordinal":
        return tf.cast(label[..., :1] > tf.range(num_classes - 1, dtype=label.dtype), tf.float32)
    raise ValueError(f"encode_label: label_mode {mode!r} is not a label encoding")


def encode_mask(mask, num_classes: int, onehot: bool):
    """(spatial..., 1) integer mask → one-hot float32 (spatial..., K), sparse int32, or binary float32."""
    if num_classes == 1:
        return tf.cast(mask > 0, tf.float32)
    if onehot:
        return tf.one_hot(tf.cast(mask[..., 0], tf.int32), num_classes, dtype=tf.float32)
    return tf.cast(mask, tf.int32)
