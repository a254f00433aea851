"""Benchmark: the scale-out engines against their one-machine baselines, measured in the same run.

* Conversion: ``tfrecord-convert --runner beam`` (Apache Beam DirectRunner, multi-process, 2 workers) against the
  local converter with 2 worker processes, on the same generated CT-like 512×512 DICOMs in four transfer
  syntaxes (``benchmarks/convert.py``'s generator), interleaved, best of ``--repeats``. Both outputs are checked
  byte for byte. ``beam_ratio_vs_local`` = Beam throughput ÷ local throughput (< 1: Beam's overhead).
* Training: ``medtf.training.train(..., strategy="multiworker")`` with 2 worker processes on 127.0.0.1 against
  one worker (the default strategy), the same ``simple_cnn`` on the same records with the same global batch.
  Throughput = training examples ÷ wall time of the timed epochs (the first epoch, with tracing, is not timed),
  read on the chief. ``multiworker_ratio`` = 2-worker throughput ÷ 1-worker throughput (1.0: no gain).

On a 2-core machine both engines only show their overhead: the two workers share the same two cores that the
baseline uses. See docs/scale.md for what to expect on a cluster.

    python benchmarks/scale.py [--quick]   → benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
KEY = "6d6564746620736361 6c652062656e63686d61726b206b6579".replace(" ", "")


def _convert_bench():
    spec = importlib.util.spec_from_file_location("medtf_bench_convert", HERE / "convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(out: pathlib.Path) -> dict:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "convert_stats.json"}


def bench_convert(tmp: pathlib.Path, files: int, repeats: int) -> dict:
    from medtf.records.beam import convert_beam
    from medtf.records.convert import ConvertConfig, convert

    src = tmp / "dicom"
    t = time.perf_counter()
    counts = _convert_bench().generate(src, files)
    print(f"generated {files} DICOM files in {time.perf_counter() - t:.1f}s: {counts}", flush=True)
    key = tmp / "site.key"
    key.write_text(KEY + "\n")

    small = tmp / "dicom-4"  # one file per transfer syntax: the fixed cost of a job
    small.mkdir()
    for f in sorted(src.iterdir())[:4]:
        shutil.copy(f, small / f.name)

    def run(runner, out, inputs=src):
        shutil.rmtree(out, ignore_errors=True)
        config = ConvertConfig(inputs=(str(inputs),), output=str(out), mode="slice", workers=2, key_file=str(key),
                               progress=False)
        t0 = time.perf_counter()
        res = convert_beam(config) if runner == "beam" else convert(config)
        dt = time.perf_counter() - t0
        assert res.exit_code == 0, res.exit_code
        return dt, res.stats

    run("local", tmp / "warm")  # caches, decoder plugins
    local, beam, local4, beam4 = [], [], [], []
    for r in range(repeats):
        local_s, local_stats = run("local", tmp / "local")
        local.append(local_s)
        beam_s, beam_stats = run("beam", tmp / "beam")
        beam.append(beam_s)
        local4.append(run("local", tmp / "local4", small)[0])
        beam4.append(run("beam", tmp / "beam4", small)[0])
        print(f"convert repeat {r + 1}/{repeats}: local 2 workers {local[-1]:.2f}s, "
              f"Beam DirectRunner 2 workers {beam[-1]:.2f}s", flush=True)
    identical = _outputs(tmp / "local") == _outputs(tmp / "beam")
    lo, be = min(local), min(beam)
    marginal = (be - min(beam4)) / (files - 4)  # seconds per extra file, 2 workers
    return {
        "files": files,
        "syntaxes": counts,
        "repeats": repeats,
        "local_2_workers_s": round(lo, 3),
        "beam_direct_2_workers_s": round(be, 3),
        "local_2_workers_files_per_s": round(files / lo, 2),
        "beam_direct_2_workers_files_per_s": round(files / be, 2),
        "beam_files_per_s_per_worker": round(files / be / 2, 2),
        "local_4_files_s": round(min(local4), 3),
        "beam_4_files_s": round(min(beam4), 3),
        "beam_marginal_files_per_s_per_worker": round(1 / marginal / 2, 2),
        "local_phases_s": local_stats["timings"],
        "beam_phases_s": beam_stats["timings"],
        "beam_ratio_vs_local": round(lo / be, 3),
        "outputs_identical": bool(identical),
    }


WORKER = r"""
import json, sys, time
import keras
from medtf.training.config import load_config
from medtf.training.trainer import train

conf, out, strategy = sys.argv[1], sys.argv[2], sys.argv[3]

class Clock(keras.callbacks.Callback):
    marks = []
    def on_epoch_begin(self, epoch, logs=None):
        self.marks.append(("begin", epoch, time.perf_counter()))
    def on_epoch_end(self, epoch, logs=None):
        self.marks.append(("end", epoch, time.perf_counter()))
    def on_train_end(self, logs=None):
        with open(out, "w") as f:
            json.dump(self.marks, f)

