"""Where the geometric steps put each output voxel: the map between a stage's output grid and its
input grid, used to keep record geometry (spacing, origin) and to put predicted masks back on the
source grid.

For every spatial axis a stage maps output index ``r`` to input continuous index ``s = offset + scale * r``:

* resample to a spacing: ``scale = out / in``, ``offset = 0`` (the first voxel keeps its position);
* resize ``n → m`` (half-pixel centres): ``scale = n / m``, ``offset = (scale - 1) / 2``;
* centre crop / pad ``n → m``: ``scale = 1``, ``offset = (n - m) // 2``.

Stages compose: ``s = o1 + k1 * (o2 + k2 * r)``. NumPy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from medtf.preprocess.spec import Chain, Preprocessing


def resampled_shape(shape, in_spacing, out_spacing) -> tuple[int, ...]:
    """Output grid of :func:`resample`: ``max(1, round(n * s_in / s_out))`` per axis (round half to even)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, in_spacing, out_spacing))


def expand_spacing(spacing, spatial_dims: int, what: str = "spacing") -> tuple[float, ...]:
    sp = tuple(float(s) for s in np.atleast_1d(spacing))
    if len(sp) == 1:
        sp = sp * spatial_dims
    if len(sp) != spatial_dims:
        raise ValueError(f"{what} needs 1 or {spatial_dims} values for a {spatial_dims}D image. Received: {list(sp)}")
    return sp



def resample_spacings(spec: Preprocessing, spacing, sd: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(input spacing, target spacing) of a stage that resamples a ``sd``-D image; None when it does not
    (no ``spec.spacing``, or the input is already on it).

    Raises:
        ValueError: the stage resamples but the input's spacing is unknown, or values that do not fit.
    """
    if spec.spacing is None:
        return None
    if spacing is None:
        raise ValueError(f"preprocessing resamples to {list(spec.spacing)} mm but the input's spacing is unknown")
    in_sp = expand_spacing(spacing, sd, "input spacing")
    out_sp = expand_spacing(spec.spacing, sd, "preprocessing.spacing")
    return None if in_sp == out_sp else (in_sp, out_sp)


@dataclasses.dataclass(frozen=True)
class AxisMap:
    """Output grid of a chain relative to its input grid (one value per spatial axis)."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    offset: tuple[float, ...]
    scale: tuple[float, ...]

    def then(self, other: "AxisMap") -> "AxisMap":
        """This map followed by ``other`` (whose input is this map's output)."""
        off = tuple(o1 + k1 * o2 for o1, k1, o2 in zip(self.offset, self.scale, other.offset))
        sc = tuple(k1 * k2 for k1, k2 in zip(self.scale, other.scale))
        return AxisMap(self.in_shape, other.out_shape, off, sc)

    @classmethod
    def identity(cls, shape) -> "AxisMap":
        shape = tuple(int(s) for s in shape)
        return cls(shape, shape, (0.0,) * len(shape), (1.0,) * len(shape))


def stage_map(spec: Preprocessing, shape, spacing=None) -> AxisMap:
    """The :class:`AxisMap` of one stage for an input of spatial ``shape`` (and ``spacing``, needed when the
    stage resamples)."""
    shape = tuple(int(s) for s in shape)
    sd = len(shape)
    amap = AxisMap.identity(shape)
    spacings = resample_spacings(spec, spacing, sd)
    if spacings is not None:
        in_sp, out_sp = spacings
        out = resampled_shape(shape, in_sp, out_sp)
        amap = AxisMap(shape, out, (0.0,) * sd, tuple(t / s for s, t in zip(in_sp, out_sp)))
    if spec.size is not None:
        size = tuple(int(s) for s in spec.size)
        if len(size) == 1:
            size = size * sd
        if len(size) != sd:
            raise ValueError(f"preprocessing.size needs {sd} values for a {sd}D image. Received: {list(size)}")
        cur = amap.out_shape
        if spec.resize == "resize":
            k = tuple(n / m for n, m in zip(cur, size))
            step = AxisMap(cur, size, tuple((v - 1.0) / 2.0 for v in k), k)
        else:
            step = AxisMap(cur, size, tuple(float((n - m) // 2) for n, m in zip(cur, size)), (1.0,) * sd)
        amap = amap.then(step)
    return amap


def stage_spacing(spec: Preprocessing, shape, spacing) -> tuple[float, ...]:
    """Spacing of a stage's output grid."""
    amap = stage_map(spec, shape, spacing)
    sp = expand_spacing(spacing, len(amap.in_shape), "input spacing")
    return tuple(float(s * k) for s, k in zip(sp, amap.scale))


def chain_map(chain: Chain | Preprocessing, shape, spacing=None) -> AxisMap:
    """The composed :class:`AxisMap` of every stage of ``chain``."""
    steps = chain.steps if isinstance(chain, Chain) else (chain,)
    amap = AxisMap.identity(shape)
    for spec in steps:
        step = stage_map(spec, amap.out_shape, spacing)
        if spacing is not None:
            sp = expand_spacing(spacing, len(amap.out_shape), "input spacing")
            spacing = tuple(float(s * k) for s, k in zip(sp, step.scale))
        amap = amap.then(step)
    return amap


def shift_origin(origin, direction, spacing, offset) -> tuple[float, float, float] | None:
    """LPS origin of a grid whose first voxel sits at input continuous index ``offset`` (array axis
    order) of a grid with ``origin``, ``direction`` (row-major 3x3, ITK) and ``spacing``."""
    if origin is None:
        return None
    sd = len(offset)
    mat = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64).reshape(3, 3)
    xyz = np.zeros(3)
    xyz[:sd] = (np.asarray(offset, dtype=np.float64) * np.asarray(spacing, dtype=np.float64))[::-1]
    return tuple(float(v) for v in np.asarray(origin, dtype=np.float64) + mat @ xyz)


def to_source_grid(values: np.ndarray, amap: AxisMap) -> np.ndarray:
    """Put a model-space array (mask or map; spatial axes first, any trailing axes) back on the input grid
    of ``amap`` with nearest neighbour — SimpleITK nearest-neighbour resampling of the model-space
    grid onto the source grid; source voxels outside the model grid get 0.

    Raises:
        ValueError: ``values`` does not have ``amap.out_shape`` as its leading axes.
    """
    v = np.asarray(values)
    sd = len(amap.out_shape)
    if tuple(v.shape[:sd]) != tuple(amap.out_shape):
        raise ValueError(f"values of shape {v.shape} do not match the model grid {amap.out_shape}")
    valid = np.ones(amap.in_shape, dtype=bool)
    for axis, (n_src, n_out, off, k) in enumerate(zip(amap.in_shape, amap.out_shape, amap.offset, amap.scale)):
        r = (np.arange(n_src, dtype=np.float64) - off) / k
        idx = np.floor(r + 0.5).astype(np.int64)
        ok = (idx >= 0) & (idx < n_out)
        shape = [1] * sd
        shape[axis] = n_src
        valid &= ok.reshape(shape)
        v = np.take(v, np.clip(idx, 0, n_out - 1), axis=axis)
    extra = v.ndim - sd
    return np.where(valid.reshape(valid.shape + (1,) * extra), v, np.zeros((), v.dtype))
