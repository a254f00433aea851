"""``medtf demo``: the whole toolkit on generated data, no download, a few minutes on a laptop CPU.

phantoms (DX chest X-ray DICOM, several transfer syntaxes, some MONOCHROME1) → ``tfrecord-convert``
(patient-grouped splits) → train a small CNN → evaluate (report with CIs) → full-int8 LiteRT export
with a parity check against the Keras model → edge prediction on one held-out DICOM file.

Everything runs through the library APIs (``medtf.synthetic``, ``medtf.records.convert``,
``medtf.training.train``, ``medtf.evaluation.evaluate_run``, ``medtf.export``); TensorFlow is
imported inside :func:`run_demo`, so ``medtf --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

#: Sizes of the default and the ``--quick`` demo.
PROFILES = {
    "default": {"patients": 200, "studies": 2, "size": 128, "model_size": 64, "epochs": 15, "batch_size": 4},
    "quick": {"patients": 40, "studies": 2, "size": 64, "model_size": 32, "epochs": 3, "batch_size": 4},
}
DEMO_SPLIT = "0.6,0.2,0.2"


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``demo`` to the ``medtf`` sub-parsers."""
    p = subparsers.add_parser(
        "demo",
        help="phantoms → convert → train → evaluate → int8 → edge, on generated data (minutes, no download)",
        description="Run the whole pipeline on generated chest-X-ray phantoms (DICOM): convert to records, "
        "train a small CNN, evaluate with confidence intervals, export a full-int8 LiteRT model with a "
        "parity check, and predict one DICOM file with the TensorFlow-free edge runtime. Prints the "
        "report path and a summary.",
    )
    p.add_argument("--out", default="medtf_demo", help="output folder (default ./medtf_demo); re-running replaces it")
    p.add_argument("--quick", action="store_true", help="smaller phantoms and 3 epochs (a smoke test, < 1-2 minutes)")
    p.add_argument("--patients", type=int, default=None, help="number of fake patients (2 studies each)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantoms, the split and training")
    p.set_defaults(func=main)
    return p


def _step(i: int, n: int, text: str) -> float:
    print(f"\n[{i}/{n}] {text}", flush=True)
    return time.perf_counter()


def _auc_value(auc) -> float:
    return float(auc["value"]) if isinstance(auc, dict) else float(auc)


