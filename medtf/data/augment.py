"""Augmentation as pure tensor functions with explicit stateless seeds, for 2D and 3D.

Every random op has the signature ``op(image, mask, seed, magnitude) -> (image, mask)``:

* ``image``: (H, W, C) or (D, H, W, C) float tensor; ``mask``: matching (spatial..., 1) integer mask
  or None. Geometric ops move image and mask together (linear for the image, nearest for the mask);
  intensity ops leave the mask untouched.
* ``seed``: shape-[2] int32/int64 tensor (derive one per example with
  ``tf.random.experimental.stateless_split`` / ``stateless_fold_in``); the same seed always gives the
  same result.
* ``magnitude``: op-specific strength (see ``medtf.data.config.OP_MAGNITUDES``).

Deterministic building blocks (``flip``, ``rot90``, ``affine_transform``, ``rotate``,
``elastic_deform``, ``gaussian_blur``) are exported too. Batch ops ``mixup`` and ``cutmix`` mix
images, labels and masks with matching weights.

Coordinates: pixel centres sit at integer indices; an affine maps *output* coordinates to *input*
coordinates about the centre ``(n - 1) / 2`` of each axis; out-of-image samples are 0.
"""

from __future__ import annotations

import math

import tensorflow as tf

from medtf.data.config import GEOMETRIC_OPS, INTENSITY_OPS, AugmentConfig

__all__ = [
    "flip", "rot90", "affine_transform", "rotate", "elastic_deform", "gaussian_blur",
    "random_flip", "random_rot90", "random_affine", "random_elastic", "random_brightness",
    "random_contrast", "random_gamma", "random_noise", "random_blur", "mixup", "cutmix",
    "augment_example", "split_seed", "OPS",
]


# ------------------------------------------------------------------------------------------------
# seeds and helpers
# ------------------------------------------------------------------------------------------------


def split_seed(seed, num: int) -> list:
    """``num`` independent shape-[2] seeds from one (``tf.random.experimental.stateless_split``)."""
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    return tf.unstack(tf.random.experimental.stateless_split(seed, num), num=num)


def _u(seed, shape=(), lo=0.0, hi=1.0):
    return tf.random.stateless_uniform(list(shape), seed, minval=lo, maxval=hi, dtype=tf.float32)


def _nd(image) -> int:
    rank = image.shape.rank
    if rank not in (3, 4):
        raise ValueError(f"image must be (H, W, C) or (D, H, W, C). Received shape: {image.shape}")
    return rank - 1


def _pair(image, mask, fn):
    """Apply a shape-preserving geometric ``fn`` to image and (if present) mask."""
    return fn(image), (None if mask is None else fn(mask))


def _cond(pred, true_fn, image, mask):
    if mask is None:
        return tf.cond(pred, lambda: true_fn()[0], lambda: image), None
    return tf.cond(pred, true_fn, lambda: (image, mask))


def _spatial_axes(nd: int, axes) -> list[int]:
    if axes is None:
        return list(range(nd))
    out = []
    for a in axes:
        a = int(a)
        if not -nd <= a < nd:
            raise ValueError(f"flip axis {a} out of range for {nd} spatial axes")
        out.append(a % nd)
    return out


# ------------------------------------------------------------------------------------------------
# deterministic geometric building blocks
# ------------------------------------------------------------------------------------------------


def flip(x, axes):
    """Reverse spatial ``axes`` (indices into the spatial axes; -1 = W)."""
    x = tf.convert_to_tensor(x)
    return tf.reverse(x, _spatial_axes(x.shape.rank - 1, axes)) if axes else x


def rot90(x, k: int, plane=(-2, -1)):
    """Rotate by ``k`` × 90° in a spatial plane exactly as ``np.rot90(x, k, axes=plane)``.

    ``plane`` defaults to (H, W). ``k`` is a Python int (use ``random_rot90`` for a tensor k).
    """
    x = tf.convert_to_tensor(x)
    nd = x.shape.rank - 1
    a, b = _spatial_axes(nd, plane)
    k = int(k) % 4
    perm = list(range(nd + 1))
    perm[a], perm[b] = perm[b], perm[a]
    if k == 0:
        return x
    if k == 2:
        return tf.reverse(x, [a, b])
    if k == 1:
        return tf.transpose(tf.reverse(x, [b]), perm)
    return tf.reverse(tf.transpose(x, perm), [b])


