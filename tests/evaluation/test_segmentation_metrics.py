"""Segmentation metrics vs independent references.

* Max Hausdorff distance vs SimpleITK's ``HausdorffDistanceImageFilter`` (anisotropic spacing). SimpleITK
  measures between all foreground voxels, medtf between surfaces; for the blob/box pairs used here the
  two definitions coincide. Tolerance 1e-6 mm.
* HD95, HD and ASSD vs a brute-force computation: surface voxels found by face-neighbour tests (no
  erosion), distances between physical point sets with ``scipy.spatial.cKDTree``. Tolerance 1e-9 mm.
* Dice/IoU vs sklearn's ``f1_score``/``jaccard_score`` on the flattened masks.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import cKDTree
from sklearn.metrics import f1_score, jaccard_score

from medtf.evaluation import metrics as M


def _ellipsoid(shape, centre, radii_mm, spacing):
    g = np.indices(shape).astype(float)
    d = sum(((g[i] - centre[i]) * spacing[i] / radii_mm[i]) ** 2 for i in range(len(shape)))
    return d <= 1.0


def _sitk_hd(a, b, spacing):
    ia = sitk.GetImageFromArray(a.astype(np.uint8))
    ib = sitk.GetImageFromArray(b.astype(np.uint8))
    ia.SetSpacing(tuple(float(s) for s in spacing[::-1]))  # SimpleITK is (x, y, z) = reversed array axes
    ib.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(ia, ib)
    return f.GetHausdorffDistance()


def _surface_points(mask, spacing):
    """Foreground voxels with a background face neighbour (outside the image counts as background)."""
    m = np.pad(mask.astype(bool), 1)
    inner = np.ones_like(m)
    for axis in range(m.ndim):
        inner &= np.roll(m, 1, axis) & np.roll(m, -1, axis)
    surf = (m & ~inner)[tuple(slice(1, -1) for _ in range(m.ndim))]
    return np.argwhere(surf) * np.asarray(spacing, dtype=float)


def _brute(a, b, spacing):
    pa, pb = _surface_points(a, spacing), _surface_points(b, spacing)
    dab = cKDTree(pb).query(pa)[0]
    dba = cKDTree(pa).query(pb)[0]
    return {
        "hd": max(dab.max(), dba.max()),
        "hd95": max(np.percentile(dab, 95), np.percentile(dba, 95)),
        "assd": (dab.sum() + dba.sum()) / (dab.size + dba.size),
    }


SPACING_3D = (2.5, 0.7, 0.9)
PAIRS_3D = [
    (((10, 20, 20), (12, 6, 8)), ((12, 24, 18), (10, 7, 6))),
    (((10, 20, 20), (8, 8, 8)), ((10, 26, 24), (8, 8, 8))),
    (((8, 15, 15), (6, 5, 5)), ((14, 28, 28), (5, 6, 4))),  # disjoint
]


@pytest.mark.parametrize("pair", PAIRS_3D)
def test_hausdorff_matches_simpleitk_anisotropic_3d(pair):
    (c1, r1), (c2, r2) = pair
    a = _ellipsoid((24, 40, 40), c1, r1, SPACING_3D)
    b = _ellipsoid((24, 40, 40), c2, r2, SPACING_3D)
    assert a.any() and b.any()
    np.testing.assert_allclose(M.hausdorff_distance(a, b, SPACING_3D), _sitk_hd(a, b, SPACING_3D), rtol=0, atol=1e-6)


def test_hausdorff_matches_simpleitk_2d_boxes():
    a = np.zeros((30, 30), bool)
    a[5:15, 4:20] = True
    b = np.zeros((30, 30), bool)
    b[8:25, 10:28] = True
    np.testing.assert_allclose(M.hausdorff_distance(a, b, (1.3, 0.6)), _sitk_hd(a, b, (1.3, 0.6)), atol=1e-6)


def _random_blob(shape, seed, thresh=0.55):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    field = (field - field.min()) / (field.max() - field.min())
    return field > thresh


@pytest.mark.parametrize("seed", range(5))
def test_hd95_assd_hd_vs_bruteforce_random_3d(seed):
    shape = (14, 30, 26)
    spacing = (3.0, 0.8, 1.1)
    a, b = _random_blob(shape, seed), _random_blob(shape, seed + 100, 0.5)
    assert a.any() and b.any()
    ref = _brute(a, b, spacing)
    got = M._surface_summary(a, b, spacing)
    for k in ("hd", "hd95", "assd"):
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
    np.testing.assert_allclose(M.hd95(a, b, spacing), ref["hd95"], atol=1e-9)
    np.testing.assert_allclose(M.mean_surface_distance(a, b, spacing), ref["assd"], atol=1e-9)


def test_hd95_vs_bruteforce_2d_touching_border():
    a = np.zeros((20, 25), bool)
    a[0:9, 3:25] = True  # touches the image border: border voxels are surface
    b = np.zeros((20, 25), bool)
    b[4:20, 0:12] = True
    spacing = (0.5, 1.7)
    ref = _brute(a, b, spacing)
    for k in ("hd", "hd95", "assd"):
        np.testing.assert_allclose(M._surface_summary(a, b, spacing)[k], ref[k], atol=1e-9, err_msg=k)


def test_spacing_changes_distances_and_identical_masks_are_zero():
    a = np.zeros((20, 24, 24), bool)
    a[4:12, 2:22, 2:22] = True
    b = np.roll(a, 2, axis=0)  # shifted 2 slices
    assert M.hausdorff_distance(a, b, (1, 1, 1)) == pytest.approx(2.0)
    assert M.hausdorff_distance(a, b, (3, 1, 1)) == pytest.approx(6.0)  # slice thickness 3 mm
    e = _ellipsoid((20, 20, 20), (10, 10, 10), (6, 6, 6), (1, 1, 1))
    f = np.roll(e, 2, axis=0)
    assert M.hd95(e, f, (2, 2, 2)) == pytest.approx(2 * M.hd95(e, f, (1, 1, 1)))
    assert M.hd95(e, f, (3, 1, 1)) > M.hd95(e, f, (1, 1, 1))
    assert M.hd95(e, e, (2, 1, 1)) == 0.0 and M.mean_surface_distance(e, e) == 0.0
    assert M.dice(e, e) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_dice_iou_vs_sklearn(seed):
    a, b = _random_blob((10, 20, 20), seed), _random_blob((10, 20, 20), seed + 7)
    np.testing.assert_allclose(M.dice(a, b), f1_score(a.ravel(), b.ravel()), rtol=1e-12)
    np.testing.assert_allclose(M.iou(a, b), jaccard_score(a.ravel(), b.ravel()), rtol=1e-12)


def test_empty_mask_conventions():
    empty = np.zeros((8, 8), bool)
    full = np.zeros((8, 8), bool)
    full[2:5, 2:5] = True
    both = M._surface_summary(empty, empty, None)
    assert M.dice(empty, empty) == 1.0 and M.iou(empty, empty) == 1.0
    assert both == {"hd": 0.0, "hd95": 0.0, "assd": 0.0}
    assert M.dice(full, empty) == 0.0 and M.iou(empty, full) == 0.0
    assert np.isnan(M.hd95(full, empty)) and np.isnan(M.hausdorff_distance(empty, full))
    assert np.isnan(M.mean_surface_distance(full, empty))


def test_case_metrics_and_summary_per_class():
    true = np.zeros((2, 12, 12), int)
    true[:, 2:6, 2:6] = 1
    true[:, 7:11, 7:11] = 2
    pred = true.copy()
    pred[:, 7:11, 7:11] = 0  # class 2 missed entirely
    pred[:, 2:6, 3:7] = 1
    case = M.segmentation_case_metrics(pred, true, 3, (2.0, 1.0, 1.0))
    assert set(case) == {1, 2}
    np.testing.assert_allclose(case[1]["dice"], M.dice(pred == 1, true == 1))
    assert case[2]["dice"] == 0.0 and np.isnan(case[2]["hd95"])
    assert case[1]["true_voxels"] == 32
    with_bg = M.segmentation_case_metrics(pred, true, 3, include_background=True)
    assert 0 in with_bg
    cases = [{"case": "case_0001", "metrics": case}, {"case": "case_0002", "metrics": M.segmentation_case_metrics(true, true, 3)}]
    s = M.summarize_segmentation(cases, ["bg", "a", "b"])
    assert set(s["per_class"]) == {"a", "b"}
    assert s["per_class"]["b"]["dice"]["mean"] == pytest.approx(0.5)
    assert s["per_class"]["b"]["hd95"]["n_undefined"] == 1 and s["per_class"]["b"]["hd95"]["n"] == 1
    assert s["per_class"]["a"]["dice"]["n"] == 2


def test_invalid_segmentation_inputs():
    with pytest.raises(ValueError, match="same shape"):
        M.dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(np.ones((3, 3)), np.ones((3, 3)), (1.0,))
    with pytest.raises(ValueError, match="spacing"):
        M.segmentation_case_metrics(np.ones((3, 3), int), np.ones((3, 3), int), 2, (1.0, -1.0))


@pytest.mark.shared_data
def test_surface_metrics_on_real_brain_tumour_labels(shared_data):
    """Real BraTS labels (1 mm): whole tumour vs tumour core of one case, with the header spacing and a
    resampled-thick-slice variant (spacing ×(1, 1, 3) after keeping every third axial slice); HD95 /
    HD / ASSD equal the brute-force cKDTree reference (1e-9 mm), Dice/IoU equal sklearn's."""
    nib = pytest.importorskip("nibabel")
    case = shared_data("brats2015_deepmedic") / "test" / "brats_2013_pat0001_1" / "OTMultiClass.nii.gz"
    img = nib.load(str(case))
    labels = np.asarray(img.dataobj).astype(np.int64)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    whole = labels > 0
    core = np.isin(labels, (1, 3, 4))
    box = tuple(slice(max(a - 2, 0), b + 3) for a, b in zip(np.argwhere(whole).min(0), np.argwhere(whole).max(0)))
    for a, b, sp in ((whole[box], core[box], spacing),
                     (whole[box][..., ::3], core[box][..., ::3], (spacing[0], spacing[1], 3 * spacing[2]))):
        ref = _brute(a, b, sp)
        got = M._surface_summary(a, b, sp)
        for k in ("hd", "hd95", "assd"):
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
        np.testing.assert_allclose(M.dice(a, b), f1_score(a.ravel(), b.ravel()), rtol=1e-12)
        np.testing.assert_allclose(M.iou(a, b), jaccard_score(a.ravel(), b.ravel()), rtol=1e-12)
    case_m = M.segmentation_case_metrics(np.where(core, 1, 0), whole.astype(int), 2, spacing)
    assert 0 < case_m[1]["dice"] < 1 and case_m[1]["hd95"] > 0


