"""Image + mask pairs through ``tfrecord-convert --masks``: records against Pillow / SimpleITK / tf.image
readings of the source files (images within float32 rounding, masks exactly), the rejections with their
reasons, and a new user's 2D dataset from two folders to a Dice from ``medtf evaluate``."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image as PILImage

from medtf.cli.tfrecord_convert import main as convert_main
from records_reading import records_by_source

pytestmark = pytest.mark.filterwarnings("ignore")


def _squares(folder_img, folder_mask, n, size=32, seed=0, mask_name="{stem}_mask.png", value=255):
    rng = np.random.default_rng(seed)
    folder_img.mkdir(parents=True, exist_ok=True)
    folder_mask.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        img = rng.integers(0, 60, (size, size)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        r, c, s = rng.integers(2, size - 12), rng.integers(2, size - 12), rng.integers(6, 10)
        img[r:r + s, c:c + s] = rng.integers(170, 230)
        mask[r:r + s, c:c + s] = value
        stem = f"img_{i:03d}"
        PILImage.fromarray(img).save(folder_img / f"{stem}.png")
        PILImage.fromarray(mask).save(folder_mask / mask_name.format(stem=stem))
        truth[stem] = (img, mask)
    return truth


def test_png_pairs_with_a_regex_match_pillow_and_reject_with_reasons(tmp_path):
    truth = _squares(tmp_path / "images", tmp_path / "masks", 6)
    (tmp_path / "masks" / "img_001_mask.png").unlink()  # an image without a mask
    PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "img_009_mask.png")  # a mask alone
    PILImage.fromarray(np.zeros((30, 32), np.uint8)).save(tmp_path / "masks" / "img_002_mask.png")  # wrong grid
    code = convert_main([str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--pair", r"(img_\d+)",
                         "--output", str(tmp_path / "rec"), "--no-progress", "--keep-paths", "--split", "1,0,0"])
    assert code == 1
    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    files = {f["path"]: f for f in m["files"]}
    assert files["img_001.png"]["reason"] == "no mask with the same key in --masks"
    assert files["img_009_mask.png"]["reason"] == "mask without an image (no input has its key)"
    assert files["img_002.png"]["reason"].startswith("mask grid (30, 32) differs from the image grid (32, 32)")
    recs = records_by_source(tmp_path / "rec")
    assert set(recs) == {"img_000.png", "img_003.png", "img_004.png", "img_005.png"}
    for key, e in recs.items():
        img, mask = truth[key[:-4]]
        np.testing.assert_array_equal(e["image"][..., 0], img.astype(np.float32))  # Pillow's reading
        np.testing.assert_array_equal(e["mask"].reshape(mask.shape), (mask == 255).astype(np.uint8))  # {0,255}→{0,1}


def test_masks_follow_resize_and_mask_map(tmp_path):
    import tensorflow as tf

    truth = _squares(tmp_path / "images", tmp_path / "masks", 3, size=40, mask_name="{stem}.png", value=128)
    code = convert_main([str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--mask-map", "128=2",
                         "--size", "16,16", "--output", str(tmp_path / "rec"), "--no-progress", "--keep-paths",
                         "--split", "1,0,0"])
    assert code == 0
    for key, e in records_by_source(tmp_path / "rec").items():
        _, mask = truth[key[:-4]]
        ref = tf.image.resize((mask == 128).astype(np.uint8)[..., None] * 2, (16, 16), method="nearest").numpy()
        np.testing.assert_array_equal(e["mask"].reshape(16, 16), ref[..., 0])


def test_nifti_label_maps_follow_resampling_like_simpleitk(tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    rng = np.random.default_rng(3)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    labs = {}
    for i in range(2):
        vol = rng.normal(0, 100, (20, 18, 9)).astype(np.float32)
        lab = np.zeros((20, 18, 9), np.uint8)
        lab[4:12, 5:14, 2:7] = 1
        lab[6:9, 7:10, 3:5] = 2
        nib.save(nib.Nifti1Image(vol, affine), tmp_path / "img" / f"case{i}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), tmp_path / "lab" / f"case{i}.nii.gz")
        labs[f"case{i}_0000.nii.gz"] = tmp_path / "lab" / f"case{i}.nii.gz"
    code = convert_main([str(tmp_path / "img"), "--masks", str(tmp_path / "lab"), "--pair", r"(case\d+)",
                         "--spacing", "2.0", "--output", str(tmp_path / "rec"), "--no-progress", "--keep-paths",
                         "--split", "1,0,0"])
    assert code == 0
    for key, e in records_by_source(tmp_path / "rec").items():
        src = sitk.ReadImage(str(labs[key]))
        rs = sitk.ResampleImageFilter()
        size = [max(1, int(round(n * s / 2.0))) for n, s in zip(src.GetSize(), src.GetSpacing())]
        rs.SetSize(size)
        rs.SetOutputSpacing([2.0] * 3)
        rs.SetOutputOrigin(src.GetOrigin())
        rs.SetOutputDirection(src.GetDirection())
        rs.SetInterpolator(sitk.sitkNearestNeighbor)
        ref = sitk.GetArrayFromImage(rs.Execute(src))
        got = e["mask"].reshape(ref.shape)
        np.testing.assert_array_equal(got, ref)
        assert set(np.unique(got)) == {0, 1, 2}


def test_a_new_users_2d_dataset_from_two_folders_to_a_dice(tmp_path):
    """The README's segmentation commands: convert with --masks, train recipes/unet_2d.yaml, evaluate."""
    import shutil

    from medtf.cli.main import main

    _squares(tmp_path / "images", tmp_path / "masks", 60, size=64)
    assert convert_main([str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--pair", r"(img_\d+)",
                         "--output", str(tmp_path / "records"), "--no-progress"]) == 0
    conf = tmp_path / "unet_2d.yaml"
    shutil.copy(pathlib.Path(__file__).resolve().parents[2] / "recipes" / "unet_2d.yaml", conf)
    assert main(["train", str(conf), "--set", f"records={tmp_path / 'records'}", "--set",
                 f"output_dir={tmp_path / 'runs'}", "--set", "epochs=10", "--set", "verbose=0"]) == 0
    assert main(["evaluate", str(tmp_path / "runs" / "unet_2d"), "--split", "test"]) == 0
    report = json.loads((tmp_path / "runs" / "unet_2d" / "eval-test" / "report.json").read_text())
    assert report["task"] == "segmentation" and report["metrics"]["mean_dice"] > 0.5