def _centre(shape_spatial):
    return tf.cast(tf.stack(shape_spatial), tf.float32) / 2.0 - 0.5


def _resample(x, coords, method: str):
    """Sample ``x`` (spatial..., C) at ``coords`` (spatial_out..., nd) input coordinates; zero outside.

    "linear" is bi/trilinear; "nearest" rounds (masks)."""
    nd = coords.shape[-1]
    shape = tf.shape(x)
    sizes = [shape[i] for i in range(nd)]
    out_spatial = tf.shape(coords)[:-1]
    flat = tf.reshape(coords, [-1, nd])
    dtype = x.dtype
    if method == "nearest":
        idx = tf.cast(tf.round(flat), tf.int32)
        valid = tf.ones([tf.shape(flat)[0]], tf.bool)
        for i in range(nd):
            valid &= (idx[:, i] >= 0) & (idx[:, i] < sizes[i])
        idx = tf.clip_by_value(idx, 0, tf.stack(sizes) - 1)
        vals = tf.gather_nd(x, idx)
        vals = tf.where(valid[:, None], vals, tf.zeros_like(vals))
        return tf.reshape(vals, tf.concat([out_spatial, [shape[-1]]], 0))
    xf = tf.cast(x, tf.float32)
    lo = tf.floor(flat)
    frac = flat - lo
    lo = tf.cast(lo, tf.int32)
    acc = 0.0
    for corner in range(2 ** nd):
        offs = [(corner >> i) & 1 for i in range(nd)]
        idx = lo + tf.constant(offs, tf.int32)
        w = tf.ones([tf.shape(flat)[0]], tf.float32)
        valid = tf.ones([tf.shape(flat)[0]], tf.bool)
        for i in range(nd):
            w *= frac[:, i] if offs[i] else 1.0 - frac[:, i]
            valid &= (idx[:, i] >= 0) & (idx[:, i] < sizes[i])
        idx = tf.clip_by_value(idx, 0, tf.stack(sizes) - 1)
        vals = tf.gather_nd(xf, idx)
        acc += tf.where(valid[:, None], vals * w[:, None], 0.0)
    out = tf.reshape(acc, tf.concat([out_spatial, [shape[-1]]], 0))
    return tf.cast(out, dtype) if dtype.is_floating else out


def _grid(shape_spatial):
    axes = [tf.range(n, dtype=tf.float32) for n in shape_spatial]
    return tf.stack(tf.meshgrid(*axes, indexing="ij"), axis=-1)


def affine_transform(image, mask=None, matrix=None, offset=None):
    """Apply an affine map (output → input coordinates about the image centre) to image and mask.

    ``input = matrix @ (output - centre) + centre + offset``.

    Args:
        image: (H, W, C) or (D, H, W, C).
        mask: optional (spatial..., 1) mask (nearest neighbour) or None.
        matrix: (nd, nd) float (identity when None).
        offset: (nd,) float translation in pixels (zero when None).

    Returns:
        ``(image, mask)`` with the input shapes; image bilinear (2D) / trilinear (3D), zero fill.
    """
    image = tf.convert_to_tensor(image)
    nd = _nd(image)
    m = tf.eye(nd) if matrix is None else tf.cast(tf.convert_to_tensor(matrix), tf.float32)
    t = tf.zeros([nd]) if offset is None else tf.cast(tf.convert_to_tensor(offset), tf.float32)
    shape = tf.shape(image)
    spatial = [shape[i] for i in range(nd)]
    c = _centre(spatial)
    if nd == 2:
        # ImageProjectiveTransformV3 works in (x=col, y=row) and maps output → input.
        shift = c + t - tf.linalg.matvec(m, c)
        row = tf.stack([m[1, 1], m[1, 0], shift[1], m[0, 1], m[0, 0], shift[0], 0.0, 0.0])[None]

        def warp(x, interp):
            dtype = x.dtype
            xx = x if dtype in (tf.float32, tf.uint8, tf.int32) else tf.cast(x, tf.float32)
            out = tf.raw_ops.ImageProjectiveTransformV3(
                images=xx[None], transforms=row, output_shape=tf.stack(spatial), fill_value=0.0,
                interpolation=interp, fill_mode="CONSTANT")[0]
            return tf.ensure_shape(tf.cast(out, dtype), x.shape)

        img = warp(image, "BILINEAR")
        return img, (None if mask is None else warp(mask, "NEAREST"))
    coords = tf.einsum("ij,...j->...i", m, _grid(spatial) - c) + c + t
    img = tf.ensure_shape(_resample(image, coords, "linear"), image.shape)
    msk = None if mask is None else tf.ensure_shape(_resample(mask, coords, "nearest"), mask.shape)
    return img, msk