def test_region_dice_is_the_union_of_labels_vs_sklearn():
    """Region-based labels (nnU-Net BraTS: whole tumour {1,2,3}, core {2,3}, enhancing {3}): each region is
    scored as one binary mask; Dice vs sklearn's f1_score on the flattened union masks; HD95 equal to the
    binary case metric of the same union masks."""
    from medtf.evaluation.evaluate import evaluate_segmentation

    rng = np.random.default_rng(3)
    regions = {"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    trues = [rng.integers(0, 4, (6, 20, 20)) for _ in range(2)]
    preds = [np.where(rng.random(t.shape) < 0.8, t, rng.integers(0, 4, t.shape)) for t in trues]
    rep = evaluate_segmentation(trues, preds, spacing=(2.0, 1.0, 1.0), class_names=["bg", "a", "b", "c"], regions=regions)
    per = rep["metrics"]["per_region"]
    assert list(per) == list(regions)
    for name, values in regions.items():
        ref = [f1_score(np.isin(t, values).ravel(), np.isin(p, values).ravel()) for t, p in zip(trues, preds)]
        got = [c["regions"][name]["dice"] for c in rep["per_case"]]
        np.testing.assert_allclose(got, ref, atol=1e-12)
        assert per[name]["dice"]["mean"] == pytest.approx(np.mean(ref), abs=1e-12)
        hd = M.segmentation_case_metrics(np.isin(preds[0], values), np.isin(trues[0], values), 2, (2.0, 1.0, 1.0))[1]["hd95"]
        assert rep["per_case"][0]["regions"][name]["hd95"] == pytest.approx(hd)
    assert "per_region" not in evaluate_segmentation(trues, preds)["metrics"]


def test_slices_restack_into_volumes_in_slice_order():
    """2D records cut from volumes (source ``UNIT#k``) regroup per unit in slice order, with the slice spacing
    from the slice origins; a volume with a missing slice (``--empty-slices``) leaves records as they are."""
    from medtf.evaluation.evaluate import _restack_volumes

    sources = ["F-a#2", "F-b#0", "F-a#0", "F-a#1", "F-b#1"]
    origins = [np.array([0.0, 0.0, 5.0]), np.zeros(3), np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.0, 2.5]),
               np.array([0.0, 0.0, 2.5])]
    spacing = [(0.7, 0.8)] * 5
    vols = _restack_volumes(sources, origins, spacing)
    assert [idx for idx, _ in vols] == [[2, 3, 0], [1, 4]]
    assert vols[0][1] == pytest.approx((2.5, 0.7, 0.8))
    assert _restack_volumes(["F-a#0", "F-a#2"], origins[:2], spacing[:2]) is None
    assert _restack_volumes(["F-a", "F-b"], origins[:2], spacing[:2]) is None
