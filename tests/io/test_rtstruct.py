"""RT Structure Sets: the rasteriser against independent rasterisations (Pillow polygons, exact rectangles, the
analytic disc), contours placed on the series grid through its geometry, discovery by series / SOP instance /
frame of reference, and ``tfrecord-convert`` (volume and slice mode, ``--roi``) with no patient identifier in
records or manifest."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageDraw

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from rtstruct_factory import PATIENT_ID, PATIENT_NAME, circle, rect, write_ct, write_rtstruct  # noqa: E402

from medtf.cli.tfrecord_convert import main as convert_main  # noqa: E402
from medtf.io import Pseudonymizer, ReadOptions, discover, read_unit  # noqa: E402
from medtf.io.rtstruct import rasterize_contours, rasterize_polygon  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
PZ = Pseudonymizer(b"r" * 32)
SUPERSAMPLE = 8  # Pillow rounds vertices to whole pixels: draw at 8x (vertices to 1/8 px), sample pixel centres


def _distance_to_outline(shape, polys) -> np.ndarray:
    """Distance (px) from every pixel centre to the nearest contour edge."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    pts = np.stack([xx.ravel(), yy.ravel()], 1).astype(float)
    d = np.full(len(pts), np.inf)
    for poly in polys:
        for a, b in zip(poly, np.roll(poly, -1, 0)):
            ab = b - a
            t = np.clip(((pts - a) @ ab) / max(float(ab @ ab), 1e-12), 0, 1)
            d = np.minimum(d, np.linalg.norm(pts - (a + t[:, None] * ab), axis=1))
    return d.reshape(h, w)


def _pillow(shape, polys) -> np.ndarray:
    """Independent even-odd rasterisation: each polygon drawn with Pillow (XOR), at SUPERSAMPLE x."""
    h, w = shape
    s = SUPERSAMPLE
    out = np.zeros(shape, bool)
    for poly in polys:
        im = PILImage.new("1", (w * s, h * s), 0)
        ImageDraw.Draw(im).polygon([tuple(p * s) for p in poly], fill=1, outline=1)
        out ^= np.asarray(im)[::s, ::s].astype(bool)
    return out


def _random_polygon(rng, centre, rmin, rmax):
    n = int(rng.integers(3, 16))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(rmin, rmax, n)
    return np.stack([centre[0] + r * np.cos(ang), centre[1] + r * np.sin(ang)], 1)


# ------------------------------------------------------------------------------------------- rasteriser
def test_rasterizer_matches_pillow_except_within_half_a_pixel_of_the_contour():
    """Equality with Pillow on every pixel whose centre is more than 0.5 px from a contour line; random
    star-shaped polygons, some with a hole (even-odd) and some reaching outside the slice."""
    rng = np.random.default_rng(0)
    shape = (48, 56)
    compared = 0
    for trial in range(120):
        c = (rng.uniform(5, 50), rng.uniform(5, 42))
        polys = [_random_polygon(rng, c, 6, 22)]
        if trial % 3 == 0:  # a hole well inside the outer contour
            polys.append(_random_polygon(rng, c, 1.5, 4.5))
        ours = rasterize_contours(polys, shape)
        far = _distance_to_outline(shape, polys) > 0.5
        np.testing.assert_array_equal(ours[far], _pillow(shape, polys)[far], err_msg=f"trial {trial}")
        compared += int(far.sum())
    assert compared > 0.8 * 120 * shape[0] * shape[1]  # the band excludes few pixels


@pytest.mark.parametrize("corners", [(3.5, 4.5, 20.5, 9.5), (3, 4, 20, 9), (-5.5, 30.5, 8.5, 60)])
def test_axis_aligned_rectangles_are_exact(corners):
    """Pixel centres inside or on the rectangle: rows/cols ceil(lo)..floor(hi), clipped to the slice."""
    x0, y0, x1, y1 = corners
    shape = (40, 30)
    ours = rasterize_polygon(rect(*corners), shape)
    expect = np.zeros(shape, bool)
    expect[max(0, int(np.ceil(y0))):int(np.floor(y1)) + 1, max(0, int(np.ceil(x0))):int(np.floor(x1)) + 1] = True
    np.testing.assert_array_equal(ours, expect)
    if float(x0).is_integer():  # Pillow (1x) fills a rectangle with whole-pixel corners exactly, outline included
        im = PILImage.new("1", shape[::-1], 0)
        ImageDraw.Draw(im).polygon([tuple(p) for p in rect(*corners)], fill=1, outline=1)
        np.testing.assert_array_equal(ours, np.asarray(im).astype(bool))


def test_circle_with_many_vertices_matches_the_analytic_disc():
    shape = (40, 44)
    cx, cy, r = 20.4, 17.7, 9.3
    ours = rasterize_polygon(circle(cx, cy, r, n=720), shape)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    dist = np.hypot(xx - cx, yy - cy)
    assert ours[dist < r - 0.5].all() and not ours[dist > r + 0.5].any()
    assert abs(int(ours.sum()) - np.pi * r * r) < 2 * np.pi * r * 0.5  # area within the band


