"""The TensorFlow twin of ``medtf.preprocess.numpy_ops``: the same steps as graph ops, unbatched
((H, W, C) / (D, H, W, C)) or batched ((N, H, W, C) / (N, D, H, W, C)), for the tf.data pipeline and the
SavedModel's ``serving_default``. Tests hold every function equal to its NumPy reference (float32
rounding; resampling is computed in float64 like the reference).
"""

from __future__ import annotations

import tensorflow as tf

from medtf.preprocess.spec import Chain, Preprocessing


def window(x, width: float, level: float):
    """pydicom's LINEAR VOI window (PS3.3 C.11.2.1.2.1) mapped to [0, 1], float32."""
    x = tf.cast(x, tf.float32)
    c, w = float(level) - 0.5, float(width) - 1.0
    if w <= 0:
        return tf.cast(x > c, tf.float32)
    return tf.clip_by_value((x - c) / w + 0.5, 0.0, 1.0)


def _stat_axes(x, batched: bool):
    return list(range(1 if batched else 0, x.shape.rank))


def apply_intensity(image, spec: Preprocessing, *, batched: bool = False):
    """Intensity step ("window": one channel per window of the channel mean; per-image z-score
    statistics are taken per example when ``batched``)."""
    x = tf.cast(image, tf.float32)
    if spec.intensity == "window":
        base = tf.reduce_mean(x, axis=-1) if x.shape[-1] != 1 else x[..., 0]
        return tf.stack([window(base, w, l) for w, l in spec.windows], axis=-1)
    if spec.intensity == "zscore":
        axes = _stat_axes(x, batched)
        mean = tf.constant(spec.mean, tf.float32) if spec.mean is not None else tf.reduce_mean(x, axes, keepdims=True)
        std = tf.constant(spec.std, tf.float32) if spec.std is not None else tf.math.reduce_std(x, axes, keepdims=True)
        return (x - mean) / tf.maximum(std, 1e-6)
    if spec.intensity == "range":
        lo, hi = spec.value_range
        return (tf.clip_by_value(x, lo, hi) - lo) / (hi - lo)
    if spec.intensity == "scale":
        return x / float(spec.scale)
    return x


def map_channels(x, channels: int | None, *, reduce_only: bool = False, repeat_only: bool = False):
    """Repeat one channel to ``channels`` (exact copies) or average several to one."""
    if channels is None:
        return x
    c = x.shape[-1]
    if c is None:
        raise ValueError("the channel count must be static to map channels")
    if c == channels or (repeat_only and c != 1):
        return x
    if c == 1:
        if reduce_only:
            return x
        # a (…, 1) × (1, n) product of ones: exact, and faster than tf.repeat/tf.tile on CPU
        flat = tf.matmul(tf.reshape(x, [-1, 1]), tf.ones([1, channels], x.dtype))
        return tf.reshape(flat, tf.concat([tf.shape(x)[:-1], [channels]], 0))
    if channels == 1:
        return x if repeat_only else tf.reduce_mean(x, axis=-1, keepdims=True)
    raise ValueError(f"cannot map {c} channels to {channels}")


def _spatial(x, batched: bool) -> int:
    rank = x.shape.rank
    sd = rank - (2 if batched else 1)
    if rank is None or sd not in (2, 3):
        raise ValueError(f"expected a {'batched ' if batched else ''}2D/3D channels-last tensor. Received shape {x.shape}")
    return sd


def _sizes(size, sd: int, what: str = "size") -> list[int]:
    size = [int(s) for s in size]
    if len(size) == 1:
        size = size * sd
    if len(size) != sd:
        raise ValueError(f"{what} needs {sd} values for a {sd}D image. Received: {size}")
    return size