def test_nnunet_raw_folder_stacks_channels_and_uses_its_splits(tmp_path):
    import nibabel as nib

    from medtf.records.reader import read_manifest

    root = tmp_path / "Dataset001_Phantom"
    for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / d).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "FLAIR"}, "labels": {"background": 0, "tumour": 1, "edema": 2},
        "numTraining": 8, "file_ending": ".nii.gz"}))
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    truth = {}

    def case(folder, labels, name, shape=(12, 10, 6), broken=None):
        chans = [rng.normal(0, 1, shape).astype(np.float32) for _ in range(2)]
        for k, c in enumerate(chans):
            if broken == "grid" and k == 1:
                c = c[:, :, :4]
            if broken == "missing" and k == 1:
                continue
            nib.save(nib.Nifti1Image(c, affine), root / folder / f"{name}_{k:04d}.nii.gz")
        lab = rng.integers(0, 3, shape).astype(np.uint8)
        if labels:
            nib.save(nib.Nifti1Image(lab, affine), root / labels / f"{name}.nii.gz")
        truth[f"{folder}/{name}"] = (chans, lab)

    for i in range(8):
        case("imagesTr", "labelsTr", f"BRATS_{i:03d}")
    case("imagesTs", "labelsTs", "BRATS_100")
    case("imagesTs", "labelsTs", "BRATS_101")
    case("imagesTr", "labelsTr", "BRATS_900", broken="missing")
    case("imagesTr", "labelsTr", "BRATS_901", broken="grid")
    code = convert_main([str(root), "--output", str(tmp_path / "rec"), "--no-progress", "--keep-paths"])
    assert code == 1  # the two broken cases are rejected, the rest convert
    m = read_manifest(tmp_path / "rec")
    assert m["label_names"] == ["background", "tumour", "edema"] and m["channels"] == 2
    reasons = {f["path"]: f.get("reason") for f in m["files"] if f["outcome"] == "rejected"}
    assert reasons["imagesTr/BRATS_900_0000.nii.gz"] == "case with channels [0]; dataset.json names 2"
    assert "channel 1 lies on another grid" in reasons["imagesTr/BRATS_901_0001.nii.gz"]
    recs = records_by_source(tmp_path / "rec")
    assert len(recs) == 10
    splits = {}
    from medtf.records.reader import load

    for split in ("train", "val", "test"):
        for e in load(tmp_path / "rec", split).as_numpy_iterator():
            splits[e["source"].decode()] = split
    assert {k for k, v in splits.items() if v == "test"} == {"imagesTs/BRATS_100", "imagesTs/BRATS_101"}
    assert {v for k, v in splits.items() if k.startswith("imagesTr")} == {"train", "val"}
    for key, e in recs.items():
        chans, lab = truth[key]
        ref = np.stack([np.asarray(c).transpose(2, 1, 0) for c in chans], axis=-1)  # nibabel (x,y,z) → (z,y,x)
        np.testing.assert_allclose(e["image"], ref, atol=1e-6)
        np.testing.assert_array_equal(e["mask"].reshape(lab.shape[::-1]), lab.transpose(2, 1, 0))


