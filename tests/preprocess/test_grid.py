"""Grid maps: record geometry and masks put back on the source grid, against SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import medtf.preprocess as P
from medtf.preprocess import Chain, Preprocessing


def _sitk_nearest_back(values, amap, src_spacing):
    """SimpleITK: the model-space array as an image with its physical geometry, nearest-neighbour
    resampled onto the source grid (origin 0, identity direction)."""
    sd = len(amap.in_shape)
    img = sitk.GetImageFromArray(values.astype(np.uint8))
    sp = np.asarray(src_spacing, float) * np.asarray(amap.scale)
    img.SetSpacing([float(s) for s in sp[::-1]])
    img.SetOrigin([float(o) for o in (np.asarray(amap.offset) * np.asarray(src_spacing, float))[::-1]])
    rs = sitk.ResampleImageFilter()
    rs.SetSize([int(s) for s in amap.in_shape[::-1]])
    rs.SetOutputSpacing([float(s) for s in src_spacing[::-1]])
    rs.SetOutputOrigin([0.0] * sd)
    rs.SetInterpolator(sitk.sitkNearestNeighbor)
    rs.SetDefaultPixelValue(0)
    return sitk.GetArrayFromImage(rs.Execute(img))


CHAINS = [
    (Chain.of(Preprocessing(size=(16, 16))), (37, 29), (0.7, 0.7)),
    (Chain.of(Preprocessing(size=(24, 20), resize="crop_or_pad")), (37, 29), (1.0, 1.0)),
    (Chain.of(Preprocessing(spacing=(1.5, 1.5), size=(20, 20)), Preprocessing(size=(16, 16))), (37, 29), (0.7, 0.8)),
    (Chain.of(Preprocessing(spacing=(4.0, 1.5, 1.5), size=(8, 16, 16))), (12, 40, 36), (2.5, 0.7, 0.7)),
    (Chain.of(Preprocessing(spacing=(2.0,), size=(6, 12, 12), resize="crop_or_pad")), (9, 20, 22), (1.0, 1.0, 1.0)),
]


@pytest.mark.parametrize("chain,shape,spacing", CHAINS, ids=lambda c: c.describe() if isinstance(c, Chain) else None)
def test_to_source_grid_equals_simpleitk_nearest(chain, shape, spacing):
    amap = P.chain_map(chain, shape, spacing)
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, amap.out_shape).astype(np.uint8)
    got = P.to_source_grid(values, amap)
    assert got.shape == tuple(shape)
    np.testing.assert_array_equal(got, _sitk_nearest_back(values, amap, spacing))


@pytest.mark.parametrize("chain,shape,spacing", CHAINS[:4], ids=lambda c: c.describe() if isinstance(c, Chain) else None)
def test_chain_map_output_shape_is_what_apply_chain_makes(chain, shape, spacing):
    x = np.zeros(tuple(shape) + (1,), np.float32)
    assert P.apply_chain(x, chain, spacing).shape[:-1] == P.chain_map(chain, shape, spacing).out_shape


def test_shift_origin_follows_direction():
    direction = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # columns: row axis→y, column axis→x, normal→-z
    origin = P.shift_origin((10.0, 20.0, 30.0), direction, (2.0, 0.5, 0.25), (1.0, 2.0, 4.0))
    # offset in (slice, row, col) voxels → ITK (x=col, y=row, z=slice) mm = (1.0, 1.0, 2.0); rotated by the matrix
    np.testing.assert_allclose(origin, (10.0 + 1.0, 20.0 + 1.0, 30.0 - 2.0))