def resize(image, size, method: str = "linear", *, batched: bool = False):
    """Resize the spatial axes to ``size``: "linear" (half-pixel centres, no antialiasing, float32) or
    "nearest" (dtype kept). 3D resizes (H, W) per slice, then D — separable, equal to trilinear."""
    if method not in ("linear", "nearest"):
        raise ValueError(f"method must be 'linear' or 'nearest'. Received: {method!r}")
    x = tf.convert_to_tensor(image)
    sd = _spatial(x, batched)
    size = _sizes(size, sd)
    dtype = x.dtype
    if method == "linear":
        x = tf.cast(x, tf.float32)
    elif not (dtype.is_floating or dtype in (tf.uint8, tf.int32, tf.int64)):
        x = tf.cast(x, tf.int32)
    tf_method = "bilinear" if method == "linear" else "nearest"

    def r2(t, hw):
        out = tf.image.resize(t, hw, method=tf_method, antialias=False)
        return out if method == "linear" else tf.cast(out, t.dtype)

    if not batched:
        x = x[None]
    if sd == 2:
        out = r2(x, size)
    else:  # (N, D, H, W, C)
        s = tf.shape(x)
        n, d, c = s[0], s[1], x.shape[-1] if x.shape[-1] is not None else s[4]
        out = tf.reshape(r2(tf.reshape(x, tf.stack([n * d, s[2], s[3], c])), size[1:]),
                         tf.stack([n, d, size[1], size[2], c]))
        if x.shape[1] is None or size[0] != x.shape[1]:
            t = tf.transpose(out, [0, 2, 1, 3, 4])  # (N, H', D, W', C)
            t = tf.reshape(t, tf.stack([n * size[1], d, size[2], c]))
            t = r2(t, [size[0], size[2]])  # W' unchanged → exact along W
            t = tf.reshape(t, tf.stack([n, size[1], size[0], size[2], c]))
            out = tf.transpose(t, [0, 2, 1, 3, 4])
    out = out if batched else out[0]
    return tf.cast(out, dtype) if method == "nearest" else out


