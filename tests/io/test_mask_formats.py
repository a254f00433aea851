"""Input formats beyond DICOM/NIfTI/PNG: NRRD (.nrrd, detached .nhdr), MetaImage (.mha, .mhd + raw), GIF and
LZW/deflate TIFF — as images and as masks, read by medtf.io and through ``tfrecord-convert`` (``--masks``,
nnU-Net folders), compared with SimpleITK / Pillow / tifffile readings of the same files.

Tolerances: images exactly (the stored dtype, or float32 where the file is float32: "within float32
rounding" is exact here), masks exactly, geometry within 1e-6 mm (float64 header values)."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image as PILImage

from medtf.cli.tfrecord_convert import main as convert_main
from medtf.io import Pseudonymizer, classify, discover, read_unit

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "records"))
from records_reading import records_by_source  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")

PZ = Pseudonymizer(b"k" * 32)
DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # a 90° in-plane rotation (not the identity)


def _sitk_image(arr, spacing, origin, direction=None):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def _read_all(folder, **kw):
    units, rejected = discover([str(folder)], pseudonymizer=PZ, **kw)
    return {pathlib.Path(u.paths[0]).name: (u, read_unit(u, pseudonymizer=PZ)) for u in units}, rejected


# ------------------------------------------------------------------------------------------------ NRRD / MHA
@pytest.mark.parametrize("ext", [".nrrd", ".nhdr", ".mha", ".mhd"])
def test_nrrd_and_metaimage_volumes_and_2d_images_match_simpleitk(tmp_path, ext):
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    vol = rng.normal(0, 100, (5, 7, 9)).astype(np.float32)  # (k, j, i)
    lab = rng.integers(0, 4, (5, 7, 9)).astype(np.uint8)
    img2d = rng.integers(0, 4000, (6, 11)).astype(np.uint16)
    rgb = rng.integers(0, 255, (6, 11, 3)).astype(np.uint8)
    sitk.WriteImage(_sitk_image(vol, (0.7, 0.8, 2.5), (-10.5, 20.25, 33.0), DIRECTION), str(tmp_path / f"vol{ext}"))
    sitk.WriteImage(_sitk_image(lab, (0.7, 0.8, 2.5), (-10.5, 20.25, 33.0), DIRECTION), str(tmp_path / f"lab{ext}"))
    sitk.WriteImage(_sitk_image(img2d, (0.3, 0.4), (5.0, -6.0)), str(tmp_path / f"flat{ext}"))
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / f"rgb{ext}"))
    detached = ext in (".nhdr", ".mhd")
    assert (len(list(tmp_path.iterdir())) > 4) == detached  # data files beside the headers
    for p in tmp_path.iterdir():
        kind, _ = classify(p)
        assert kind == ("itk" if p.suffix == ext else None), p.name
    got, rejected = _read_all(tmp_path)
    assert rejected == []  # a detached header's data file belongs to its header's unit
    assert set(got) == {f"vol{ext}", f"lab{ext}", f"flat{ext}", f"rgb{ext}"}
    for name, (unit, (image,)) in got.items():
        assert unit.kind == "itk" and len(unit.paths) == (2 if detached else 1)
        ref = sitk.ReadImage(str(tmp_path / name))
        arr = sitk.GetArrayFromImage(ref)
        np.testing.assert_array_equal(image.array, arr if arr.ndim == 4 or name.startswith("rgb") else arr[..., None])
        assert image.array.dtype == arr.dtype
        dims = ref.GetDimension()
        np.testing.assert_allclose(image.spacing, ref.GetSpacing()[::-1], atol=1e-6)
        np.testing.assert_allclose(image.origin[:dims], ref.GetOrigin(), atol=1e-6)
        d = np.asarray(image.direction).reshape(3, 3)
        np.testing.assert_allclose(d[:dims, :dims].reshape(-1), ref.GetDirection(), atol=1e-6)
    # the values written, independently of SimpleITK's reading
    vol_img = got[f"vol{ext}"][1][0]
    np.testing.assert_array_equal(vol_img.array[..., 0], vol)
    np.testing.assert_allclose(vol_img.spacing, (2.5, 0.8, 0.7), atol=1e-6)
    np.testing.assert_allclose(vol_img.origin, (-10.5, 20.25, 33.0), atol=1e-6)
    np.testing.assert_allclose(vol_img.direction, DIRECTION, atol=1e-6)
    flat = got[f"flat{ext}"][1][0]
    assert flat.array.shape == (6, 11, 1) and flat.spacing == pytest.approx((0.4, 0.3))
    assert flat.origin == pytest.approx((5.0, -6.0, 0.0))
    assert got[f"rgb{ext}"][1][0].array.shape == (6, 11, 3)


def test_handwritten_detached_headers_give_the_geometry_they_state(tmp_path):
    """A .nhdr and a .mhd written by hand (not by SimpleITK): geometry as the header states it (NRRD in LPS)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(1)
    data = rng.integers(-1000, 1000, (4, 5, 6)).astype("<i2")  # (k, j, i)
    data.tofile(tmp_path / "ct.raw")
    (tmp_path / "ct.nhdr").write_text(
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 6 5 4\n"
        "space directions: (0,0.9,0) (-0.8,0,0) (0,0,3.0)\nkinds: domain domain domain\nendian: little\n"
        "encoding: raw\nspace origin: (1.5,-2.5,40)\ndata file: ct.raw\n\n")
    data.tofile(tmp_path / "mr.img")
    (tmp_path / "mr.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = -3 4 5.5\nElementSpacing = 0.5 0.6 1.25\n"
        "DimSize = 6 5 4\nElementType = MET_SHORT\nElementDataFile = mr.img\n")
    got, rejected = _read_all(tmp_path)
    assert rejected == [] and set(got) == {"ct.nhdr", "mr.mhd"}
    ct = got["ct.nhdr"][1][0]
    np.testing.assert_array_equal(ct.array[..., 0], data)
    np.testing.assert_allclose(ct.spacing, (3.0, 0.8, 0.9), atol=1e-6)
    np.testing.assert_allclose(ct.origin, (1.5, -2.5, 40.0), atol=1e-6)
    np.testing.assert_allclose(np.asarray(ct.direction).reshape(3, 3), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)
    mr = got["mr.mhd"][1][0]
    np.testing.assert_array_equal(mr.array[..., 0], data)
    np.testing.assert_allclose(mr.spacing, (1.25, 0.6, 0.5), atol=1e-6)
    np.testing.assert_allclose(mr.origin, (-3.0, 4.0, 5.5), atol=1e-6)
    for name, (_, (image,)) in got.items():  # and SimpleITK agrees
        ref = sitk.ReadImage(str(tmp_path / name))
        np.testing.assert_allclose(image.origin, ref.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(image.direction, ref.GetDirection(), atol=1e-6)
    # a header whose data file is missing is rejected with the reason (no file name in it)
    (tmp_path / "mr.img").unlink()
    code = convert_main([str(tmp_path), "--output", str(tmp_path / "rec"), "--no-progress", "--keep-paths"])
    assert code == 1
    files = {f["path"]: f for f in json.loads((tmp_path / "rec" / "manifest.json").read_text())["files"]}
    assert files["mr.mhd"]["reason"] == "1 data file(s) named in the metaimage header do not exist next to it"
    assert files["ct.nhdr"]["outcome"] == files["ct.raw"]["outcome"] == "converted"
    assert files["ct.raw"]["unit"] == files["ct.nhdr"]["unit"]


def test_metaio_objects_that_are_not_images_and_plain_text_are_rejected_with_the_reason(tmp_path):
    (tmp_path / "t.mha").write_text("ObjectType = Transform\nNDims = 3\nTransformType = Rigid\n")
    (tmp_path / "notes.txt").write_text("Width = 3\nNDims = 3\n")  # key = value text, but no MetaIO first key
    assert classify(tmp_path / "t.mha") == (None, "MetaIO object of type 'Transform', not an image")
    assert classify(tmp_path / "notes.txt")[0] is None
    assert "unknown file type" in classify(tmp_path / "notes.txt")[1]


# ---------------------------------------------------------------------------------------------------- GIF
def _gif_cases(folder):
    b = np.zeros((9, 12), np.uint8)
    b[2:6, 3:9] = 1
    b[0, 0] = 2
    folder.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray((b * 127).astype(np.uint8)).save(folder / "mode_l.gif")  # Pillow renumbers the palette
    p = PILImage.frombytes("P", (12, 9), b.tobytes())
    p.putpalette([0, 0, 0, 255, 255, 255, 128, 128, 128])
    p.save(folder / "gray_palette.gif")
    c = PILImage.frombytes("P", (12, 9), b.tobytes())
    c.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    c.save(folder / "colour_palette.gif")
    rgb = np.random.default_rng(2).integers(0, 255, (9, 12, 3)).astype(np.uint8)
    PILImage.fromarray(rgb).save(folder / "rgb.gif")
    return b


def test_gif_gives_gray_values_for_gray_palettes_and_rgb_otherwise(tmp_path):
    b = _gif_cases(tmp_path)
    got, rejected = _read_all(tmp_path)
    assert rejected == []
    for name, (_, (image,)) in got.items():
        with PILImage.open(tmp_path / name) as im:
            gray = all(r == g == bb for r, g, bb in np.asarray(im.convert("RGB")).reshape(-1, 3))
            ref = np.asarray(im.convert("L"))[..., None] if gray else np.asarray(im.convert("RGB"))
        np.testing.assert_array_equal(image.array, ref)
        assert image.array.dtype == np.uint8 and image.modality == "GIF"
    np.testing.assert_array_equal(got["mode_l.gif"][1][0].array[..., 0], b * 127)  # its pixel values
    np.testing.assert_array_equal(got["gray_palette.gif"][1][0].array[..., 0], np.array([0, 255, 128])[b])
    assert got["colour_palette.gif"][1][0].array.shape == (9, 12, 3)
    frames = [PILImage.fromarray(np.full((4, 4), v, np.uint8)) for v in (0, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    u, _ = discover([str(tmp_path / "anim.gif")], pseudonymizer=PZ)
    with pytest.raises(Exception, match="animated GIF with 2 frames"):
        read_unit(u[0], pseudonymizer=PZ)


# --------------------------------------------------------------------------------------- compressed TIFF
@pytest.mark.parametrize("writer,compression", [("tifffile", "lzw"), ("tifffile", "zlib"), ("pillow", "tiff_lzw"),
                                                ("pillow", "tiff_adobe_deflate")])
def test_lzw_and_deflate_tiff_decode_like_tifffile_and_pillow(tmp_path, writer, compression):
    import tifffile

    rng = np.random.default_rng(3)
    gray = rng.integers(0, 60000, (20, 17)).astype(np.uint16) if writer == "tifffile" else \
        rng.integers(0, 255, (20, 17)).astype(np.uint8)
    rgb = rng.integers(0, 255, (20, 17, 3)).astype(np.uint8)
    for name, arr in (("gray.tif", gray), ("rgb.tif", rgb)):
        if writer == "tifffile":
            tifffile.imwrite(tmp_path / name, arr, compression=compression,
                             photometric="rgb" if arr.ndim == 3 else "minisblack")
        else:
            PILImage.fromarray(arr).save(tmp_path / name, compression=compression)
        with tifffile.TiffFile(tmp_path / name) as tf:
            assert tf.pages[0].compression.name in ("LZW", "ADOBE_DEFLATE", "DEFLATE")
    got, rejected = _read_all(tmp_path)
    assert rejected == []
    for name, truth in (("gray.tif", gray), ("rgb.tif", rgb)):
        image = got[name][1][0]
        ref = tifffile.imread(tmp_path / name)
        np.testing.assert_array_equal(image.array, ref if ref.ndim == 3 else ref[..., None])
        np.testing.assert_array_equal(image.array.reshape(truth.shape), truth)
        np.testing.assert_array_equal(image.array.reshape(truth.shape), np.asarray(PILImage.open(tmp_path / name)))
    assert got["rgb.tif"][1][0].array.shape == (20, 17, 3)  # RGB inputs keep three channels


# ------------------------------------------------------------------------------ through tfrecord-convert
def test_masks_folder_with_gif_lzw_tiff_and_metaimage_masks(tmp_path):
    """2D PNG images; masks as GIF (mode 'L', {0,255}), LZW TIFF (labels 0..2) and a detached .mhd + .raw (whose
    data file must not count as a second mask with the same key)."""
    import SimpleITK as sitk
    import tifffile

    rng = np.random.default_rng(4)
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    truth = {}
    for i, fmt in enumerate(("gif", "tif", "mhd", "gif_p")):
        img = rng.integers(0, 255, (24, 20)).astype(np.uint8)
        PILImage.fromarray(img).save(tmp_path / "img" / f"case{i}.png")
        lab = np.zeros((24, 20), np.uint8)
        lab[3 + i:12 + i, 4:15] = 1
        lab[14:20, 2:6] = 2
        if fmt == "gif":
            stored = (lab > 0).astype(np.uint8) * 255
            PILImage.fromarray(stored).save(tmp_path / "msk" / f"case{i}.gif")
            expect = (lab > 0).astype(np.uint8)  # {0, 255} → {0, 1}
        elif fmt == "gif_p":
            p = PILImage.frombytes("P", (20, 24), lab.tobytes())
            p.putpalette([0, 0, 0, 1, 1, 1, 2, 2, 2])  # gray palette whose gray levels are the labels
            p.save(tmp_path / "msk" / f"case{i}.gif")
            expect = lab
        elif fmt == "tif":
            tifffile.imwrite(tmp_path / "msk" / f"case{i}.tif", lab, compression="lzw")
            expect = lab
        else:
            sitk.WriteImage(sitk.GetImageFromArray(lab), str(tmp_path / "msk" / f"case{i}.mhd"))
            expect = lab
        truth[f"case{i}.png"] = (img, expect, tmp_path / "msk" / f"case{i}.{fmt.split('_')[0]}")
    assert any(p.suffix in (".raw", ".zraw") for p in (tmp_path / "msk").iterdir())
    code = convert_main([str(tmp_path / "img"), "--masks", str(tmp_path / "msk"), "--output", str(tmp_path / "rec"),
                         "--no-progress", "--keep-paths", "--split", "1,0,0"])
    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert code == 0, [f for f in m["files"] if f["outcome"] == "rejected"]
    recs = records_by_source(tmp_path / "rec")
    assert set(recs) == set(truth)
    for key, e in recs.items():
        img, expect, mpath = truth[key]
        np.testing.assert_array_equal(e["image"][..., 0], img.astype(np.float32))
        np.testing.assert_array_equal(e["mask"].reshape(expect.shape), expect)
        if mpath.suffix == ".gif":  # and against Pillow's own reading of the mask file
            ref = np.asarray(PILImage.open(mpath).convert("L"))
            np.testing.assert_array_equal(e["mask"].reshape(expect.shape), (ref > 0) if ref.max() == 255 else ref)


def _nnunet(root, ending, shape, rng):
    import SimpleITK as sitk
    import tifffile

    for d in ("imagesTr", "labelsTr", "imagesTs"):
        (root / d).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "A", "1": "B"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": 3, "file_ending": ending}))
    spacing, origin = ((1.5, 0.75, 0.75)[: len(shape)], (-20.0, 11.0, 7.5)[: len(shape)])
    truth = {}

    def write(path, arr):
        if ending in (".nrrd", ".mha"):
            sitk.WriteImage(_sitk_image(arr, spacing[::-1], origin), str(path))
        elif ending == ".png":
            PILImage.fromarray(arr).save(path)
        else:
            tifffile.imwrite(path, arr, compression="lzw")

    for folder, name in (("imagesTr", "c0"), ("imagesTr", "c1"), ("imagesTr", "c2"), ("imagesTs", "t0")):
        dtype = np.uint8 if ending == ".png" else np.int16
        chans = [rng.integers(0, 200, shape).astype(dtype) for _ in range(2)]
        for k, c in enumerate(chans):
            write(root / folder / f"{name}_{k:04d}{ending}", c)
        lab = rng.integers(0, 3, shape).astype(np.uint8)
        if folder == "imagesTr":
            write(root / "labelsTr" / f"{name}{ending}", lab)
        truth[f"{folder}/{name}"] = (chans, lab, root / folder / f"{name}_0000{ending}")
    return truth


@pytest.mark.parametrize("ending,shape", [(".nrrd", (4, 6, 5)), (".mha", (4, 6, 5)), (".png", (10, 12)),
                                          (".tif", (10, 12))])
def test_nnunet_folders_with_nrrd_mha_png_tif_endings_convert(tmp_path, ending, shape):
    import SimpleITK as sitk

    truth = _nnunet(tmp_path / "Dataset002_X", ending, shape, np.random.default_rng(5))
    code = convert_main([str(tmp_path / "Dataset002_X"), "--output", str(tmp_path / "rec"), "--no-progress",
                         "--keep-paths"])
    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert code == 0, [f for f in m["files"] if f["outcome"] == "rejected"]
    assert m["channels"] == 2 and m["spatial_dims"] == len(shape)
    assert m["label_names"] == ["background", "organ", "lesion"]
    recs = records_by_source(tmp_path / "rec")
    assert set(recs) == set(truth)
    for key, e in recs.items():
        chans, lab, first = truth[key]
        np.testing.assert_array_equal(e["image"], np.stack(chans, axis=-1).astype(np.float32))
        if key.startswith("imagesTr"):
            np.testing.assert_array_equal(e["mask"].reshape(lab.shape), lab)
        if ending in (".nrrd", ".mha"):  # geometry as SimpleITK reads it
            ref = sitk.ReadImage(str(first))
            np.testing.assert_allclose(e["spacing"], ref.GetSpacing()[::-1], atol=1e-6)
            np.testing.assert_allclose(e["origin"], ref.GetOrigin(), atol=1e-6)