train(load_config(conf), strategy=strategy, callbacks=[Clock()])
"""


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _throughput(marks_path: pathlib.Path, n_train: int) -> tuple[float, float]:
    marks = json.loads(marks_path.read_text())
    begins = {e: t for kind, e, t in marks if kind == "begin"}
    ends = {e: t for kind, e, t in marks if kind == "end"}
    timed = sorted(e for e in ends if e > 0)
    seconds = ends[timed[-1]] - begins[timed[0]]
    return n_train * len(timed) / seconds, seconds


def bench_train(tmp: pathlib.Path, n_train: int, size: int, epochs: int) -> dict:
    import yaml

    sys.path.insert(0, str(ROOT / "tests" / "training"))
    from training_helpers import make_records, tiny_config_dict

    records = make_records(tmp / "records", n_train=n_train, n_val=64, n_test=0, size=size)
    (tmp / "worker.py").write_text(WORKER)
    results = {}
    for workers in (1, 2):
        cfg = tiny_config_dict(records, tmp / "runs", epochs=epochs, early_stopping_patience=None,
                               run_name=f"w{workers}", backup_every_steps=None)
        cfg["model"]["kwargs"]["filters"] = [16, 32, 64]
        cfg["data"]["batch_size"] = 32
        (tmp / f"train-{workers}.yaml").write_text(yaml.safe_dump(cfg))
        cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(workers)]}
        procs = []
        t0 = time.perf_counter()
        for i in range(workers):
            env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
            env.pop("TF_CONFIG", None)
            if workers > 1:
                env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            cmd = [sys.executable, str(tmp / "worker.py"), str(tmp / f"train-{workers}.yaml"),
                   str(tmp / f"marks-{workers}-{i}.json"), "multiworker" if workers > 1 else "default"]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for p in procs:
            text, _ = p.communicate(timeout=1800)
            if p.returncode != 0:
                raise RuntimeError(f"training worker failed:\n{text[-3000:]}")
        wall = time.perf_counter() - t0
        rate, seconds = _throughput(tmp / f"marks-{workers}-0.json", n_train)
        steps = (epochs - 1) * (n_train // 32)
        results[workers] = {"examples_per_s": round(rate, 1), "timed_epochs_s": round(seconds, 3),
                            "step_ms": round(1000 * seconds / steps, 2), "wall_s_with_startup": round(wall, 2)}
        print(f"train {workers} worker(s): {rate:.1f} examples/s over epochs 2..{epochs} "
              f"({seconds:.2f}s; {wall:.1f}s with start-up)", flush=True)
    return {
        "model": "simple_cnn filters [16, 32, 64]",
        "input": f"{size}x{size}x1",
        "train_examples": n_train,
        "global_batch": 32,
        "epochs": epochs,
        "timed_epochs": epochs - 1,
        "one_worker": results[1],
        "two_workers": results[2],
        "multiworker_ratio": round(results[2]["examples_per_s"] / results[1]["examples_per_s"], 3),
        "step_overhead_ms_2_workers": round(results[2]["step_ms"] - results[1]["step_ms"], 2),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60 files, 1 repeat, short training")
    ap.add_argument("--files", type=int, default=None, help="DICOM files (default 300; 60 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="conversion repeats, best kept (default 3)")
    args = ap.parse_args(argv)
    files = args.files or (60 if args.quick else 300)
    repeats = args.repeats or (1 if args.quick else 3)
    load_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="medtf-scale-") as tmp:
        tmp = pathlib.Path(tmp)
        conv = bench_convert(tmp / "convert", files, repeats)
        train = bench_train(tmp / "train", n_train=256 if args.quick else 1024, size=64,
                            epochs=3 if args.quick else 5)
    import apache_beam
    import tensorflow as tf

    result = {
        "benchmark": "scale",
        "beam_ratio_vs_local": conv["beam_ratio_vs_local"],
        "multiworker_ratio": train["multiworker_ratio"],
        "convert": conv,
        "train": train,
        "machine": {"cpu_count": os.cpu_count(), "load_average_1m_start": load_start,
                    "load_average_1m_end": round(os.getloadavg()[0], 2),
                    "apache_beam": apache_beam.__version__, "tensorflow": tf.__version__},
        "quick": bool(args.quick),
    }
    out = HERE / "results" / "scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"beam_ratio_vs_local = {result['beam_ratio_vs_local']:.3f}  (Beam DirectRunner 2 workers ÷ local 2 "
          f"workers, throughput; outputs identical: {conv['outputs_identical']})")
    print(f"multiworker_ratio   = {result['multiworker_ratio']:.3f}  (2 workers ÷ 1 worker, training throughput; "
          f"cpu_count {os.cpu_count()})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
