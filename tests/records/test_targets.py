"""Restoration pairs through ``tfrecord-convert --targets``: records against nibabel / Pillow / SimpleITK /
tf.image readings of the source files (images within float32 rounding), the grid rule, the rejections with
their reasons, and the spatial steps the target follows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from medtf.cli.tfrecord_convert import main as convert_main
from records_reading import records_by_source

pytestmark = pytest.mark.filterwarnings("ignore")


def _convert(*args) -> int:
    return convert_main([str(a) for a in args] + ["--no-progress", "--keep-paths"])


def _nifti_pairs(tmp_path, n=3, shape=(5, 12, 14), k=(1, 1, 1), spacing=(2.5, 0.8, 0.7), seed=0):
    """Low-dose / full-dose NIfTI volumes (array axes (slice, row, col)); the full-dose grid is k times finer."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    (tmp_path / "low").mkdir()
    (tmp_path / "full").mkdir()
    truth = {}
    for i in range(n):
        full = rng.normal(0, 300, tuple(s * kk for s, kk in zip(shape, k))).astype(np.int16)
        low = (rng.normal(0, 300, shape)).astype(np.int16)
        t_sp = tuple(s / kk for s, kk in zip(spacing, k))
        nib.save(nib.Nifti1Image(low.T, np.diag(list(spacing[::-1]) + [1.0])), tmp_path / "low" / f"case{i}.nii.gz")
        nib.save(nib.Nifti1Image(full.T, np.diag(list(t_sp[::-1]) + [1.0])), tmp_path / "full" / f"case{i}.nii.gz")
        truth[f"case{i}.nii.gz"] = (low, full)
    return truth


def test_same_grid_nifti_pairs_in_slices_match_nibabel(tmp_path):
    import nibabel as nib

    truth = _nifti_pairs(tmp_path)
    code = _convert(tmp_path / "low", "--targets", tmp_path / "full", "--mode", "slice", "--split", "1,0,0",
                    "-o", tmp_path / "rec")
    assert code == 0
    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert m["targets"] == {"examples": 15, "scales": {"1,1": 15}} and m["target_scale"] == [1, 1]
    assert m["options"]["targets"] == {"pair": None, "scale": None}
    assert m["image_dtype"] == "int16"  # HU kept exactly, target in the same dtype
    recs = records_by_source(tmp_path / "rec")
    assert len(recs) == 15
    for key, e in recs.items():
        unit, index = key.split("#")
        low = np.asarray(nib.load(tmp_path / "low" / unit).dataobj).T  # nibabel's reading, (slice, row, col)
        full = np.asarray(nib.load(tmp_path / "full" / unit).dataobj).T
        np.testing.assert_array_equal(e["image"][..., 0], low[int(index)].astype(np.float32))
        np.testing.assert_array_equal(e["target"][..., 0], full[int(index)].astype(np.float32))
        np.testing.assert_array_equal(full, truth[unit][1])


def _png_pairs(tmp_path, n, lr=(16, 20), k=2, seed=0, hr_name="{stem}_hr.png"):
    rng = np.random.default_rng(seed)
    (tmp_path / "lr").mkdir(exist_ok=True)
    (tmp_path / "hr").mkdir(exist_ok=True)
    for i in range(n):
        hr = rng.integers(0, 256, (lr[0] * k, lr[1] * k)).astype(np.uint8)
        low = np.asarray(PILImage.fromarray(hr).resize(lr[::-1], PILImage.BILINEAR))
        stem = f"img_{i:03d}"
        PILImage.fromarray(low).save(tmp_path / "lr" / f"{stem}.png")
        PILImage.fromarray(hr).save(tmp_path / "hr" / hr_name.format(stem=stem))