def test_slice_mode_cuts_volumes_keeps_each_slice_mask_and_samples_empty_slices(tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    rng = np.random.default_rng(5)
    affine = np.array([[0.9, 0, 0, -20.0], [0, 0.8, 0, 10.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1.0]])
    vol = rng.normal(0, 10, (16, 14, 10)).astype(np.float32)
    lab = np.zeros((16, 14, 10), np.uint8)
    lab[3:9, 4:10, 2:5] = 1  # foreground on z = 2, 3, 4 only
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "img" / "case1.nii.gz")
    nib.save(nib.Nifti1Image(lab, affine), tmp_path / "lab" / "case1.nii.gz")
    base = [str(tmp_path / "img"), "--masks", str(tmp_path / "lab"), "--mode", "slice", "--no-progress",
            "--keep-paths", "--split", "1,0,0"]
    assert convert_main(base + ["--output", str(tmp_path / "all")]) == 0
    assert convert_main(base + ["--output", str(tmp_path / "fg"), "--empty-slices", "0"]) == 0
    every, fg = records_by_source(tmp_path / "all"), records_by_source(tmp_path / "fg")
    assert len(every) == 10 and sorted(fg) == ["case1.nii.gz#2", "case1.nii.gz#3", "case1.nii.gz#4"]
    ref = sitk.ReadImage(str(tmp_path / "img" / "case1.nii.gz"))
    arr = sitk.GetArrayFromImage(ref)  # (z, y, x)
    labs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "lab" / "case1.nii.gz")))
    for key, e in every.items():
        k = int(key.split("#")[1])
        np.testing.assert_allclose(e["image"][..., 0], arr[k], atol=1e-6)
        np.testing.assert_array_equal(e["mask"].reshape(labs[k].shape), labs[k])
        np.testing.assert_allclose(e["origin"], ref.TransformIndexToPhysicalPoint((0, 0, k)), atol=1e-4)
        np.testing.assert_allclose(e["spacing"], ref.GetSpacing()[1::-1], atol=1e-6)