def test_a_hole_is_the_even_odd_rule_and_vertex_order_does_not_matter():
    shape = (20, 20)
    outer, hole = rect(2, 2, 15, 15), rect(6, 6, 10, 10)[::-1]  # the hole runs the other way
    got = rasterize_contours([outer, hole], shape)
    expect = np.zeros(shape, bool)
    expect[2:16, 2:16] = True
    expect[6:11, 6:11] = False
    np.testing.assert_array_equal(got, expect)
    np.testing.assert_array_equal(rasterize_contours([outer[::-1], hole[::-1]], shape), expect)


# --------------------------------------------------------------------------------- on the series grid
BODY_RECT, HOLE_RECT = (3.5, 4.5, 26.5, 24.5), (10.5, 9.5, 15.5, 14.5)
TUMOUR_RECT, TUMOUR_CIRCLE = (20.5, 2.5, 29.5, 8.5), (16.2, 15.7, 6.3)


def _rois():
    """Sequence order ≠ ROI Number order on purpose: Body (ROI 2) gets label 1, Tumour (ROI 5) label 2."""
    tumour = (5, "Tumour", [(3, rect(*TUMOUR_RECT), -0.9, "CLOSED_PLANAR"),
                            (4, circle(*TUMOUR_CIRCLE), 0.0, "CLOSED_PLANAR")])
    body = (2, "Body", [(k, rect(*BODY_RECT), 0.4 if k == 1 else 0.0, "CLOSED_PLANAR") for k in (1, 2, 3, 4)]
            + [(2, rect(*HOLE_RECT), 0.0, "CLOSED_PLANAR"), (0, np.array([[5.0, 5.0]]), 0.0, "POINT")])
    return [tumour, body]


def _expected(order=("Body", "Tumour")):
    """(label map, pixels to ignore: the circle's 0.5 px band) for labels numbered in ``order``."""
    lab = {name: i + 1 for i, name in enumerate(order)}
    shape = (6, 32, 32)
    vol = np.zeros(shape, np.uint8)
    masks = {"Body": np.zeros(shape, bool), "Tumour": np.zeros(shape, bool)}
    masks["Body"][1:5, 5:25, 4:27] = True
    masks["Body"][2, 10:15, 11:16] = False
    masks["Tumour"][3, 3:9, 21:30] = True
    cx, cy, r = TUMOUR_CIRCLE
    yy, xx = np.mgrid[0:32, 0:32]
    dist = np.hypot(xx - cx, yy - cy)
    masks["Tumour"][4] = dist < r
    band = np.zeros(shape, bool)
    band[4] = np.abs(dist - r) <= 0.5
    for name in order:  # a later ROI wins
        vol[masks[name]] = lab[name]
    return vol, band


@pytest.mark.parametrize("iop", [(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), (0.0, 1.0, 0.0, -1.0, 0.0, 0.0)])
@pytest.mark.parametrize("reference", ["series", "sops", "for"])
def test_structure_set_becomes_the_series_label_map(tmp_path, iop, reference):
    ct = write_ct(tmp_path / "ct", iop=iop)
    write_rtstruct(tmp_path / "rs.dcm", ct, _rois(), reference=reference)
    units, rejected = discover([str(tmp_path)], pseudonymizer=PZ)
    assert rejected == [] and len(units) == 1 and str(tmp_path / "rs.dcm") in units[0].paths
    (image,) = read_unit(units[0], pseudonymizer=PZ)
    vol, band = _expected()
    assert image.mask.shape == vol.shape and image.mask.dtype == np.uint8
    np.testing.assert_array_equal(image.mask[~band], vol[~band])
    assert image.meta["segment_labels"] == ["Body", "Tumour"] and image.meta["segment_numbers"] == [2, 5]
    assert image.meta["seg_type"] == "RTSTRUCT"
    # --roi: chosen and ordered by name (case-insensitive); unknown names list the available ones
    (image,) = read_unit(units[0], pseudonymizer=PZ, options=ReadOptions(rois=("tumour", "BODY")))
    vol2, _ = _expected(("Tumour", "Body"))
    np.testing.assert_array_equal(image.mask[~band], vol2[~band])
    with pytest.raises(Exception, match=r"no ROI named 'Liver'; available: 'Body', 'Tumour'"):
        read_unit(units[0], pseudonymizer=PZ, options=ReadOptions(rois=("Liver",)))


