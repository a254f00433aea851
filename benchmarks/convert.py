"""Benchmark: tfrecord-convert throughput vs bare pydicom decode, and 2 workers vs 1.

Generates CT-like 512×512 DICOMs (uint16 stored, HU via RescaleIntercept) in mixed transfer syntaxes
(explicit VR little endian, RLE lossless, JPEG-LS lossless, JPEG 2000 lossless; encoded with pydicom's
``Dataset.compress`` through pylibjpeg / pyjpegls), then times, in the same run and on the same files:

* baseline: ``pydicom.dcmread(path).pixel_array`` for every file, one process;
* ``medtf.records.convert`` with 1 worker (full conversion: discover, decode, HU, encode, shards, manifest);
* the same with 2 workers.

Prints and writes ``benchmarks/results/convert.json`` with ``ratio_vs_decode`` (conversion throughput ÷
decode throughput, 1 worker) and ``speedup_2_workers`` (2 workers ÷ 1). JPEG Lossless (process 14) is not
included: no installed encoder writes it (pydicom can only decode it).

Usage: python benchmarks/convert.py [--quick] [--files N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _syntaxes():
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

    return [ExplicitVRLittleEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless]


def _phantom(rng, size=512):
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    r = np.hypot(yy - c, xx - c)
    hu = np.full((size, size), -1000.0)
    hu[r < size * 0.42] = 40.0  # soft tissue
    lung = (np.hypot(yy - c, xx - c * 0.6) < size * 0.15) | (np.hypot(yy - c, xx - c * 1.4) < size * 0.15)
    hu[lung] = -850.0
    hu[np.hypot(yy - c * 1.5, xx - c) < size * 0.05] = 700.0  # bone
    hu += rng.normal(0, 15, hu.shape)
    return np.clip(hu + 1024, 0, 4095).astype(np.uint16)


def generate(folder: pathlib.Path, n: int, distinct: int = 6) -> dict:
    """Write ``n`` files cycling through the syntaxes; ``distinct`` encoded images per syntax are reused
    (with new UIDs and patients) so generation stays fast. Returns counts per syntax."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    encoded = {}
    for ts in _syntaxes():
        for k in range(distinct):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.Rows = ds.Columns = 512
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.PixelData = _phantom(rng).tobytes()
            if ts != ExplicitVRLittleEndian:
                ds.compress(ts)
            encoded[(ts, k)] = ds.PixelData
    counts: dict = {}
    folder.mkdir(parents=True, exist_ok=True)
    syn = _syntaxes()
    for i in range(n):
        ts = syn[i % len(syn)]
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ts
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName = f"BENCH{i // 3:04d}", f"Bench^{i // 3}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.Modality = "CT"
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(i)], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = encoded[(ts, i % distinct)]
        if ts != ExplicitVRLittleEndian:
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
        ds.save_as(folder / f"ct{i:04d}.dcm", enforce_file_format=True)
        counts[ts.name] = counts.get(ts.name, 0) + 1
    return counts


def bare_decode(files) -> float:
    import pydicom

    t = time.perf_counter()
    for f in files:
        pydicom.dcmread(f).pixel_array
    return time.perf_counter() - t


def run_convert(src: pathlib.Path, out: pathlib.Path, workers: int) -> tuple[float, dict]:
    from medtf.records.convert import ConvertConfig, convert

    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    res = convert(ConvertConfig(inputs=(str(src),), output=str(out), mode="slice", workers=workers, progress=False))
    dt = time.perf_counter() - t
    assert res.exit_code == 0, [f for f in res.manifest["files"] if f["outcome"] != "converted"][:3]
    return dt, res.stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60 files, 1 repeat")
    ap.add_argument("--files", type=int, default=None, help="number of files (default 300; 60 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats, best kept (default 3; 1 with --quick)")
    args = ap.parse_args(argv)
    n = args.files or (60 if args.quick else 300)
    repeats = args.repeats or (1 if args.quick else 3)
    os.environ.setdefault("MEDTF_PSEUDONYM_KEY", "6d65647466206265 6e63686d61726b206b6579".replace(" ", ""))
    with tempfile.TemporaryDirectory(prefix="medtf-bench-") as tmp:
        tmp = pathlib.Path(tmp)
        src = tmp / "dicom"
        t = time.perf_counter()
        counts = generate(src, n)
        print(f"generated {n} files in {time.perf_counter() - t:.1f}s: {counts}")
        files = sorted(str(p) for p in src.iterdir())
        bare_decode(files[:8])  # warm caches and plugins
        run_convert(src, tmp / "warm", 1)
        decode, conv1, conv2 = [], [], []
        for r in range(repeats):
            decode.append(bare_decode(files))
            conv1.append(run_convert(src, tmp / "out1", 1)[0])
            conv2.append(run_convert(src, tmp / "out2", 2)[0])
            print(f"repeat {r + 1}/{repeats}: decode {decode[-1]:.2f}s  convert 1w {conv1[-1]:.2f}s  "
                  f"2w {conv2[-1]:.2f}s")
        _, stats1 = run_convert(src, tmp / "out1", 1)
        same = all((tmp / "out1" / name).read_bytes() == (tmp / "out2" / name).read_bytes()
                   for name in os.listdir(tmp / "out1") if name.endswith((".tfrecord", ".json"))
                   and name != "convert_stats.json")
    d, c1, c2 = min(decode), min(conv1), min(conv2)
    result = {
        "benchmark": "convert",
        "files": n,
        "syntaxes": counts,
        "image": "512x512 uint16 CT-like, RescaleIntercept -1024",
        "repeats": repeats,
        "decode_s": round(d, 3),
        "convert_1_worker_s": round(c1, 3),
        "convert_2_workers_s": round(c2, 3),
        "decode_files_per_s": round(n / d, 2),
        "convert_1_worker_files_per_s": round(n / c1, 2),
        "convert_2_workers_files_per_s": round(n / c2, 2),
        "ratio_vs_decode": round(d / c1, 3),
        "speedup_2_workers": round(c1 / c2, 3),
        "outputs_identical_1_vs_2_workers": bool(same),
        "convert_phases_1_worker_s": stats1["timings"],
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "quick": bool(args.quick),
    }
    out = ROOT / "benchmarks" / "results" / "convert.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"ratio_vs_decode   = {result['ratio_vs_decode']:.3f}  (target >= 0.8)")
    print(f"speedup_2_workers = {result['speedup_2_workers']:.3f}  (target >= 1.7; cpu_count {os.cpu_count()}, "
          f"load {result['load_average_1m']})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