def _rotation_2d(theta):
    c, s = tf.cos(theta), tf.sin(theta)
    return tf.stack([tf.stack([c, -s]), tf.stack([s, c])])


def _rotation_3d(angles):
    """Rotation about the D, H and W axes (radians), composed R_d @ R_h @ R_w, in (d, h, w) order."""
    a, b, g = angles[0], angles[1], angles[2]
    one, zero = tf.ones([]), tf.zeros([])

    def r(t, i, j):  # rotation in the (i, j) plane
        c, s = tf.cos(t), tf.sin(t)
        rows = [[one, zero, zero], [zero, one, zero], [zero, zero, one]]
        rows[i][i], rows[i][j], rows[j][i], rows[j][j] = c, -s, s, c
        return tf.stack([tf.stack(rw) for rw in rows])

    return r(a, 1, 2) @ r(b, 0, 2) @ r(g, 0, 1)


def rotate(image, angle_deg, mask=None):
    """Rotate by ``angle_deg`` about the centre in the (H, W) plane (every slice for 3D)."""
    image = tf.convert_to_tensor(image)
    nd = _nd(image)
    theta = tf.cast(angle_deg, tf.float32) * (math.pi / 180.0)
    if nd == 2:
        return affine_transform(image, mask, _rotation_2d(theta))
    return affine_transform(image, mask, _rotation_3d(tf.stack([theta, 0.0, 0.0])))


def elastic_deform(image, mask=None, displacement=None):
    """Warp by a dense ``displacement`` field (spatial..., nd) in pixels: ``input = output + d``.

    A zero field is the identity (exactly). Returns ``(image, mask)``.
    """
    image = tf.convert_to_tensor(image)
    nd = _nd(image)
    shape = tf.shape(image)
    spatial = [shape[i] for i in range(nd)]
    coords = _grid(spatial)
    if displacement is not None:
        coords = coords + tf.cast(displacement, tf.float32)
    img = tf.ensure_shape(_resample(image, coords, "linear"), image.shape)
    msk = None if mask is None else tf.ensure_shape(_resample(mask, coords, "nearest"), mask.shape)
    return img, msk


def gaussian_blur(image, sigma, radius: int):
    """Separable Gaussian blur with std ``sigma`` (pixels, tensor ok) and kernel radius ``radius``;
    symmetric padding at the borders. 2D or 3D, per channel."""
    image = tf.convert_to_tensor(image)
    nd = _nd(image)
    x = tf.cast(image, tf.float32)
    sigma = tf.maximum(tf.cast(sigma, tf.float32), 1e-3)
    r = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(r / sigma))
    k = k / tf.reduce_sum(k)
    # channels → batch, one input channel
    perm = [nd] + list(range(nd))
    y = tf.transpose(x, perm)[..., None]  # (C, spatial..., 1)
    for axis in range(nd):
        pad = [[0, 0]] * (nd + 2)
        pad[axis + 1] = [radius, radius]
        y = tf.pad(y, pad, mode="SYMMETRIC")
        kshape = [1] * nd
        kshape[axis] = 2 * radius + 1
        kern = tf.reshape(k, kshape + [1, 1])
        conv = tf.nn.conv2d if nd == 2 else tf.nn.conv3d
        y = conv(y, kern, strides=[1] * (nd + 2), padding="VALID")
    inv = list(range(1, nd + 1)) + [0]
    return tf.cast(tf.transpose(y[..., 0], inv), image.dtype)


