"""Export benchmark: what int8 costs on the pneumonia models (size, latency, ΔAUC), PTQ only.

Default: the three PneumoniaMNIST models of ``recipes/pneumonia_cxr`` (trained there, 64×64 grey):

* ``efficientnet_b0``: the card's EfficientNet-B0, the recipe's default (``config.yaml``, swish + squeeze-excitation);
* ``efficientnet_b0_lite``: the same B0 in its Lite form (``efficientnet_lite.yaml``: ReLU6, no SE);
* ``student``: ``simple_cnn [16, 32, 64, 128]`` distilled from the B0 (``distill.yaml``, ``medtf distill``).

Runs missing from ``--work`` are trained first with the recipe configs (``benchmarks/recipes.py``'s helpers;
EfficientNet about 10 minutes each on 2 cores). Every model is converted to fp32 / fp16 / dynamic-range TFLite and
to full int8 by post-training quantization (no QAT) in several attempts:

* ``ptq``: the converter's full-integer PTQ (per-channel weights, 1,000 calibration images, int8 I/O);
* ``ptq_float_head``: the same with the output sigmoid in float (an int8 sigmoid has 256 levels, so confident
  predictions tie and the AUC drops for that alone);
* ``ptq_float_swish_se``: LOGISTIC, MUL and MEAN kept in float (swish and the squeeze-excitation gates; only
  where the model has them);
* ``ptq_ai_edge_quantizer``: the LiteRT quantizer's ``static_wi8_ai8`` recipe on the fp32 file, when
  ``ai-edge-quantizer`` is installed (it is not a medtf dependency: it pins ai-edge-litert).

The attempt used for the ``int8_*`` figures is the one with the smallest **validation** ΔAUC (ties within 0.001:
the faster file); test figures are read once per file. ΔAUC = Keras AUC − file AUC, on the 524 validation and
624 test images, computed with scikit-learn. Latency: ai_edge_litert, batch 1, 2 threads, round-robin over all of
a model's files (median of ``--runs``), so that load from other processes hits every file alike.

    python benchmarks/export.py [--only efficientnet_b0,efficientnet_b0_lite,student] [--runs 200] [--work DIR]
    python benchmarks/export.py --run RUN     # a trained run folder through ``medtf export`` (parity gate)

``--run`` benchmarks an existing run (e.g. the compact CNN of ``compact.yaml``, the ``pneumonia_cxr`` row of
``benchmarks/recipes.py``) through
``medtf export RUN``; its figures are the top-level keys of ``benchmarks/results/export.json``, the default
mode's models are under their names beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"


#: model key → (recipe config, run name in --work/runs, how it is trained)
MODELS = {
    "efficientnet_b0": ("config.yaml", "pneumonia_cxr_efficientnet_s0", "train"),
    "efficientnet_b0_lite": ("efficientnet_lite.yaml", "pneumonia_cxr_efficientnet_lite_s0", "train"),
    "student": ("distill.yaml", "pneumonia_cxr_student", "distill"),
}
PTQ_ATTEMPTS = {
    "ptq": (),
    "ptq_float_head": ("LOGISTIC",),  # by node name when the model has other sigmoids (bench_model)
    "ptq_float_swish_se": ("LOGISTIC", "MUL", "MEAN"),
}
TARGETS = {"int8_size_ratio": 0.3, "int8_latency_ratio": 0.6, "int8_delta_auc": 0.01}


def _recipes():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import recipes

    return recipes


def ensure_run(key: str, work: pathlib.Path) -> pathlib.Path:
    """The trained run for ``key`` in ``work/runs`` (trained with the recipe config when missing)."""
    rx = _recipes()
    config, name, how = MODELS[key]
    run = work / "runs" / name
    if (run / "model.keras").is_file() and (run / "model.json").is_file():
        return run
    records = rx._medmnist_records("pneumoniamnist", work)
    if how == "distill":
        from medtf.cli.main import main as medtf_main

        teacher = ensure_run("efficientnet_b0", work)
        print(f"distilling {name} from {teacher.name} …", flush=True)
        code = medtf_main(["distill", str(teacher), str(REPO / "recipes" / "pneumonia_cxr" / config),
                           "--set", f"output_dir={work / 'runs'}", "--set", f"run_name={name}",
                           "--set", "verbose=2", "--overwrite"])
        if code != 0:
            raise RuntimeError(f"medtf distill exited {code}")
        return run
    print(f"training {name} ({config}) …", flush=True)
    ctx = rx.Ctx(work, quick=False, seed=0)
    return rx._train("pneumonia_cxr", ctx, records, extra=[f"run_name={name.removesuffix('_s0')}"],
                     config_name=config)


def _auc(y, p) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def _ops(flat: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flat)
    ops: dict = {}
    for d in it._get_ops_details():
        ops[d["op_name"]] = ops.get(d["op_name"], 0) + 1
    return ops


def bench_model(key: str, run: pathlib.Path, runs: int, work: pathlib.Path) -> dict:
    """fp32 / fp16 / dynamic / PTQ int8 attempts of one run: sizes, val and test ΔAUC, round-robin latency."""
    from medtf.export import litert
    from medtf.export.parity import tflite_predict
    from medtf.training.run import RunInfo, load_model

    rx = _recipes()
    info = RunInfo.load(run)
    model = litert.float32_model(load_model(run))
    records = work / "records" / "pneumoniamnist"
    data = {s: rx._arrays(records, s, run) for s in ("train", "val", "test")}
    y = {s: data[s][1].reshape(len(data[s][1]), -1)[:, -1] for s in data}
    ref = {s: model.predict(data[s][0], batch_size=128, verbose=0).reshape(-1) for s in ("val", "test")}
    ref_auc = {s: _auc(y[s], ref[s]) for s in ref}
    thr = float(info.threshold) if info.threshold is not None else 0.5
    calib = data["train"][0][np.random.default_rng(0).permutation(len(data["train"][0]))[:1000]]
    out_dir = work / "export" / key
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    for fmt in ("tflite-fp32", "tflite-fp16", "tflite-dynamic"):
        files[fmt.replace("tflite-", "")] = litert.convert(model, fmt)
    base_ops = None
    for name, float_ops in PTQ_ATTEMPTS.items():
        t0 = time.time()
        if name == "ptq_float_swish_se" and base_ops is not None and not base_ops.get("MUL"):
            continue  # no swish/SE in this model: same file as ptq_float_head
        if name == "ptq_float_head" and base_ops.get("LOGISTIC", 0) > 1:
            # other sigmoids (swish, SE gates) stay int8: only the output op's node is denylisted, by name
            files[name] = litert.convert(model, "tflite-int8", calibration=calib, max_calibration=None,
                                         float_nodes=_output_sigmoid_nodes(files["fp32"]))
        else:
            files[name] = litert.convert(model, "tflite-int8", calibration=calib, float_ops=float_ops,
                                         max_calibration=None)
        if name == "ptq":
            base_ops = _ops(files[name])
        print(f"  {key}: {name} converted in {time.time() - t0:.0f}s", flush=True)
    try:  # the LiteRT quantizer, where installed (pip install ai-edge-quantizer; not a medtf dependency)
        t0 = time.time()
        files["ptq_ai_edge_quantizer"] = _ai_edge_quantizer_int8(files["fp32"], calib)
        print(f"  {key}: ptq_ai_edge_quantizer converted in {time.time() - t0:.0f}s", flush=True)
    except ImportError:
        print(f"  {key}: ai-edge-quantizer not installed: attempt skipped", flush=True)
    paths = {}
    for name, flat in files.items():
        paths[name] = out_dir / f"{name}.tflite"
        paths[name].write_bytes(flat)
    rows: dict = {}
    for name, flat in files.items():  # dequantised batch-1 outputs, as medtf's parity report reads them
        p = {s: tflite_predict(paths[name], data[s][0]).reshape(len(data[s][0]), -1)[:, -1] for s in ("val", "test")}
        rows[name] = {"size_bytes": len(flat), "val_auc": _auc(y["val"], p["val"]),
                      "val_delta_auc": ref_auc["val"] - _auc(y["val"], p["val"]),
                      "auc": _auc(y["test"], p["test"]), "delta_auc": ref_auc["test"] - _auc(y["test"], p["test"]),
                      "agreement": float(((p["test"] >= thr) == (ref["test"] >= thr)).mean()),
                      "max_abs_dprob": float(np.abs(p["test"] - ref["test"]).max()),
                      "mean_abs_dprob": float(np.abs(p["test"] - ref["test"]).mean()),
                      "distinct_test_outputs": int(len(np.unique(p["test"]))), "ops": _ops(flat)}
        print(f"  {key}: {name:<20} val ΔAUC {rows[name]['val_delta_auc']:+.4f}  test ΔAUC "
              f"{rows[name]['delta_auc']:+.4f}  {len(flat) / 1e6:.2f} MB", flush=True)
    print(f"  {key}: round-robin latency, {runs} runs per file, 2 threads …", flush=True)
    lat = round_robin_latency(paths, runs)
    fp32 = rows["fp32"]
    for name, r in rows.items():
        r.update(lat[name])
        r["size_ratio"] = r["size_bytes"] / fp32["size_bytes"]
        r["latency_ratio"] = lat[name]["p50_ms"] / lat["fp32"]["p50_ms"]
    attempts = [n for n in rows if n.startswith("ptq")]
    best = min(attempts, key=lambda n: (round(rows[n]["val_delta_auc"], 3), rows[n]["p50_ms"]))
    res = {"run": rx._rel(run), "model": info.name, "config": f"recipes/pneumonia_cxr/{MODELS[key][0]}",
           "params": int(model.count_params()), "keras_val_auc": ref_auc["val"], "keras_test_auc": ref_auc["test"],
           "threshold": thr, "calibration_examples": int(len(calib)), "latency_runs": runs, "threads": 2,
           "runtime": "ai_edge_litert", "files": rows, "int8_ptq_attempts": attempts, "int8_ptq_selected": best,
           "int8_ptq_selection": "smallest validation ΔAUC (ties within 0.001: lower p50 latency)"}
    for fmt in ("fp16", "dynamic"):
        for k in ("size_ratio", "latency_ratio", "delta_auc"):
            res[f"{fmt}_{k}"] = rows[fmt][k]
    for k in ("size_ratio", "latency_ratio", "delta_auc"):
        res[f"int8_{k}"] = rows[best][k]
    res["int8_ptq_delta_auc"] = rows[best]["delta_auc"]
    res["int8_ptq_val_delta_auc"] = rows[best]["val_delta_auc"]
    res["int8_ptq_delta_auc_by_attempt"] = {n: rows[n]["delta_auc"] for n in attempts}
    res["targets"] = TARGETS
    res["targets_met"] = {k: bool(res[k] <= v) for k, v in TARGETS.items()}
    return res


def _ai_edge_quantizer_int8(fp32: bytes, calib: np.ndarray) -> bytes:
    """Full int8 by ``ai_edge_quantizer`` (recipe ``static_wi8_ai8``: int8 weights per channel, int8 activations,
    min/max calibration on ``calib``) from the fp32 flatbuffer."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    signatures = Interpreter(model_content=fp32).get_signature_list()
    key = next(iter(signatures))
    name = signatures[key]["inputs"][0]
    qt = quantizer.Quantizer(fp32, recipe.static_wi8_ai8())
    result = qt.calibrate({key: [{name: row[None]} for row in calib]}, num_threads=2)
    return bytes(qt.quantize(result).quantized_model)


