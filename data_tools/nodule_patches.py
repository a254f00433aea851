#!/usr/bin/env python
"""3D CT patches around lung nodules (positives) and nodule-free lung (negatives) → medtf records.

Two sources:

* **LIDC-IDRI** (``--lidc DIR``): a CT series folder plus its LIDC reader XML. Reader marks are
  clustered across readers (centroids within 10 mm) into consensus nodules; only nodules ≥ 3 mm
  (outlined with a contour, not a single point) marked by at least ``--min-readers`` readers are
  positives.
* **CT phantoms** (``--phantoms DIR``, from ``medtf data phantoms ct``): ``nodules.csv`` centres.

Volumes are read with ``medtf.io`` (DICOM series → HU, geometry), resampled to ``--spacing`` mm
(isotropic, linear), and cropped to ``--size`` voxels around each centre (negatives: random lung
points, HU < −500 after smoothing, ≥ 20 mm from every nodule). Records store HU as int16,
``label`` 1 = nodule; patients are pseudonymised and never span two splits.

    python data_tools/nodule_patches.py --lidc ../shared/data/tcia_lidc_idri_0001_ct_subset --out runs/records/lidc_patches
    python data_tools/nodule_patches.py --phantoms /tmp/ct_phantoms --out runs/records/ct_patches
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys
import xml.etree.ElementTree as ET

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _records import pseudonymizer, write_records  # noqa: E402

NS = "{http://www.nih.gov}"


# ------------------------------------------------------------------------------------------ LIDC XML


def parse_lidc_xml(path) -> list[dict]:
    """Reader marks of an LIDC XML file.

    Returns:
        One dict per (reader, nodule): ``reader`` (session index), ``id``, ``kind`` ("nodule" or
        "non-nodule"), ``large`` (outlined, i.e. ≥ 3 mm), ``malignancy`` (1-5 or None) and ``points``:
        [(x_col, y_row, z_mm)] of every edge-map point / the centroid mark.

    Raises:
        ValueError: not an LIDC read message.
    """
    root = ET.parse(str(path)).getroot()
    if not root.tag.endswith("LidcReadMessage"):
        raise ValueError(f"{path}: not an LIDC read message XML (root element {root.tag!r})")
    marks = []
    for r, session in enumerate(root.iter(f"{NS}readingSession")):
        for nod in session.iter(f"{NS}unblindedReadNodule"):
            pts = []
            for roi in nod.iter(f"{NS}roi"):
                if (roi.findtext(f"{NS}inclusion") or "TRUE").strip().upper() != "TRUE":
                    continue
                z = float(roi.findtext(f"{NS}imageZposition"))
                for e in roi.iter(f"{NS}edgeMap"):
                    pts.append((float(e.findtext(f"{NS}xCoord")), float(e.findtext(f"{NS}yCoord")), z))
            mal = nod.findtext(f"{NS}characteristics/{NS}malignancy")
            marks.append({"reader": r, "id": nod.findtext(f"{NS}noduleID"), "kind": "nodule",
                          "large": len(pts) > 1, "malignancy": int(mal) if mal else None, "points": pts})
        for nn in session.iter(f"{NS}nonNodule"):
            z = float(nn.findtext(f"{NS}imageZposition"))
            loc = nn.find(f"{NS}locus")
            pts = [(float(loc.findtext(f"{NS}xCoord")), float(loc.findtext(f"{NS}yCoord")), z)] if loc is not None else []
            marks.append({"reader": r, "id": nn.findtext(f"{NS}nonNoduleID"), "kind": "non-nodule", "large": False,
                          "malignancy": None, "points": pts})
    return marks


def consensus_nodules(marks, pixel_spacing: tuple[float, float], radius_mm: float = 10.0) -> list[dict]:
    """Cluster reader marks of kind "nodule" by centroid distance (single linkage, ``radius_mm``).

    Returns:
        [{"center_xyz_px": (x_col, y_row, z_mm), "readers": n, "large": bool, "malignancy": mean or None,
          "diameter_mm": largest in-plane extent}], sorted by readers (desc).
    """
    sx, sy = pixel_spacing
    cents = []
    for m in marks:
        if m["kind"] != "nodule" or not m["points"]:
            continue
        p = np.array(m["points"], np.float64)
        c = p.mean(axis=0)
        ext = 0.0
        if len(p) > 1:
            ext = max(np.ptp(p[:, 0]) * sx, np.ptp(p[:, 1]) * sy)
        cents.append((c, m, ext))
    clusters: list[list] = []
    for c, m, ext in cents:
        mm = np.array([c[0] * sx, c[1] * sy, c[2]])
        for cl in clusters:
            if any(np.linalg.norm(mm - o) <= radius_mm for o in cl[0]):
                cl[0].append(mm)
                cl[1].append((c, m, ext))
                break
        else:
            clusters.append([[mm], [(c, m, ext)]])
    out = []
    for _, members in clusters:
        cs = np.array([c for c, _, _ in members])
        mal = [m["malignancy"] for _, m, _ in members if m["malignancy"]]
        out.append({
            "center_xyz_px": tuple(float(v) for v in cs.mean(axis=0)),
            "readers": len({m["reader"] for _, m, _ in members}),
            "large": any(m["large"] for _, m, _ in members),
            "malignancy": float(np.mean(mal)) if mal else None,
            "diameter_mm": float(max(e for _, _, e in members)),
        })
    return sorted(out, key=lambda d: -d["readers"])


# ------------------------------------------------------------------------------------------ volumes


def read_series(folder):
    """The single DICOM series under ``folder`` as a ``medtf.io.Image`` (HU, (D, H, W, 1)).

    Raises:
        ValueError: not exactly one series.
    """
    from medtf.io.sources import discover, read_unit

    ps = pseudonymizer()
    units, rejected = discover([str(folder)], pseudonymizer=ps, mode="volume")
    series = [u for u in units if u.kind == "dicom_series"]
    if len(series) != 1:
        raise ValueError(f"{folder}: expected exactly one DICOM series, found {len(series)} (rejected: {len(rejected)})")
    return read_unit(series[0], pseudonymizer=ps)[0]


def lps_to_index(image, lps) -> np.ndarray:
    """LPS mm (x, y, z) → fractional (slice, row, col) index of ``image``."""
    d = np.asarray(image.direction, np.float64).reshape(3, 3)
    rel = np.asarray(lps, np.float64) - np.asarray(image.origin, np.float64)
    ijk = d.T @ rel  # along the image's x (col), y (row), z (slice) axes, in mm
    sz, sy, sx = image.spacing
    return np.array([ijk[2] / sz, ijk[1] / sy, ijk[0] / sx])


def resample_isotropic(hu: np.ndarray, spacing, target: float) -> np.ndarray:
    """Linear resampling of a (D, H, W) volume to ``target`` mm (scipy ``zoom``, order 1)."""
    from scipy import ndimage

    zoom = [s / target for s in spacing]
    return ndimage.zoom(hu.astype(np.float32), zoom, order=1, mode="nearest")


def crop(vol: np.ndarray, center, size: int, fill: float = -1024.0) -> np.ndarray:
    """``size``³ patch centred on ``center`` (voxel indices), padded with ``fill`` outside."""
    out = np.full((size,) * 3, fill, np.float32)
    c = np.rint(np.asarray(center)).astype(int)
    lo = c - size // 2
    src = [slice(max(0, l), min(n, l + size)) for l, n in zip(lo, vol.shape)]
    dst = [slice(s.start - l, s.stop - l) for s, l in zip(src, lo)]
    if all(s.stop > s.start for s in src):
        out[tuple(dst)] = vol[tuple(src)]
    return out


def negative_centers(vol_iso: np.ndarray, positives_vox, n: int, rng, min_dist_vox: float, margin: int) -> list:
    """Random lung voxels (smoothed HU < −500), at least ``min_dist_vox`` from every positive."""
    from scipy import ndimage

    lung = ndimage.uniform_filter(vol_iso, 5) < -500
    body = ndimage.binary_fill_holes(vol_iso > -400)
    cand = np.argwhere(lung & ndimage.binary_erosion(body | lung, iterations=3) & (vol_iso > -990))
    inside = np.all((cand >= margin) & (cand < np.array(vol_iso.shape) - margin), axis=1)
    cand = cand[inside]
    out = []
    for idx in rng.permutation(len(cand)):
        p = cand[idx]
        if all(np.linalg.norm(p - np.asarray(q)) >= min_dist_vox for q in list(positives_vox) + out):
            out.append(p)
            if len(out) >= n:
                break
    return out


def patches_for_volume(image, centers_lps, *, spacing: float, size: int, negatives_per_positive: int,
                       min_negatives: int, rng) -> tuple[list[np.ndarray], list[int], list]:
    """(patches int16 (size³), labels, centres in resampled voxels) for one volume."""
    hu = image.array[..., 0]
    iso = resample_isotropic(hu, image.spacing, spacing)
    scale = np.asarray(image.spacing, np.float64) / spacing
    pos = [lps_to_index(image, c) * scale for c in centers_lps]
    n_neg = max(min_negatives, negatives_per_positive * len(pos))
    neg = negative_centers(iso, pos, n_neg, rng, min_dist_vox=20.0 / spacing, margin=size // 2)
    patches, labels = [], []
    for c, lab in [(p, 1) for p in pos] + [(q, 0) for q in neg]:
        patches.append(np.clip(np.rint(crop(iso, c, size)), -1024, 3071).astype(np.int16)[..., None])
        labels.append(lab)
    return patches, labels, pos + [np.asarray(q, np.float64) for q in neg]


# ------------------------------------------------------------------------------------------ sources


def lidc_examples(folder, *, min_readers: int, spacing: float, size: int, negatives: int, seed: int) -> tuple[list, dict]:
    folder = pathlib.Path(folder)
    xmls = sorted(folder.glob("*.xml"))
    if not xmls:
        raise FileNotFoundError(f"{folder}: no LIDC reader XML (*.xml)")
    dicom_dir = folder / "dicom" if (folder / "dicom").is_dir() else folder
    image = read_series(dicom_dir)
    marks = [m for x in xmls for m in parse_lidc_xml(x)]
    sy, sx = image.spacing[1], image.spacing[2]
    nods = consensus_nodules(marks, (sx, sy))
    chosen = [n for n in nods if n["large"] and n["readers"] >= min_readers]
    centers = []
    for n in chosen:
        x, y, z = n["center_xyz_px"]
        d = np.asarray(image.direction, np.float64).reshape(3, 3)
        lps = np.asarray(image.origin) + d @ np.array([x * sx, y * sy, 0.0])
        lps[2] = z
        centers.append(lps)
    rng = np.random.default_rng(seed)
    patches, labels, _ = patches_for_volume(image, centers, spacing=spacing, size=size,
                                            negatives_per_positive=negatives, min_negatives=negatives, rng=rng)
    exs = [{"image": p, "label": (l,), "spacing": (spacing,) * 3, "patient": image.patient,
            "source": f"lidc/{i:04d}", "modality": "CT"} for i, (p, l) in enumerate(zip(patches, labels))]
    return exs, {"nodules": nods, "positives": len(chosen)}


def phantom_examples(folder, *, spacing: float, size: int, negatives: int, seed: int) -> list:
    folder = pathlib.Path(folder)
    table = folder / "nodules.csv"
    labels_csv = folder / "labels.csv"
    if not table.is_file() or not labels_csv.is_file():
        raise FileNotFoundError(f"{folder}: expected nodules.csv and labels.csv from `medtf data phantoms ct`")
    by_series: dict[str, list] = {}
    for row in csv.DictReader(open(labels_csv)):
        by_series.setdefault(row["path"], [])
    for row in csv.DictReader(open(table)):
        by_series.setdefault(row["series"], []).append((float(row["x_mm"]), float(row["y_mm"]), float(row["z_mm"])))
    rng = np.random.default_rng(seed)
    exs = []
    for series, centers in sorted(by_series.items()):
        image = read_series(folder / "dicom" / series)
        patches, labels, _ = patches_for_volume(image, centers, spacing=spacing, size=size,
                                                negatives_per_positive=negatives, min_negatives=max(1, negatives),
                                                rng=rng)
        exs += [{"image": p, "label": (l,), "spacing": (spacing,) * 3, "patient": image.patient,
                 "source": f"{image.patient}/{series.replace('/', '_')}/{i:03d}", "modality": "CT"}
                for i, (p, l) in enumerate(zip(patches, labels))]
    return exs


def split_examples(exs, ratios, seed) -> dict[str, list]:
    """Patient-grouped, label-stratified split (``medtf.records.split.assign_splits``)."""
    from medtf.records.split import assign_splits

    by_patient = assign_splits([(e["patient"], e["label"]) for e in exs], ratios, seed)
    out = {n: [] for n, _ in ratios}
    for e in exs:
        out[by_patient[e["patient"]]].append(e)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--lidc", help="folder with the series (or dicom/ subfolder) and the LIDC XML")
    src.add_argument("--phantoms", help="output folder of `medtf data phantoms ct`")
    p.add_argument("--out", required=True)
    p.add_argument("--spacing", type=float, default=1.0, help="isotropic mm (default 1)")
    p.add_argument("--size", type=int, default=32, help="patch edge in voxels (default 32)")
    p.add_argument("--negatives", type=int, default=3, help="negatives per positive (default 3)")
    p.add_argument("--min-readers", type=int, default=1, help="LIDC: readers that must mark a nodule")
    p.add_argument("--split", default="0.6,0.2,0.2", help="train,val,test fractions by patient (phantoms)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.lidc:
        exs, info = lidc_examples(a.lidc, min_readers=a.min_readers, spacing=a.spacing, size=a.size,
                                  negatives=a.negatives, seed=a.seed)
        splits = {"test": exs}
        extra = {"lidc_nodules": info["nodules"]}
        print(f"{info['positives']} consensus nodule(s) >= 3 mm; {len(exs)} patches")
    else:
        from medtf.records.split import parse_split

        exs = phantom_examples(a.phantoms, spacing=a.spacing, size=a.size, negatives=a.negatives, seed=a.seed)
        splits = split_examples(exs, parse_split(a.split), a.seed)
        extra = {}
    m = write_records(a.out, splits, image_dtype="int16", intensity={"kind": "raw"}, tool="data_tools/nodule_patches",
                      label_names=["no nodule", "nodule"], extra=extra)
    print({k: (v["examples"], v["labels"]) for k, v in m["splits"].items()}, "→", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