# ------------------------------------------------------------------------------------------------
# random ops: (image, mask, seed, magnitude) -> (image, mask)
# ------------------------------------------------------------------------------------------------


def random_flip(image, mask, seed, magnitude=None, axes=None):
    """Flip each spatial axis in ``axes`` (default all) with probability 0.5."""
    nd = _nd(image)
    axes = _spatial_axes(nd, axes)
    coins = _u(seed, [len(axes)])
    for i, a in enumerate(axes):
        image, mask = _cond(coins[i] < 0.5, lambda a=a: _pair(image, mask, lambda t: tf.reverse(t, [a])), image, mask)
    return image, mask


def random_rot90(image, mask, seed, magnitude=None):
    """Rotate the (H, W) plane by k·90°, k uniform in {0..3} ({0, 2} when H != W)."""
    h, w = image.shape[-3], image.shape[-2]
    square = h is not None and h == w
    k = tf.random.stateless_uniform([], seed, 0, 4 if square else 2, dtype=tf.int32)
    if not square:
        k = k * 2
    branches = [lambda kk=kk: _pair(image, mask, lambda t: rot90(t, kk)) for kk in range(4)]
    if mask is None:
        return tf.switch_case(k, [lambda b=b: b()[0] for b in branches]), None
    return tf.switch_case(k, branches)


def _affine_params(magnitude):
    mag = magnitude if isinstance(magnitude, (tuple, list)) else (magnitude, 0.0, 0.0)
    mag = tuple(float(v) for v in mag) + (0.0,) * (3 - len(mag))
    return mag[:3]


def random_affine(image, mask, seed, magnitude=(15.0, 0.1, 0.1)):
    """Random rotation (±deg; about every axis in 3D), isotropic scale (1 ± s) and translation
    (± t × size per axis). ``magnitude = (deg, s, t)``; a scalar is rotation only."""
    nd = _nd(image)
    deg, sc, tr = _affine_params(magnitude)
    s1, s2, s3 = split_seed(seed, 3)
    angles = _u(s1, [1 if nd == 2 else 3], -deg, deg) * (math.pi / 180.0)
    scale = _u(s2, [], 1.0 - sc, 1.0 + sc)
    shape = tf.shape(image)
    size = tf.cast(tf.stack([shape[i] for i in range(nd)]), tf.float32)
    offset = _u(s3, [nd], -tr, tr) * size
    rot = _rotation_2d(angles[0]) if nd == 2 else _rotation_3d(angles)
    return affine_transform(image, mask, rot / scale, offset)


def random_elastic(image, mask, seed, magnitude=(4.0, 32.0)):
    """Smooth random displacement: normal(0, sigma) on a control grid every ``spacing`` pixels,
    upsampled (linear) to the image. ``magnitude = (sigma_px, spacing_px)``."""
    nd = _nd(image)
    mag = magnitude if isinstance(magnitude, (tuple, list)) else (magnitude, 32.0)
    sigma, spacing = float(mag[0]), max(float(mag[1]), 2.0)
    shape = tf.shape(image)
    spatial = [shape[i] for i in range(nd)]
    grid = [tf.maximum(2, tf.cast(tf.math.ceil(tf.cast(n, tf.float32) / spacing), tf.int32) + 1) for n in spatial]
    noise = tf.random.stateless_normal(tf.stack(grid + [nd]), seed, stddev=sigma)
    # separable linear upsampling of the control grid (half-pixel centres), 2D/3D, dynamic sizes
    if nd == 2:
        disp = tf.image.resize(noise, tf.stack(spatial), method="bilinear")
    else:
        t = tf.image.resize(noise, tf.stack(spatial[1:]), method="bilinear")  # (gd, H, W, 3)
        t = tf.transpose(t, [1, 0, 2, 3])  # (H, gd, W, 3)
        t = tf.image.resize(t, tf.stack([spatial[0], spatial[2]]), method="bilinear")
        disp = tf.transpose(t, [1, 0, 2, 3])
    return elastic_deform(image, mask, disp)