def _output_sigmoid_nodes(fp32: bytes) -> tuple[str, ...]:
    """Output tensor name(s) of the last LOGISTIC of the fp32 flatbuffer: the node names the quantization debugger
    denylists (in a quantized file the output name moves to its DEQUANTIZE)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=fp32)
    tensors = it.get_tensor_details()
    last = [d for d in it._get_ops_details() if d["op_name"] == "LOGISTIC"][-1]
    return tuple(tensors[j]["name"] for j in last["outputs"])


def round_robin_latency(paths: dict, runs: int, threads: int = 2) -> dict:
    """Median batch-1 latency (ms) per file, invoking each format in turn."""
    from medtf.export.edge import load_interpreter_class

    cls, _, _ = load_interpreter_class()
    interps = {}
    for fmt, path in paths.items():
        it = cls(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
        det = it.get_input_details()[0]
        it.set_tensor(det["index"], np.zeros(det["shape"], det["dtype"]))
        for _ in range(10):
            it.invoke()
        interps[fmt] = it
    times = {fmt: [] for fmt in paths}
    for i in range(runs):
        for fmt, it in interps.items():
            t0 = time.perf_counter()
            it.invoke()
            times[fmt].append(time.perf_counter() - t0)
        if (i + 1) % max(1, runs // 5) == 0:
            print(f"  latency {i + 1}/{runs}", flush=True)
    return {fmt: {"p50_ms": float(np.median(t) * 1e3), "p90_ms": float(np.percentile(t, 90) * 1e3),
                  "min_ms": float(np.min(t) * 1e3)} for fmt, t in times.items()}


def bench_run(run: pathlib.Path, runs: int, work: pathlib.Path) -> dict:
    """Export a trained run with ``medtf export`` (fp32/fp16/dynamic/int8 + parity) and time the files."""
    from medtf.cli.main import main as medtf_main

    out = work / "export"
    argv = [str(run), "--out", str(out)]
    for fmt in ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8"):
        argv += ["--format", fmt]
    code = medtf_main(["export", *argv])
    rep = json.loads((out / "parity.json").read_text())
    exports = rep["exports"]
    lat = round_robin_latency({fmt: exports[fmt]["path"] for fmt in exports}, runs)
    fp32 = exports["tflite-fp32"]
    result = {"benchmark": "export", "subject": "run", "run": run.name, "exit_code": code,
              "test_examples": rep["examples"], "keras_test_auc": rep["reference"]["auc"],
              "latency_runs": runs, "threads": 2, "runtime": "ai_edge_litert", "formats": {}}
    for fmt, e in exports.items():
        result["formats"][fmt] = {"size_bytes": e["size_bytes"], "auc": e["export"]["auc"], "delta_auc": e["delta"],
                                  "agreement": e["agreement"], "max_abs_dprob": e["max_abs_dprob"], **lat[fmt]}
        key = fmt.replace("tflite-", "")
        result[f"{key}_size_ratio"] = e["size_bytes"] / fp32["size_bytes"]
        result[f"{key}_latency_ratio"] = lat[fmt]["p50_ms"] / lat["tflite-fp32"]["p50_ms"]
        result[f"{key}_delta_auc"] = e["delta"]
    return result


def markdown(results: dict) -> str:
    """One table per default-mode model in ``results`` (export.json): every file, with the int8 attempt used."""
    lines = []
    for key in MODELS:
        res = results.get(key)
        if not res:
            continue
        lines += [f"**{key}** (`{res['config']}`, {res['params']:,} parameters; Keras AUC val {res['keras_val_auc']:.4f}, "
                  f"test {res['keras_test_auc']:.4f}; int8 = `{res['int8_ptq_selected']}`, chosen on validation):", "",
                  "| file | size MB | size ÷ fp32 | p50 ms | latency ÷ fp32 | val ΔAUC | test ΔAUC |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in res["files"].items():
            mark = " ◀" if name == res["int8_ptq_selected"] else ""
            lines.append(f"| {name}{mark} | {r['size_bytes'] / 1e6:.2f} | {r['size_ratio']:.3f} | {r['p50_ms']:.3f} | "
                         f"{r['latency_ratio']:.3f} | {r['val_delta_auc']:+.4f} | {r['delta_auc']:+.4f} |")
        met = ", ".join(f"{k.replace('int8_', '')} {res[k]:.3f} {'≤' if ok else '>'} {TARGETS[k]}"
                        for k, ok in res["targets_met"].items())
        lines += ["", f"Targets: {met}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=None, help="benchmark this trained run folder through medtf export")
    ap.add_argument("--only", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--runs", type=int, default=200, help="latency runs per file (default 200)")
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "_work"),
                    help="folder with records/ and runs/ (benchmarks/recipes.py's; missing runs are trained)")
    ap.add_argument("--markdown", action="store_true",
                    help="print the README/docs tables of the default mode's models from export.json and exit")
    args = ap.parse_args(argv)
    out = RESULTS / "export.json"
    if args.markdown:
        print(markdown(json.loads(out.read_text())))
        return 0
    previous = json.loads(out.read_text()) if out.exists() else {}
    if args.run:
        t_start = time.time()
        work = pathlib.Path(tempfile.mkdtemp(prefix="medtf-export-bench-"))
        result = bench_run(pathlib.Path(args.run), args.runs, work)
        result["host"] = {"machine": platform.machine(), "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}
        result["targets"] = TARGETS
        result["targets_met"] = {k: bool(result[k] <= v) for k, v in TARGETS.items()}
        result["wall_s"] = round(time.time() - t_start, 1)
        result.update({k: v for k, v in previous.items() if k in MODELS})  # the default mode's models, kept
        for k in ("fp16", "dynamic", "int8"):
            print(f"{k:<8} size ÷ fp32 {result[k + '_size_ratio']:.3f}  latency ÷ fp32 {result[k + '_latency_ratio']:.3f}"
                  f"  ΔAUC {result[k + '_delta_auc']:+.4f}")
        print(f"targets met: {result['targets_met']}")
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out.relative_to(REPO)}")
        return 0 if all(result["targets_met"].values()) else 1
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        print(f"error: unknown model(s) {unknown}; choose from {list(MODELS)}", file=sys.stderr)
        return 2
    work = pathlib.Path(args.work).resolve()
    code = 0
    for key in keys:
        t0 = time.time()
        print(f"\n=== {key} ===", flush=True)
        try:
            run = ensure_run(key, work)
        except FileNotFoundError as exc:
            print(f"skipped: {exc}")
            continue
        res = bench_model(key, run, args.runs, work)
        res["wall_s"] = round(time.time() - t0, 1)
        res["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        res["host"] = {"machine": platform.machine(), "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}
        print(f"\n{key}: Keras test AUC {res['keras_test_auc']:.4f} (val {res['keras_val_auc']:.4f})")
        print(f"{'file':<22}{'MB':>7}{'size ratio':>11}{'p50 ms':>8}{'lat ratio':>10}{'val ΔAUC':>10}{'test ΔAUC':>10}")
        for name, r in res["files"].items():
            print(f"{name:<22}{r['size_bytes'] / 1e6:>7.2f}{r['size_ratio']:>11.3f}{r['p50_ms']:>8.3f}"
                  f"{r['latency_ratio']:>10.3f}{r['val_delta_auc']:>+10.4f}{r['delta_auc']:>+10.4f}")
        print(f"int8 = {res['int8_ptq_selected']} (chosen on validation); targets met: {res['targets_met']}")
        previous = json.loads(out.read_text()) if out.exists() else {}
        previous[key] = res
        out.write_text(json.dumps(previous, indent=2) + "\n")
        print(f"wrote {out.relative_to(REPO)}")
        code = code or (0 if all(res["targets_met"].values()) else 1)
    return code


if __name__ == "__main__":
    sys.exit(main())