def test_super_resolution_png_pairs_match_pillow_and_reject_with_reasons(tmp_path):
    _png_pairs(tmp_path, 6)
    (tmp_path / "hr" / "img_001_hr.png").unlink()  # an input without a target
    PILImage.fromarray(np.zeros((32, 40), np.uint8)).save(tmp_path / "hr" / "img_009_hr.png")  # a target alone
    PILImage.fromarray(np.zeros((33, 40), np.uint8)).save(tmp_path / "hr" / "img_002_hr.png")  # not k x the grid
    PILImage.fromarray(np.zeros((16, 20, 3), np.uint8)).save(tmp_path / "hr" / "img_003_hr.png")  # RGB for gray
    code = _convert(tmp_path / "lr", "--targets", tmp_path / "hr", "--pair", r"(img_\d+)", "--split", "1,0,0",
                    "-o", tmp_path / "rec")
    assert code == 1
    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    files = {f["path"]: f for f in m["files"]}
    assert files["img_001.png"]["reason"] == "no target with the same key in --targets"
    assert files["targets/img_009_hr.png"]["reason"] == "target without an image (no input has its key)"
    assert files["img_002.png"]["reason"] == "target grid (33, 40) is not the input grid (16, 20) or an integer multiple of it"
    assert files["img_003.png"]["reason"] == "paired target has 3 channel(s); the input has 1"
    assert files["targets/img_000_hr.png"]["outcome"] == "converted"
    assert m["target_scale"] == [2, 2] and m["targets"]["examples"] == 3
    recs = records_by_source(tmp_path / "rec")
    assert set(recs) == {"img_000.png", "img_004.png", "img_005.png"}
    for key, e in recs.items():
        low = np.asarray(PILImage.open(tmp_path / "lr" / key))
        hr = np.asarray(PILImage.open(tmp_path / "hr" / key.replace(".png", "_hr.png")))
        np.testing.assert_array_equal(e["image"][..., 0], low.astype(np.float32))  # Pillow's reading, exact
        np.testing.assert_array_equal(e["target"][..., 0], hr.astype(np.float32))
        assert e["target"].shape == (32, 40, 1)


def test_target_follows_resize_and_window_on_its_own_grid(tmp_path):
    """--window and --size: the target is windowed like the input and resized to k x size (linear, half-pixel:
    tf.image.resize)."""
    import tensorflow as tf

    _png_pairs(tmp_path, 2, lr=(15, 18), k=3)
    code = _convert(tmp_path / "lr", "--targets", tmp_path / "hr", "--pair", r"(img_\d+)", "--size", "10,12",
                    "--window", "200,100", "--split", "1,0,0", "-o", tmp_path / "rec")
    assert code == 0
    for key, e in records_by_source(tmp_path / "rec").items():
        low = np.asarray(PILImage.open(tmp_path / "lr" / key)).astype(np.float32)
        hr = np.asarray(PILImage.open(tmp_path / "hr" / key.replace(".png", "_hr.png"))).astype(np.float32)

        def ref(a, size):  # the conversion stage's order: window, then resize
            w = np.clip((a - 99.5) / 199.0 + 0.5, 0.0, 1.0)  # DICOM PS3.3 C.11.2.1.2 LINEAR, W 200, C 100
            return tf.image.resize(w[None, ..., None], size, method="bilinear", antialias=False).numpy()[0]

        np.testing.assert_allclose(e["image"], ref(low, (10, 12)), atol=1e-5)  # float32 rounding
        np.testing.assert_allclose(e["target"], ref(hr, (30, 36)), atol=1e-5)


def test_denoising_target_goes_through_the_inputs_own_steps(tmp_path):
    """k = 1: a target identical to its input comes out identical to the processed input (spacing resample,
    crop/pad), so a denoising pair stays aligned whatever the options."""
    import shutil

    _nifti_pairs(tmp_path, n=2, shape=(6, 11, 13))
    for f in (tmp_path / "low").iterdir():
        shutil.copy(f, tmp_path / "full" / f.name)
    code = _convert(tmp_path / "low", "--targets", tmp_path / "full", "--spacing", "2.0,1.1,0.9", "--size", "7,8,12",
                    "--resize", "crop_or_pad", "--split", "1,0,0", "-o", tmp_path / "rec")
    assert code == 0
    recs = records_by_source(tmp_path / "rec")
    assert len(recs) == 2
    for e in recs.values():
        assert e["image"].shape == e["target"].shape == (7, 8, 12, 1)
        np.testing.assert_allclose(e["target"], e["image"], atol=1e-3)  # float32 HU, float64 vs float32 paths