def test_nnunet_region_labels_and_test_volumes_keep_every_slice(tmp_path):
    """Region-based dataset.json labels reach the manifest (label_regions; one-value regions name their value);
    with --mode slice --empty-slices 0 the training cases keep foreground slices only while the imagesTs case
    keeps every slice; a labels entry that is neither an integer nor a list is a usage error naming the key."""
    import nibabel as nib

    from medtf.records.reader import load, read_manifest

    root = tmp_path / "Dataset002_Regions"
    for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / d).mkdir(parents=True)
    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "FLAIR"}, "labels": labels,
                                                   "regions_class_order": [1, 2, 3], "file_ending": ".nii.gz"}))
    rng = np.random.default_rng(1)
    for folder, name in (("Tr", "c1"), ("Tr", "c2"), ("Ts", "c9")):
        img = rng.normal(0, 1, (8, 8, 6)).astype(np.float32)
        lab = np.zeros((8, 8, 6), np.uint8)
        lab[2:6, 2:6, 1:3] = rng.integers(1, 4, (4, 4, 2))  # foreground on z = 1, 2
        nib.save(nib.Nifti1Image(img, np.eye(4)), root / f"images{folder}" / f"{name}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), root / f"labels{folder}" / f"{name}.nii.gz")
    out = tmp_path / "rec"
    assert convert_main([str(root), "-o", str(out), "--mode", "slice", "--empty-slices", "0", "--split", "train=1.0",
                         "--no-progress", "--keep-paths"]) == 0
    m = read_manifest(out)
    assert m["label_regions"] == {k: v for k, v in labels.items() if isinstance(v, list)}
    assert m["label_names"] == ["background", "label 1", "label 2", "enhancing tumor"]
    train = sorted(e["source"].decode() for e in load(out, "train").as_numpy_iterator())
    test = sorted(e["source"].decode() for e in load(out, "test").as_numpy_iterator())
    assert train == ["imagesTr/c1#1", "imagesTr/c1#2", "imagesTr/c2#1", "imagesTr/c2#2"]
    assert test == [f"imagesTs/c9#{k}" for k in range(6)]
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "FLAIR"}, "labels": {"tumour": "one"}}))
    assert convert_main([str(root), "-o", str(tmp_path / "bad"), "--no-progress"]) == 2


def test_tiles_cut_training_images_and_masks_and_keep_val_test_whole(tmp_path):
    """--tile 16: training images become non-overlapping 16x16 tiles (KEY@row,col; the remainder left out),
    each tile equal to Pillow's reading of the source crop and its mask crop; sources the CSV puts in val/test stay whole. Bad sizes and --tile with --targets are usage errors."""
    from PIL import Image as PILImage

    from medtf.records.reader import load

    rng = np.random.default_rng(4)
    for d in ("img", "lab"):
        (tmp_path / d).mkdir()
    rows = ["path,split"]
    for i, split in enumerate(("train", "train", "val", "test")):
        PILImage.fromarray(rng.integers(0, 255, (40, 36), dtype=np.uint8)).save(tmp_path / "img" / f"c{i}.png")
        PILImage.fromarray((rng.random((40, 36)) < 0.3).astype(np.uint8) * 255).save(tmp_path / "lab" / f"c{i}.png")
        rows.append(f"c{i}.png,{split}")
    (tmp_path / "splits.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "rec"
    assert convert_main([str(tmp_path / "img"), "--masks", str(tmp_path / "lab"), "--labels", str(tmp_path / "splits.csv"),
                         "--split", "input", "--tile", "16", "--keep-paths", "-o", str(out), "--no-progress"]) == 0
    train = {e["source"].decode(): e for e in load(out, "train").as_numpy_iterator()}
    assert sorted(train) == sorted(f"c{i}.png@{r},{c}" for i in (0, 1) for r in (0, 16) for c in (0, 16))
    for key, e in train.items():
        name, rc = key.split("@")
        r, c = (int(v) for v in rc.split(","))
        img = np.asarray(PILImage.open(tmp_path / "img" / name))
        lab = np.asarray(PILImage.open(tmp_path / "lab" / name))
        np.testing.assert_array_equal(e["image"][..., 0], img[r:r + 16, c:c + 16])
        np.testing.assert_array_equal(e["mask"].reshape(16, 16), (lab[r:r + 16, c:c + 16] > 0).astype(np.uint8))
        assert e["origin"].size == 0  # PNG has no geometry to shift (NIfTI/DICOM tiles: shift_origin, as slices)
    for split in ("val", "test"):
        (e,) = list(load(out, split).as_numpy_iterator())
        assert e["image"].shape == (40, 36, 1) and "@" not in e["source"].decode()
    assert convert_main([str(tmp_path / "img"), "--tile", "0", "-o", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert convert_main([str(tmp_path / "img"), "--tile", "a", "-o", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert convert_main([str(tmp_path / "img"), "--tile", "16", "--targets", str(tmp_path / "lab"),
                         "-o", str(tmp_path / "bad"), "--no-progress"]) == 2