def test_structure_sets_without_their_series_or_off_its_slices_are_rejected(tmp_path):
    ct = write_ct(tmp_path / "ct")
    write_rtstruct(tmp_path / "lost.dcm", ct, _rois(), reference="none")
    units, rejected = discover([str(tmp_path)], pseudonymizer=PZ)
    assert rejected == [(str(tmp_path / "lost.dcm"), "RT Structure Set whose referenced series is not among the "
                                                     "inputs (include the images it was drawn on)")]
    (tmp_path / "lost.dcm").unlink()
    off = [(2, "Body", [(0, rect(*BODY_RECT), -1.3, "CLOSED_PLANAR")])]  # 1.3 mm below the first slice (> 2.5 / 2)
    write_rtstruct(tmp_path / "off.dcm", ct, off)
    units, _ = discover([str(tmp_path)], pseudonymizer=PZ)
    with pytest.raises(Exception, match=r"ROI 2 \('Body'\): contour 0 lies 1.3 mm from the nearest slice of the "
                                        r"series, more than half the slice spacing \(1.25 mm\)"):
        read_unit(units[0], pseudonymizer=PZ)


# ---------------------------------------------------------------------------------- tfrecord-convert
def _records(rec):
    from medtf.records.reader import load

    return {e["source"].decode(): e for split in ("train", "val", "test") for e in load(rec, split).as_numpy_iterator()}


def _no_identifier(folder: pathlib.Path) -> None:
    needles = [PATIENT_ID, *PATIENT_NAME.split("^")]
    leaks = [(n, str(p)) for p in folder.rglob("*") if p.is_file() for n in needles
             if n.encode() in p.read_bytes() or n.lower().encode() in p.read_bytes().lower()]
    assert not leaks, leaks


def test_tfrecord_convert_volume_and_slice_mode_roi_choice_and_no_patient_identifier(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTF_PSEUDONYM_KEY", "00112233445566778899aabbccddeeff")
    ct = write_ct(tmp_path / "in" / "ct")
    write_rtstruct(tmp_path / "in" / "rs.dcm", ct, _rois())
    vol, band = _expected()
    base = [str(tmp_path / "in"), "--no-progress", "--split", "1,0,0"]

    assert convert_main(base + ["--output", str(tmp_path / "vol")]) == 0
    m = json.loads((tmp_path / "vol" / "manifest.json").read_text())
    assert m["label_names"] == ["background", "Body", "Tumour"] and m["options"].get("roi") is None
    assert all(f["outcome"] == "converted" for f in m["files"]) and m["counts"]["files"] == 7
    (e,) = _records(tmp_path / "vol").values()
    np.testing.assert_array_equal(e["mask"].reshape(vol.shape)[~band], vol[~band])
    _no_identifier(tmp_path / "vol")

    assert convert_main(base + ["--output", str(tmp_path / "sl"), "--mode", "slice"]) == 0
    recs = _records(tmp_path / "sl")
    assert len(recs) == 6
    for key, e in recs.items():
        k = int(key.rsplit("#", 1)[1])
        np.testing.assert_array_equal(e["mask"].reshape(32, 32)[~band[k]], vol[k][~band[k]])
    _no_identifier(tmp_path / "sl")

    assert convert_main(base + ["--output", str(tmp_path / "roi"), "--roi", "tumour", "--roi", "BODY"]) == 0
    m = json.loads((tmp_path / "roi" / "manifest.json").read_text())
    assert m["label_names"] == ["background", "tumour", "BODY"] and m["options"]["roi"] == ["tumour", "BODY"]
    vol2, _ = _expected(("Tumour", "Body"))
    (e,) = _records(tmp_path / "roi").values()
    np.testing.assert_array_equal(e["mask"].reshape(vol.shape)[~band], vol2[~band])

    assert convert_main(base + ["--output", str(tmp_path / "bad"), "--roi", "Liver"]) == 3
    m = json.loads((tmp_path / "bad" / "manifest.json").read_text())
    reasons = {f["reason"] for f in m["files"]}
    assert reasons == {"RT Structure Set has no ROI named 'Liver'; available: 'Body', 'Tumour'"}
    _no_identifier(tmp_path / "bad")


def test_structure_sets_with_other_roi_lists_are_rejected_without_roi(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTF_PSEUDONYM_KEY", "00112233445566778899aabbccddeeff")
    for i, rois in enumerate((_rois(), _rois(), [(1, "Liver", [(2, rect(*BODY_RECT), 0.0, "CLOSED_PLANAR")])])):
        ct = write_ct(tmp_path / "in" / f"ct{i}", series_uid=f"1.2.826.0.1.3680043.10.1234.6{i}",
                      for_uid=f"1.2.826.0.1.3680043.10.1234.8{i}")
        write_rtstruct(tmp_path / "in" / f"rs{i}.dcm", ct, rois, for_uid=f"1.2.826.0.1.3680043.10.1234.8{i}")
    assert convert_main([str(tmp_path / "in"), "--no-progress", "--output", str(tmp_path / "rec"), "--keep-paths",
                         "--split", "1,0,0"]) == 1
    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert m["label_names"] == ["background", "Body", "Tumour"] and m["counts"]["examples"] == 2
    rejected = {f["path"]: f["reason"] for f in m["files"] if f["outcome"] == "rejected"}
    assert rejected["rs2.dcm"] == ("its RT Structure Set's ROIs ['Liver'] differ from the other structure sets' "
                                   "['Body', 'Tumour'] (label ids would disagree); choose and order the ROIs with --roi")