def run_demo(out, *, quick: bool = False, patients: int | None = None, epochs: int | None = None,
             seed: int = 0, verbose: int = 1) -> dict:
    """Run the demo pipeline and write ``out/demo_summary.json``.

    Args:
        out: output folder (``phantoms/``, ``records/``, ``runs/demo/``, ``export/``); replaced pieces
            are overwritten.
        quick: the small profile (:data:`PROFILES`).
        patients: override the number of fake patients.
        epochs: override the number of training epochs.
        seed: seed of phantoms, split and training.
        verbose: 1 shows progress bars, 0 prints only the step lines.

    Returns:
        The summary dict (also written to ``out/demo_summary.json``).

    Raises:
        ValueError: bad sizes. Errors of the underlying steps propagate with their messages.
    """
    import shutil

    import numpy as np

    prof = dict(PROFILES["quick" if quick else "default"])
    if patients is not None:
        if patients < 10:
            raise ValueError(f"--patients must be >= 10 (so every split gets both classes). Received: {patients}")
        prof["patients"] = int(patients)
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"--epochs must be >= 1. Received: {epochs}")
        prof["epochs"] = int(epochs)
    out = pathlib.Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    progress = verbose > 0
    n_steps = 6
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    # 1. phantoms ------------------------------------------------------------------------------------
    t = _step(1, n_steps, f"phantoms: {prof['patients']} fake patients x {prof['studies']} DX chest X-rays "
                          f"({prof['size']} px, explicit/RLE/JPEG-LS/JPEG 2000, some MONOCHROME1)")
    from medtf.synthetic import write_cxr_phantoms

    ph_dir = out / "phantoms"
    if ph_dir.exists():
        shutil.rmtree(ph_dir)
    phantoms = write_cxr_phantoms(ph_dir, prof["patients"], prof["studies"], size=prof["size"], seed=seed,
                                  progress=progress)
    print(f"    wrote {len(phantoms)} DICOM files to {phantoms.images_dir}")
    timings["phantoms_s"] = time.perf_counter() - t

    # 2. convert -------------------------------------------------------------------------------------
    t = _step(2, n_steps, "convert: DICOM → patient-grouped TFRecords (tfrecord-convert)")
    from medtf.records.convert import ConvertConfig, convert, format_summary

    records = out / "records"
    res = convert(ConvertConfig(inputs=(str(phantoms.images_dir),), output=str(records),
                                labels=str(phantoms.labels_csv), split=DEMO_SPLIT, seed=seed, overwrite=True,
                                keep_paths=True,  # generated phantoms: no identifier in their paths
                                progress=progress))
    print("    " + format_summary(res.manifest).replace("\n", "\n    "))
    if res.manifest["counts"]["rejected_files"]:
        raise RuntimeError(f"{records}/manifest.json: {res.manifest['counts']['rejected_files']} phantom files were rejected")
    timings["convert_s"] = time.perf_counter() - t

    # 3. train ---------------------------------------------------------------------------------------
    t = _step(3, n_steps, f"train: simple_cnn, {prof['epochs']} epochs at {prof['model_size']} px (CPU float32)")
    from medtf.training.config import TrainConfig
    from medtf.training.trainer import train

    ms = prof["model_size"]
    cfg = TrainConfig.from_dict({
        "records": str(records),
        "task": "binary",
        "model": {"name": "simple_cnn", "kwargs": {"filters": [16, 32, 64], "dropout": 0.2}},
        "data": {"batch_size": prof["batch_size"], "augment": "light", "num_classes": 2,
                 "preprocessing": {"intensity": "range", "value_range": [0, 4095], "size": [ms, ms]}},
        # small batches: BatchNorm's moving statistics (momentum 0.99) need several hundred steps to settle
        "optimizer": {"learning_rate": 1e-3},
        "schedule": {"name": "cosine", "warmup_epochs": 1},
        "epochs": prof["epochs"],
        "seed": seed,
        "monitor": "val_auc",
        "output_dir": str(out / "runs"),
        "run_name": "demo",
        "tensorboard": False,
        "verbose": 1 if progress else 0,
    })
    run_dir = out / "runs" / "demo"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir = pathlib.Path(train(cfg))
    timings["train_s"] = time.perf_counter() - t

    # 4. evaluate ------------------------------------------------------------------------------------
    t = _step(4, n_steps, "evaluate: held-out test split (AUC with bootstrap CI, threshold from validation)")
    from medtf.evaluation.evaluate import evaluate_run

    report = evaluate_run(run_dir, "test", out_dir=out / "report", progress=progress)
    m = report["metrics"]
    test_auc = _auc_value(m["auc"])
    auc_ci = [m["auc"].get("ci_low"), m["auc"].get("ci_high")] if isinstance(m["auc"], dict) else None
    report_path = report.get("files", {}).get("html") or str(out / "report")
    print(f"    test AUC {test_auc:.3f} (95% CI {auc_ci[0]:.3f}-{auc_ci[1]:.3f}), accuracy {m['accuracy']:.3f} "
          f"at threshold {report['threshold']['value']:.3f}" if auc_ci else f"    test AUC {test_auc:.3f}")
    timings["evaluate_s"] = time.perf_counter() - t

    # 5. export int8 + parity ------------------------------------------------------------------------
    t = _step(5, n_steps, "export: full-int8 LiteRT model, calibrated on training images; parity vs Keras")
    import keras

    from medtf.data import build_dataset
    from medtf.export import litert, parity
    from medtf.training.run import RunInfo, load_model

    info = RunInfo.load(run_dir)
    model = load_model(run_dir)
    data_cfg = cfg.data.replace(augment="none", label_mode="binary")

    def arrays(split):
        xs, ys = [], []
        for batch in build_dataset(records, split, data_cfg, training=False, seed=seed):
            xs.append(np.asarray(batch[0]))
            ys.append(np.asarray(batch[1]))
        return np.concatenate(xs), np.concatenate(ys)

    x_cal, _ = arrays("train")
    x_test, y_test = arrays("test")
    flat = litert.convert(model, "tflite-int8", calibration=x_cal, min_calibration=min(len(x_cal), 100))
    tflite = out / "export" / "model-int8.tflite"
    litert.export_tflite(model, tflite, "tflite-int8", preprocessing=info.preprocessing.to_dict(),
                         conversion=None if info.conversion is None else info.conversion.to_dict(), task=info.task,
                         class_names=list(info.class_names), threshold=info.threshold, source_run=str(run_dir),
                         name="medtf-demo", tflite_bytes=flat)
    par = parity.parity_report(model, {"tflite-int8": tflite}, x_test, y_test, task="binary",
                               threshold=info.threshold, runs=50, progress=progress)
    from medtf.export.raw_parity import format_table as raw_table
    from medtf.export.raw_parity import raw_parity, raw_test_inputs

    # the contract on raw input: the held-out DICOM files themselves, through the chain the model carries
    par["raw"] = raw_parity(model, info, {"tflite-int8": tflite}, raw_test_inputs(records, "test", info, limit=32),
                            progress=False)
    if not par["raw"]["passed"]:
        par["passed"] = False
        par["failed"] = par["failed"] + [f"raw:{f}" for f in par["raw"]["failed"]]
    parity.write_report(par, out / "export" / "parity.json")
    print("    " + parity.format_table(par).replace("\n", "\n    "))
    print("    " + raw_table(par["raw"]).replace("\n", "\n    "))
    keras.backend.clear_session()
    timings["export_s"] = time.perf_counter() - t

    # 6. edge prediction on one DICOM ----------------------------------------------------------------
    t = _step(6, n_steps, "edge: predict one held-out DICOM file with the TensorFlow-free runtime")
    from medtf.export.edge import predict_files

    test_files = [f["path"] for f in res.manifest["files"] if f.get("split") == "test"]
    pick = sorted(test_files)[0]
    dicom_path = phantoms.images_dir / pick
    truth = phantoms.labels[pick]
    pred = predict_files(tflite, [dicom_path], threads=2)[0]
    if "error" in pred:
        raise RuntimeError(f"edge prediction failed on {dicom_path}: {pred['error']}")
    photometric = next(it["photometric"] for it in phantoms.items if it["path"] == pick)
    print(f"    {pick} ({photometric}): P(opacity) = {pred['probability']:.3f} → prediction {pred['prediction']} "
          f"(truth {truth})")
    timings["edge_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_all

    summary = {
        "out": str(out),
        "report": report_path,
        "run": str(run_dir),
        "records": str(records),
        "tflite_int8": str(tflite),
        "profile": "quick" if quick else "default",
        "phantoms": {"files": len(phantoms), "patients": len(phantoms.patients), "size": prof["size"]},
        "splits": {k: v["examples"] for k, v in res.manifest["splits"].items()},
        "test": {"auc": test_auc, "auc_ci": auc_ci, "accuracy": float(m["accuracy"]),
                 "threshold": report["threshold"]["value"], "n": int(report["n"])},
        "int8_parity": _parity_summary(par),
        "edge_prediction": {"file": pick, "photometric": photometric, "probability": pred["probability"],
                            "prediction": pred["prediction"], "truth": truth},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _parity_summary(report: dict) -> dict:
    """The int8 line of a ``medtf.export.parity`` report."""
    e = report["exports"]["tflite-int8"]
    key = report["metric"]
    return {
        "keras_auc": float(report["reference"][key]),
        "int8_auc": float(e["export"][key]),
        "delta_auc": float(e["delta"]),
        "agreement": float(e["agreement"]),
        "max_abs_dprob": float(e["max_abs_dprob"]),
        "size_kb": round(e["size_bytes"] / 1024, 1),
        "latency_ms_p50": e.get("latency_ms"),
        "passed_gate": bool(e["passed"]),
        "raw_parity_passed": bool((report.get("raw") or {}).get("passed", True)),
    }


def main(args: argparse.Namespace) -> int:
    """``medtf demo``: exit 0 on success, 1 when a parity gate fails, 2 for bad arguments, 3 when a step fails."""
    try:
        s = run_demo(args.out, quick=args.quick, patients=args.patients, epochs=args.epochs, seed=args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - report the failing step and exit 3
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    t = s["test"]
    print("\n" + "=" * 72)
    print(f"medtf demo finished in {s['timings_s']['total_s']:.0f} s")
    print(f"  report:        {s['report']}")
    print(f"  test split:    n={t['n']}  AUC {t['auc']:.3f}  accuracy {t['accuracy']:.3f}")
    p = s["int8_parity"]
    print(f"  int8 LiteRT:   {s['tflite_int8']} ({p['size_kb']:.0f} KB): AUC {p['int8_auc']:.3f} vs Keras "
          f"{p['keras_auc']:.3f} (delta {p['delta_auc']:+.4f}), agreement {p['agreement']:.3f}")
    e = s["edge_prediction"]
    print(f"  edge (DICOM):  {e['file']} → P={e['probability']:.3f}, prediction {e['prediction']}, truth {e['truth']}")
    print(f"  summary:       {pathlib.Path(s['out']) / 'demo_summary.json'}")
    if not (p["passed_gate"] and p["raw_parity_passed"]):
        print("medtf demo: the int8 parity gate failed (see export/parity.json); exit code 1", file=sys.stderr)
        return 1
    return 0