def _std(x):
    return tf.maximum(tf.math.reduce_std(x), 1e-6)


def random_brightness(image, mask, seed, magnitude=0.2):
    """Add a uniform shift in ±magnitude × std(image)."""
    return image + _u(seed, [], -magnitude, magnitude) * _std(image), mask


def random_contrast(image, mask, seed, magnitude=0.2):
    """Scale deviations from the mean by a factor in [1 - m, 1 + m]."""
    mean = tf.reduce_mean(image)
    return mean + (image - mean) * _u(seed, [], 1.0 - magnitude, 1.0 + magnitude), mask


def random_gamma(image, mask, seed, magnitude=0.3):
    """Gamma in [exp(-m), exp(m)] applied to the min-max normalised image, range restored."""
    lo, hi = tf.reduce_min(image), tf.reduce_max(image)
    rng = tf.maximum(hi - lo, 1e-6)
    g = tf.exp(_u(seed, [], -magnitude, magnitude))
    return lo + rng * tf.pow(tf.clip_by_value((image - lo) / rng, 0.0, 1.0), g), mask


def random_noise(image, mask, seed, magnitude=0.1):
    """Additive Gaussian noise with std uniform in [0, m] × std(image)."""
    s1, s2 = split_seed(seed, 2)
    sd = _u(s1, [], 0.0, magnitude) * _std(image)
    return image + tf.random.stateless_normal(tf.shape(image), s2) * sd, mask


def random_blur(image, mask, seed, magnitude=1.0):
    """Gaussian blur with sigma uniform in [0.1 m, m] pixels."""
    m = max(float(magnitude), 1e-3)
    radius = max(1, int(math.ceil(3.0 * m)))
    return gaussian_blur(image, _u(seed, [], 0.1 * m, m), radius), mask


OPS = {
    "flip": random_flip,
    "rot90": random_rot90,
    "affine": random_affine,
    "elastic": random_elastic,
    "brightness": random_brightness,
    "contrast": random_contrast,
    "gamma": random_gamma,
    "noise": random_noise,
    "blur": random_blur,
}


def augment_example(image, mask, seed, config: AugmentConfig | str, stage: str = "all"):
    """Apply the per-example ops of ``config`` in order, each with its probability.

    Args:
        image: (H, W, C) / (D, H, W, C) float tensor.
        mask: (spatial..., 1) mask or None.
        seed: shape-[2] seed for this example.
        config: ``AugmentConfig`` or a policy name.
        stage: "all" | "geometric" (only ops moving pixels) | "intensity" (only ops changing values).

    Returns:
        ``(image, mask)``.
    """
    if isinstance(config, str):
        config = AugmentConfig.policy(config)
    names = {"all": GEOMETRIC_OPS + INTENSITY_OPS, "geometric": GEOMETRIC_OPS, "intensity": INTENSITY_OPS}[stage]
    ops = [o for o in config.ops if o.name in names and o.p > 0]
    if not ops:
        return image, mask
    seeds = split_seed(seed, 2 * len(ops))
    for i, op in enumerate(ops):
        fn = OPS[op.name]
        kwargs = {"axes": op.axes} if op.name == "flip" else {}
        run = (lambda fn=fn, s=seeds[2 * i + 1], op=op, kw=kwargs, im=image, mk=mask:
               fn(im, mk, s, op.magnitude, **kw))
        if op.p >= 1.0:
            image, mask = run()
        else:
            image, mask = _cond(_u(seeds[2 * i]) < op.p, run, image, mask)
    return image, mask


# ------------------------------------------------------------------------------------------------
# batch ops
# ------------------------------------------------------------------------------------------------