def crop_or_pad(image, size, fill=0.0, *, batched: bool = False):
    """Centre crop / pad the spatial axes to ``size`` (``tf.image.resize_with_crop_or_pad``'s rule),
    padding with ``fill`` (a scalar or a per-example tensor of shape (N,) when batched)."""
    x = tf.convert_to_tensor(image)
    sd = _spatial(x, batched)
    size = _sizes(size, sd)
    shape = tf.shape(x)
    first = 1 if batched else 0
    begin = [tf.constant(0)] * first
    extent = [shape[0]] * first
    paddings = [tf.zeros([2], tf.int32)] * first
    for i, out in enumerate(size):
        n = shape[first + i]
        begin.append(tf.maximum((n - out) // 2, 0))
        extent.append(tf.minimum(n, out))
        before = tf.maximum((out - n) // 2, 0)
        paddings.append(tf.stack([before, tf.maximum(out - n - before, 0)]))
    x = tf.slice(x, tf.stack(begin + [0]), tf.stack(extent + [shape[-1]]))
    fill = tf.cast(fill, x.dtype)
    if fill.shape.rank == 0:
        x = tf.pad(x, tf.stack(paddings + [tf.zeros([2], tf.int32)]), constant_values=fill)
    else:  # per-example fill: pad with 0 and add fill where the padding is
        ones = tf.ones_like(x)
        inside = tf.pad(ones, tf.stack(paddings + [tf.zeros([2], tf.int32)]))
        x = tf.pad(x, tf.stack(paddings + [tf.zeros([2], tf.int32)]))
        fill = tf.reshape(fill, [-1] + [1] * (x.shape.rank - 1))
        x = x + (1 - inside) * fill
    static = ([image.shape[0]] if batched else []) + size + [image.shape[-1]]
    return tf.ensure_shape(x, static)


def resample(image, in_spacing, out_spacing, method: str = "linear", default=None):
    """Unbatched resampling from ``in_spacing`` (a tensor or values, array axis order) to
    ``out_spacing`` — :func:`medtf.preprocess.numpy_ops.resample` in graph ops (float64 arithmetic)."""
    if method not in ("linear", "nearest"):
        raise ValueError(f"method must be 'linear' or 'nearest'. Received: {method!r}")
    x = tf.convert_to_tensor(image)
    sd = _spatial(x, False)
    in_sp = tf.reshape(tf.cast(in_spacing, tf.float64), [-1])
    in_sp = tf.broadcast_to(in_sp, [sd]) if in_sp.shape[0] in (1, None) and sd > 1 else in_sp
    out_sp = [float(v) for v in (list(out_spacing) * sd if len(list(out_spacing)) == 1 else out_spacing)]
    if len(out_sp) != sd:
        raise ValueError(f"spacing needs 1 or {sd} values for a {sd}D image. Received: {out_sp}")
    fill = tf.reduce_min(x) if default is None else tf.cast(default, x.dtype)
    y = tf.cast(x, tf.float64) if method == "linear" else x
    shape = tf.shape(x)
    valid = None
    for axis in range(sd):
        n = tf.cast(shape[axis], tf.float64)
        ratio = out_sp[axis] / in_sp[axis]
        m = tf.maximum(tf.cast(tf.round(n * in_sp[axis] / out_sp[axis]), tf.int32), 1)
        c = tf.cast(tf.range(m), tf.float64) * ratio
        ok = c < n - 0.5
        bshape = [1] * sd
        bshape[axis] = -1
        ok = tf.reshape(ok, bshape)
        valid = ok if valid is None else tf.logical_and(valid, ok)
        if method == "nearest":
            idx = tf.minimum(tf.cast(tf.floor(c + 0.5), tf.int32), shape[axis] - 1)
            y = tf.gather(y, idx, axis=axis)
            continue
        cc = tf.minimum(c, n - 1)
        lo = tf.floor(cc)
        hi = tf.minimum(lo + 1, n - 1)
        w = tf.reshape(cc - lo, bshape + [1])
        a = tf.gather(y, tf.cast(lo, tf.int32), axis=axis)
        y = a + (tf.gather(y, tf.cast(hi, tf.int32), axis=axis) - a) * w
    y = tf.where(valid[..., None], y, tf.cast(fill, y.dtype))
    return tf.cast(y, tf.float32) if method == "linear" else tf.cast(y, x.dtype)


def apply(image, spec: Preprocessing, spacing=None, *, mask=None, batched: bool = False, repeat: bool = True):
    """One stage (resample → intensity → channels → size), graph twin of ``numpy_ops.apply``.

    Args:
        image: raw values, unbatched or batched (``batched=True``).
        spec: the stage.
        spacing: the input spacing (tensor (sd,) unbatched / (N, sd) batched); needed when the stage
            resamples. Batched resampling maps over the batch (each example has its own grid).
        mask: optional integer mask with a channel axis, moved with nearest neighbour.
        repeat: False leaves a single channel unrepeated (the pipeline repeats whole batches later).

    Returns:
        float32 tensor, or ``(image, mask)`` when a mask is given.
    """
    x = tf.convert_to_tensor(image)
    sd = _spatial(x, batched)
    if spec.spacing is not None:
        if spacing is None:
            raise ValueError(f"preprocessing resamples to {list(spec.spacing)} mm but no input spacing was given")
        if batched:
            if mask is not None:
                raise ValueError("batched resampling of masks is not supported; map over examples instead")
            return _per_example(lambda a, sp: apply(a, spec, sp, repeat=repeat), x, spacing, (spec,))
        out_sp = _sizes_f(spec.spacing, sd)
        if mask is not None:
            mask = resample(mask, spacing, out_sp, "nearest", default=0)
        x = resample(x, spacing, out_sp, spec.interpolation)
    x = apply_intensity(x, spec, batched=batched)
    x = map_channels(x, spec.channels, reduce_only=True)
    if spec.size is not None:
        size = _sizes(spec.size, sd)
        if spec.resize == "resize":
            if mask is not None:
                mask = resize(mask, size, "nearest", batched=batched)
            x = resize(x, size, spec.interpolation, batched=batched)
        else:
            if spec.pad == "zero":
                fill = 0.0
            else:
                fill = tf.reduce_min(x, axis=_stat_axes(x, batched)[:]) if not batched else \
                    tf.reduce_min(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)
            if mask is not None:
                mask = crop_or_pad(mask, size, 0, batched=batched)
            x = crop_or_pad(x, size, fill, batched=batched)
    if repeat:
        x = map_channels(x, spec.channels, repeat_only=True)
    return x if mask is None else (x, mask)


def _sizes_f(values, sd):
    v = [float(s) for s in values]
    return v * sd if len(v) == 1 else v


def apply_chain(image, chain: Chain | Preprocessing, spacing=None, *, batched: bool = False):
    """Every stage of ``chain`` (float32 out). A resampling stage needs ``spacing``; the stages after it do
    not resample again (the records' convention: resampling is the conversion stage's)."""
    steps = chain.steps if isinstance(chain, Chain) else (chain,)
    x = tf.convert_to_tensor(image)
    if batched and any(s.spacing is not None for s in steps):
        return _per_example(lambda a, sp: apply_chain(a, Chain(steps), sp), x, spacing, steps)
    for spec in steps:
        if spec.spacing is not None:
            x = apply(x, spec, spacing, batched=False)
            spacing = None
        else:
            x = apply(x, spec, batched=batched)
    return tf.cast(x, tf.float32)


def _per_example(fn, x, spacing, steps):
    """``fn(example, its spacing)`` mapped over a batch: each example has its own grid until a size step,
    which fixes the output shape (required)."""
    sd = _spatial(x, True)
    size = _final_size(steps, sd)
    if size is None:
        raise ValueError("batched resampling needs preprocessing.size (examples end on different grids)")
    out_c = Chain(tuple(steps)).output_channels or x.shape[-1]
    return tf.map_fn(lambda a: fn(a[0], a[1]), (x, tf.cast(spacing, tf.float64)),
                     fn_output_signature=tf.TensorSpec([*size, out_c], tf.float32))


def _final_size(steps, sd):
    size = None
    for s in steps:
        if s.size is not None:
            size = _sizes(s.size, sd)
    return size
