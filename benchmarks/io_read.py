"""Benchmark: medtf.io readers vs independent baselines measured in the same run.

* DICOM series: ``discover`` + ``read_unit`` on the real LIDC-IDRI subset (41 CT slices, 512x512) vs
  SimpleITK ``GetGDCMSeriesFileNames`` + ``ImageSeriesReader.Execute`` on the same folder
  (``ratio_vs_sitk`` = medtf time / SimpleITK time; < 1 is faster). Without the shared data a synthetic
  41-slice series is written with pydicom.
* npz: ``iter_npz`` over all 5,856 PneumoniaMNIST rows (Images with pseudonymous patients) vs the bare
  ``np.load`` + per-row indexing (``ratio_vs_numpy``).

Writes ``benchmarks/results/io_read.json``. Usage: python benchmarks/io_read.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = pathlib.Path(os.environ.get("MEDTF_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _series_folder(tmp: pathlib.Path) -> tuple[pathlib.Path, str]:
    lidc = SHARED / "tcia_lidc_idri_0001_ct_subset" / "dicom"
    if lidc.is_dir():
        return lidc, "tcia_lidc_idri_0001_ct_subset (41 x 512x512 CT)"
    sys.path.insert(0, str(ROOT / "tests" / "io"))
    from io_dicom_factory import make_slice

    folder = tmp / "series"
    folder.mkdir()

    for i in range(41):
        make_slice(folder / f"{i:03d}.dcm", z=2.5 * i, pixels=np.random.default_rng(i).integers(0, 4095, (512, 512)))
    return folder, "synthetic 41 x 512x512 series"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else 5

    import SimpleITK as sitk

    from medtf.io import Pseudonymizer, discover, read_unit
    from medtf.io.arrays import iter_npz

    pz = Pseudonymizer(b"benchmark-secret-0123456789")
    results: dict = {"repeats": repeats}
    with tempfile.TemporaryDirectory() as tmp:
        folder, what = _series_folder(pathlib.Path(tmp))

        def ours():
            units, _ = discover([folder], pseudonymizer=pz)
            unit = next(u for u in units if u.kind == "dicom_series")
            return read_unit(unit, pseudonymizer=pz)[0].array

        def baseline():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
            return sitk.GetArrayFromImage(reader.Execute())

        assert np.array_equal(ours()[..., 0], baseline()), "series differs from SimpleITK"
        t_ours, t_sitk = _best(ours, repeats), _best(baseline, repeats)
        results["series"] = {"data": what, "medtf_s": t_ours, "simpleitk_s": t_sitk, "ratio_vs_sitk": t_ours / t_sitk}
        print(f"DICOM series ({what}): medtf {t_ours:.3f} s, SimpleITK {t_sitk:.3f} s, ratio {t_ours / t_sitk:.2f}")

    npz = SHARED / "pneumoniamnist" / "pneumoniamnist.npz"
    if npz.is_file():
        def ours_npz():
            return sum(1 for _ in iter_npz(npz, pseudonymizer=pz))

        def numpy_npz():
            n = 0
            with np.load(npz) as z:
                for split in ("train", "val", "test"):
                    images, labels = z[f"{split}_images"], z[f"{split}_labels"]
                    for i in range(images.shape[0]):
                        _ = (images[i], tuple(int(v) for v in labels[i]))
                        n += 1
            return n

        assert ours_npz() == numpy_npz() == 5856
        t_ours, t_np = _best(ours_npz, repeats), _best(numpy_npz, repeats)
        results["npz"] = {"rows": 5856, "medtf_s": t_ours, "numpy_s": t_np, "ratio_vs_numpy": t_ours / t_np,
                          "rows_per_s": 5856 / t_ours}
        print(f"npz PneumoniaMNIST (5,856 rows): medtf {t_ours:.3f} s ({5856 / t_ours:,.0f} rows/s), "
              f"numpy {t_np:.3f} s, ratio {t_ours / t_np:.2f}")
    else:
        print(f"npz benchmark skipped: {npz} not found")

    out = ROOT / "benchmarks" / "results" / "io_read.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
