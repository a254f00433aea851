"""Benchmark: ``medtf serve`` throughput ÷ calling the same exported model in-process, batch-1 image requests.

Model: the pneumonia recipe's architecture (``simple_cnn`` filters 32-64-128-256, 64×64 grey, binary; seeded
weights — latency does not depend on training), with a conversion stage (window 4096/2048 → [0, 1], size
64×64), exported by ``medtf export --format savedmodel``. Inputs: 64×64 DX chest-X-ray phantoms (12 bits).

Two request kinds, each ``--requests`` requests at ``--concurrency`` parallel connections (httpx, keep-alive)
against ``medtf serve`` in its own process on 127.0.0.1, after a warm-up:

* ``dicom`` (the headline: one image per request, as a PACS or viewer sends it): ``Content-Type:
  application/dicom`` with the DX file → JSON prediction (read as the converter reads it, the chain with the
  NumPy reference, ``predict_preprocessed``); in-process baseline: the service's own DICOM path
  (``Service.predict_dicom``: read, preprocess, the same SavedModel) called in a loop — everything but HTTP;
* ``json``: TF Serving REST ``{"instances": [raw 64×64×1 pixels]}`` → ``serving_default``; in-process
  baseline: the SavedModel's ``serving_default`` on the same array, batch 1, called in a loop. JSON parsing
  of 4,096 nested numbers and HTTP cost more than this 1 ms model, so this ratio is far lower.

Ratio = service requests/s ÷ in-process calls/s. The requests go in ``--rounds`` bursts with an in-process
timing before the first and after each (a shared 2-core host drifts; both sides see the same load); rates
pool the bursts. Latencies p50 / p99 are per request over all bursts, measured by the client, which runs
on the same 2 cores (its CPU per request is recorded).

    python benchmarks/serve.py [--requests 2000] [--concurrency 8] [--quick]   → benchmarks/results/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def build(root: pathlib.Path):
    """Phantoms, the run, its SavedModel export; returns (dicom files, run dir, version dir)."""
    import keras

    from medtf import models
    from medtf.cli.main import main as medtf_main
    from medtf.preprocess import Preprocessing
    from medtf.synthetic.phantoms import write_cxr_phantoms
    from medtf.training.run import RunInfo

    ph = write_cxr_phantoms(root / "cxr", n_patients=16, studies_per_patient=1, size=64, seed=0,
                            transfer_syntaxes=("explicit",), monochrome1_fraction=0.0)
    files = sorted(ph.images_dir.rglob("*.dcm"))
    run = root / "pneumonia"
    run.mkdir()
    keras.utils.set_random_seed(0)
    model = models.build("simple_cnn", input_shape=(64, 64, 1), num_classes=2, task="binary",
                         filters=(32, 64, 128, 256), dropout=0.3)
    model.save(run / "model.keras")
    RunInfo(name="simple_cnn", task="binary", class_names=("normal", "pneumonia"), input_shape=(64, 64, 1),
            spatial_dims=2, preprocessing=Preprocessing(),
            conversion=Preprocessing(intensity="window", windows=((4096, 2048),), size=(64, 64)),
            threshold=0.5).save(run)
    assert medtf_main(["export", str(run), "--format", "savedmodel", "--no-parity"]) == 0
    return files, run, next((run / "export" / "savedmodel").glob("*/1"))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: pathlib.Path, log: pathlib.Path, workers: int = 1):
    import httpx

    port = free_port()
    fh = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "medtf.cli.main", "serve", str(run), "--port", str(port),
                             "--log-level", "warning", "--workers", str(workers)], stdout=fh, stderr=subprocess.STDOUT,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""))
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2, trust_env=False).status_code == 200:
                return proc, url, fh
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError("server not ready")


async def _load(url: str, path: str, bodies: list[tuple[bytes, dict]], n: int, concurrency: int):
    import httpx

    lat, errors = [], []
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, trust_env=False) as client:
        async def worker():
            for i in counter:
                body, headers = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, content=body, headers=headers)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code}: {r.text[:200]}")
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"{type(exc).__name__}: {exc}")
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    return lat, errors, wall


def service_run(url, path, bodies, n, concurrency, rounds: int = 1, between=None):
    """``n`` requests in ``rounds`` bursts (``between()`` runs after each burst); pooled latencies."""
    import numpy as np

    lat, errors, wall, cpu = [], [], 0.0, 0.0
    per = [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]
    for k in per:
        cpu0 = time.process_time()
        l, e, w = asyncio.run(_load(url, path, bodies, k, concurrency))
        cpu += time.process_time() - cpu0
        lat += l
        errors += e
        wall += w
        if between is not None:
            between()
    ms = np.asarray(lat) * 1e3
    return {"requests": n, "errors": len(errors), "error_examples": errors[:3], "wall_s": round(wall, 3),
            "client_cpu_ms_per_request": round(cpu / n * 1e3, 3),
            "throughput_rps": round(n / wall, 2), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def inprocess_rate(fn, items, n: int) -> float:
    for i in range(min(20, n)):
        fn(items[i % len(items)])
    t0 = time.perf_counter()
    for i in range(n):
        fn(items[i % len(items)])
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1, help="medtf serve --workers (default 1)")
    ap.add_argument("--rounds", type=int, default=4, help="service bursts interleaved with in-process timings")
    ap.add_argument("--quick", action="store_true", help="200 requests, a smoke run")
    ap.add_argument("--out", default=str(HERE / "results" / "serve.json"))
    args = ap.parse_args(argv)
    n = 200 if args.quick else args.requests
    load_start = [round(v, 2) for v in os.getloadavg()]
    calls = max(100, n // (2 * args.rounds))  # in-process calls per timing
    import numpy as np
    import tensorflow as tf

    from medtf.io.inputs import iter_inputs
    from medtf.serving.app import ServeConfig, Service
    from medtf.serving.models import load

    with tempfile.TemporaryDirectory(prefix="medtf-bench-serve-") as tmp:
        root = pathlib.Path(tmp)
        files, run, version_dir = build(root)
        raw = [np.asarray(im.array, np.float32) for f in files for _, im in iter_inputs([str(f)], spatial_dims=2)]
        dicoms = [f.read_bytes() for f in files]
        json_bodies = [(json.dumps({"instances": [a.tolist()]}).encode(), {"Content-Type": "application/json"})
                       for a in raw]
        dicom_bodies = [(d, {"Content-Type": "application/dicom"}) for d in dicoms]

        # in-process: the same SavedModel, and the service's own DICOM path without HTTP
        loaded = tf.saved_model.load(str(version_dir))
        serve_default = loaded.signatures["serving_default"]
        model = load(run)
        svc = Service(ServeConfig(models=(str(run),)), [model])

        def json_inproc(a):
            return serve_default(image=tf.constant(a[None]))["predictions"].numpy()

        def dicom_inproc(d):
            return svc.predict_dicom(model, [d], None, {})

        proc, url, fh = start_server(run, root / "serve.log", args.workers)
        results = {}
        try:
            for kind, bodies, fn, items in (("json", json_bodies, json_inproc, raw),
                                            ("dicom", dicom_bodies, dicom_inproc, dicoms)):
                print(f"{kind}: warm-up …", flush=True)
                service_run(url, "/v1/models/pneumonia:predict", bodies, 64, args.concurrency)
                rates = [inprocess_rate(fn, items, calls)]
                print(f"{kind}: {n} requests at concurrency {args.concurrency} in {args.rounds} rounds, "
                      "in-process timed between them …", flush=True)
                res = service_run(url, "/v1/models/pneumonia:predict", bodies, n, args.concurrency, args.rounds,
                                  between=lambda: rates.append(inprocess_rate(fn, items, calls)))
                inproc = float(len(rates) / sum(1.0 / r for r in rates))  # calls / total time
                res.update(inprocess_calls_per_s=round(inproc, 2), inprocess_rounds=[round(r, 2) for r in rates],
                           throughput_ratio_vs_inprocess=round(res["throughput_rps"] / inproc, 4))
                results[kind] = res
                print(f"  client CPU {res['client_cpu_ms_per_request']} ms/request", flush=True)
                print(f"  {res['throughput_rps']} req/s (in-process {inproc:.1f}/s) → ratio "
                      f"{res['throughput_ratio_vs_inprocess']}; p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms, "
                      f"errors {res['errors']}", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            fh.close()
        head = results["dicom"]
        out = {
            "benchmark": "serve",
            "requests": head["requests"], "errors": results["dicom"]["errors"] + results["json"]["errors"],
            "p50_ms": head["p50_ms"], "p99_ms": head["p99_ms"],
            "throughput_ratio_vs_inprocess": head["throughput_ratio_vs_inprocess"],
            "target": ">= 0.8 (batch-1 image requests), errors == 0",
            "concurrency": args.concurrency,
            "kinds": results,
            "setup": {"model": "simple_cnn(32,64,128,256), 64x64x1, binary (pneumonia recipe architecture)",
                      "chain": "window 4096/2048 -> size 64x64", "inputs": f"{len(files)} DX phantoms 64x64, 12 bit",
                      "headline": "dicom: one DICOM image per request (application/dicom) -> JSON prediction",
                      "client": "httpx.AsyncClient, keep-alive, same host",
                      "server": f"medtf serve, {args.workers} worker(s), uvicorn "
                                f"{'httptools' if _has('httptools') else 'h11'} / "
                                f"{'uvloop' if _has('uvloop') else 'asyncio'}",
                      "quick": bool(args.quick), "server_exit_code": proc.returncode},
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "tensorflow": tf.__version__,
                        "loadavg_start": load_start, "loadavg_end": [round(v, 2) for v in os.getloadavg()]},
        }
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"→ {path}")
    return 0 if out["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