def test_super_resolution_target_resampled_like_simpleitk(tmp_path):
    """k = (1, 2, 2) and --spacing: the target is resampled onto the input's new grid refined k times (same
    physical extent), as SimpleITK's linear ResampleImageFilter does on the target image."""
    import SimpleITK as sitk

    spacing, k, new = (2.5, 0.8, 0.7), (1, 2, 2), (2.0, 0.5, 0.5)
    truth = _nifti_pairs(tmp_path, n=1, shape=(5, 12, 14), k=k, spacing=spacing)
    code = _convert(tmp_path / "low", "--targets", tmp_path / "full", "--spacing", ",".join(map(str, new)),
                    "--split", "1,0,0", "-o", tmp_path / "rec")
    assert code == 0
    (e,) = records_by_source(tmp_path / "rec").values()
    low, full = truth["case0.nii.gz"]
    in_out = [max(1, int(round(n * s / t))) for n, s, t in zip(low.shape, spacing, new)]
    assert e["image"].shape[:-1] == tuple(in_out)
    # physical frame: input voxel 0 centred at 0; an input voxel covers [-s/2, s/2) around its centre
    t_sp = [s / kk for s, kk in zip(spacing, k)]
    img = sitk.GetImageFromArray(full.astype(np.float32))
    img.SetSpacing(t_sp[::-1])
    img.SetOrigin([-s / 2 + ts / 2 for s, ts in zip(spacing, t_sp)][::-1])
    out_sp = [t / kk for t, kk in zip(new, k)]
    rs = sitk.ResampleImageFilter()
    rs.SetSize([n * kk for n, kk in zip(in_out, k)][::-1])
    rs.SetOutputSpacing(out_sp[::-1])
    rs.SetOutputOrigin([-t / 2 + o / 2 for t, o in zip(new, out_sp)][::-1])  # new input voxel 0 keeps its centre
    rs.SetInterpolator(sitk.sitkLinear)
    rs.SetDefaultPixelValue(float(full.min()))
    rs.SetOutputPixelType(sitk.sitkFloat32)
    ref = sitk.GetArrayFromImage(rs.Execute(img))
    assert e["target"].shape[:-1] == ref.shape
    np.testing.assert_allclose(e["target"][..., 0], ref, atol=1e-2)  # HU, float32 interpolation


def test_target_scale_options_and_usage_errors(tmp_path, capsys):
    _png_pairs(tmp_path, 2)
    code = _convert(tmp_path / "lr", "--targets", tmp_path / "hr", "--pair", r"(img_\d+)", "--target-scale", "3",
                    "--split", "1,0,0", "-o", tmp_path / "rec")
    assert code == 3  # nothing converted
    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    reasons = {f["reason"] for f in m["files"] if f["outcome"] == "rejected" and not f["path"].startswith("targets/")}
    assert reasons == {"target grid (32, 40) is the input grid (16, 20) x[2, 2], not the --target-scale x[3, 3]"}
    assert m["options"]["targets"] == {"pair": r"(img_\d+)", "scale": [3]}
    capsys.readouterr()
    assert _convert(tmp_path / "lr", "--targets", tmp_path / "hr", "--masks", tmp_path / "hr", "-o", tmp_path / "x") == 2
    assert "--targets and --masks cannot be combined" in capsys.readouterr().err
    assert _convert(tmp_path / "lr", "--targets", tmp_path / "nope", "-o", tmp_path / "y") == 2
    assert f"--targets {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err


def test_resume_refuses_changed_target_options(tmp_path, capsys):
    _png_pairs(tmp_path, 2)
    args = [tmp_path / "lr", "--targets", tmp_path / "hr", "--pair", r"(img_\d+)", "--split", "1,0,0", "-o",
            tmp_path / "rec", "--keep-work"]
    assert _convert(*args) == 0
    capsys.readouterr()
    assert _convert(*args, "--resume", "--target-scale", "2") == 2
    assert "option 'targets' changed" in capsys.readouterr().err