def _beta(seed, n, alpha):
    s1, s2 = split_seed(seed, 2)
    g1 = tf.random.stateless_gamma([n], s1, alpha)
    g2 = tf.random.stateless_gamma([n], s2, alpha)
    return g1 / tf.maximum(g1 + g2, 1e-12)


def _bshape(lam, rank):
    return tf.reshape(lam, [-1] + [1] * (rank - 1))


def mixup(images, labels, seed, alpha: float = 0.2, p: float = 1.0, masks=None):
    """Mixup on a batch: ``x = λ x + (1-λ) x[perm]``, labels (and one-hot masks) mixed with the same λ.

    Args:
        images: (B, spatial..., C) float batch.
        labels: (B, K) float labels (one-hot / multi-hot / binary) — or None.
        seed: shape-[2] seed.
        alpha: Beta(α, α) parameter.
        p: probability per example of being mixed (λ = 1 otherwise).
        masks: optional (B, spatial..., K) float masks, mixed like labels.

    Returns:
        ``(images, labels, masks)`` (labels/masks None when not given); λ per example is such that
        mixed one-hot labels still sum to 1.
    """
    images = tf.convert_to_tensor(images)
    n = tf.shape(images)[0]
    s1, s2, s3 = split_seed(seed, 3)
    perm = tf.argsort(_u(s1, [n]))
    lam = _beta(s2, n, alpha)
    lam = tf.where(_u(s3, [n]) < p, lam, tf.ones_like(lam))

    def mix(t):
        if t is None:
            return None
        t = tf.convert_to_tensor(t)
        lb = tf.cast(_bshape(lam, t.shape.rank), t.dtype)
        return lb * t + (1 - lb) * tf.gather(t, perm)

    return mix(images), mix(labels), mix(masks)


def cutmix(images, labels, seed, alpha: float = 1.0, p: float = 1.0, masks=None):
    """CutMix on a batch: paste a random box from a partner example (2D or 3D).

    The box covers a fraction ≈ 1-λ (λ ~ Beta(α, α)) of the image; labels are mixed by the exact
    pasted fraction; masks are pasted with the box (not blended).

    Returns:
        ``(images, labels, masks)`` as for ``mixup``.
    """
    images = tf.convert_to_tensor(images)
    nd = images.shape.rank - 2
    n = tf.shape(images)[0]
    s1, s2, s3, s4 = split_seed(seed, 4)
    perm = tf.argsort(_u(s1, [n]))
    lam = _beta(s2, n, alpha)
    apply = _u(s3, [n]) < p
    frac = tf.pow(1.0 - lam, 1.0 / nd)  # box side as a fraction of each axis
    centres = _u(s4, [n, nd])
    inside = None
    area = tf.ones([n], tf.float32)
    shape = tf.shape(images)
    for a in range(nd):
        size = tf.cast(shape[a + 1], tf.float32)
        half = frac * size / 2.0
        c = centres[:, a] * size
        lo = tf.clip_by_value(tf.round(c - half), 0.0, size)
        hi = tf.clip_by_value(tf.round(c + half), 0.0, size)
        hi = tf.where(apply, hi, lo)  # empty box when not applied
        area *= (hi - lo) / size
        r = tf.range(size)[None, :]
        ax = (r >= lo[:, None]) & (r < hi[:, None])  # (B, n_a)
        ax = tf.reshape(ax, [-1] + [1] * a + [shape[a + 1]] + [1] * (nd - a - 1))
        inside = ax if inside is None else inside & ax
    inside = inside[..., None]  # (B, spatial..., 1)
    lam_eff = 1.0 - area

    def paste(t):
        return None if t is None else tf.where(inside, tf.gather(t, perm), t)

    def mix(t):
        if t is None:
            return None
        t = tf.convert_to_tensor(t)
        lb = tf.cast(_bshape(lam_eff, t.shape.rank), t.dtype)
        return lb * t + (1 - lb) * tf.gather(t, perm)

    return paste(images), mix(labels), paste(masks)
