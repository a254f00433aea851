"""``medtf export RUN --format ...``: SavedModel / TFLite / ONNX exports with a parity gate.

Every requested format that can be exported is exported and checked; one that cannot is named with the
reason and the fix. Exit codes: 0 every format exported and passed its gates (records and raw input); 1 a
gate failed (QAT suggested) or some formats could not be exported; 2 usage; 3 no format could be exported.
"""

from __future__ import annotations

import pathlib
import sys

FORMAT_CHOICES = ("savedmodel", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx", "all")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained run to SavedModel (TF Serving) / LiteRT / ONNX and check parity",
        description="Export RUN (a folder written by `medtf train`) and evaluate every artifact on the test "
                    "split against the Keras model; exits 1 when a parity gate is exceeded.",
    )
    p.add_argument("run", help="run folder (model.keras + model.json + config.yaml)")
    p.add_argument("--format", action="append", choices=FORMAT_CHOICES, default=None,
                   help="export format (repeatable); default: all = savedmodel and the four tflite formats "
                        "(onnx, for ONNX Runtime / TensorRT, only when asked for; needs medtf[onnx])")
    p.add_argument("--out", default=None, help="output folder (default RUN/export)")
    p.add_argument("--qat", action="store_true", help="int8 via quantization-aware training (tf-keras + tfmot)")
    p.add_argument("--prune", type=float, default=None, metavar="SPARSITY",
                   help="prune to this sparsity while fine-tuning (0-1), then convert")
    p.add_argument("--qat-epochs", type=int, default=None, help="fine-tuning epochs (default: the run config's)")
    p.add_argument("--target", choices=("ai-edge-litert", "tflite-runtime-2.14"), default="ai-edge-litert",
                   help="runtime the TFLite files must run on")
    p.add_argument("--io", choices=("int8", "uint8", "float32"), default="int8", help="int8 model I/O type")
    p.add_argument("--calibration-examples", type=int, default=500, help="int8 calibration examples (>= 200)")
    p.add_argument("--int8-float-ops", default=None, metavar="OPS",
                   help="comma-separated TFLite ops kept in float32 in the int8 file (selective PTQ), e.g. LOGISTIC "
                        "(the output sigmoid: probabilities without 1/256 steps) or LOGISTIC,MUL,MEAN (EfficientNet's "
                        "swish and squeeze-excitation); the file then has float32 I/O. See docs/export.md")
    p.add_argument("--calibration-split", default=None,
                   help="records split the int8 calibration (and QAT) examples come from (default: the run's train split)")
    p.add_argument("--gate", default=None, help="parity gates, e.g. 'int8=0.01,fp16=0.001' (max metric drop)")
    p.add_argument("--no-parity", action="store_true", help="skip the parity evaluation (and the gate)")
    p.add_argument("--max-test", type=int, default=None, help="evaluate on at most this many test examples")
    p.add_argument("--name", default=None, help="served model name (default: the run folder name)")
    p.add_argument("--version", type=int, default=1, help="SavedModel version folder")
    p.add_argument("--onnx-opset", type=int, default=None,
                   help="ONNX opset of the onnx format (default 17; TensorRT 8.6 parses up to 17)")
    p.add_argument("--profile", default=None,
                   help="deployment profile YAML (export/profiles/*.yaml); explicit options win")
    p.add_argument("--data", default=None,
                   help="npz with preprocessed x_train/y_train/x_test/y_test instead of the run's records")
    p.add_argument("--input-root", action="append", default=None, metavar="DIR",
                   help="folder the records' source files are under, for raw-input parity (repeatable; default: "
                        "the folders given to tfrecord-convert, from the manifest)")
    p.add_argument("--raw-max", type=int, default=64,
                   help="test source files checked by raw-input parity (default 64; 0 skips it)")
    p.set_defaults(func=run)


def _arrays_from_dataset(ds, limit: int | None):
    import numpy as np

    xs, ys, n = [], [], 0
    for batch in ds:
        x, y = batch[0], batch[1]
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
        n += len(xs[-1])
        if limit is not None and n >= limit:
            break
    if not xs:
        return None, None
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x[:limit], y[:limit]) if limit else (x, y)


def _load_data(run_dir: pathlib.Path, args, n_train: int):
    """(x_train, y_train, x_test, y_test, epochs) from --data or the run's records pipeline."""
    import numpy as np

    if args.data:
        d = np.load(args.data)
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in d]
        if missing:
            raise ValueError(f"--data {args.data}: missing arrays {missing} (expected x_train, y_train, x_test, y_test)")
        return d["x_train"][:n_train], d["y_train"][:n_train], d["x_test"], d["y_test"], None
    from medtf.data import build_dataset
    from medtf.training.config import load_config

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: no config.yaml; pass --data NPZ with preprocessed arrays")
    cfg = load_config(cfg_path)
    records = pathlib.Path(cfg.records)
    if not records.is_absolute() and not records.exists():
        records = run_dir / records
    cal_split = getattr(args, "calibration_split", None) or cfg.train_split
    xt, yt = _arrays_from_dataset(build_dataset(records, cal_split, cfg.data, training=False, seed=cfg.seed),
                                  n_train)
    xs, ys = _arrays_from_dataset(build_dataset(records, cfg.test_split, cfg.data, training=False, seed=cfg.seed),
                                  args.max_test)
    return xt, yt, xs, ys, cfg.epochs


def _targets(task: str, y, n_out: int):
    """Targets shaped like the model output for QAT fine-tuning."""
    import numpy as np

    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == n_out:
        return y.astype("float32")
    y = y.reshape(len(y)).astype(int)
    if task == "multiclass":
        return np.eye(n_out, dtype="float32")[y]
    if task == "ordinal":
        return (y[:, None] > np.arange(n_out)[None]).astype("float32")
    return y[:, None].astype("float32")


def _export_one(fmt, model, out, name, args, info, calibration, common, export_saved_model, litert, artifacts):
    """Export one format into ``artifacts`` (raises on failure; the caller records it)."""
    if fmt == "savedmodel":
        artifacts[fmt] = export_saved_model(model, out / "savedmodel", preprocessing=info.chain, name=name,
                                            version=args.version,
                                            metadata={"task": info.task, "class_names": list(info.class_names),
                                                      "threshold": info.threshold,
                                                      "source": {"run": str(common["source_run"])}})
        return
    if fmt == "onnx":
        from medtf.export import onnx as onnx_export

        path = out / f"{name}.onnx"
        onnx_export.export_onnx(model, path, opset=args.onnx_opset or onnx_export.DEFAULT_OPSET, **common)
        artifacts[fmt] = path
        return
    path = out / f"{name}_{fmt.replace('tflite-', '')}.tflite"
    float_ops = tuple(args.int8_float_ops or ()) if fmt == "tflite-int8" else ()
    litert.export_tflite(model, path, fmt, calibration=calibration, io_dtype=args.io, target=args.target,
                         float_ops=float_ops, **common)
    artifacts[fmt] = path


def _raw_parity(run_dir: pathlib.Path, info, model, artifacts: dict, args) -> dict | None:
    """Raw-input parity on the test split's source files (None when skipped)."""
    if args.raw_max == 0 or args.data or info.task == "restoration":
        return None
    from medtf.export.raw_parity import raw_parity, raw_test_inputs
    from medtf.training.config import load_config

    cfg = load_config(run_dir / "config.yaml")
    records = pathlib.Path(cfg.records)
    if not records.is_absolute() and not records.exists():
        records = run_dir / records
    raw = raw_test_inputs(records, cfg.test_split, info, input_roots=args.input_root, limit=args.raw_max)
    return raw_parity(model, info, artifacts, raw)


def _gate_detail(fmt: str, entry: dict, gates: dict) -> str:
    """``fmt: delta=+0.0123 > 0.01`` (and the max |Δprob| bound where the format has one and exceeds it)."""
    text = f"{fmt}: delta={entry['delta']:+.4f} > {gates.get(fmt)}"
    bound = entry.get("max_abs_dprob_gate")
    if bound is not None and entry["max_abs_dprob"] > bound:
        text = f"{fmt}: max|Δprob|={entry['max_abs_dprob']:.2e} > {bound:g}"
    return text


PROFILE_KEYS = {"formats": "format", "target": "target", "io": "io", "calibration_examples": "calibration_examples",
                "gate": "gate", "qat": "qat", "prune": "prune", "qat_epochs": "qat_epochs", "version": "version",
                "name": "name"}
_DEFAULTS = {"format": None, "target": "ai-edge-litert", "io": "int8", "calibration_examples": 500, "gate": None,
             "qat": False, "prune": None, "qat_epochs": None, "version": 1, "name": None}


def apply_profile(args, path) -> None:
    """Fill options still at their defaults from a deployment profile YAML.

    Raises:
        FileNotFoundError: no such profile.
        ValueError: unknown keys or values (message names the file and the key).
    """
    import yaml

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--profile {path}: no such file")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"--profile {path}: expected a mapping of options")
    unknown = sorted(set(doc) - set(PROFILE_KEYS))
    if unknown:
        raise ValueError(f"--profile {path}: unknown keys {unknown}; expected some of {sorted(PROFILE_KEYS)}")
    for key, value in doc.items():
        dest = PROFILE_KEYS[key]
        if key == "formats":
            value = [value] if isinstance(value, str) else list(value)
            bad = [f for f in value if f not in FORMAT_CHOICES]
            if bad:
                raise ValueError(f"--profile {path}: formats {bad} not in {list(FORMAT_CHOICES)}")
        if getattr(args, dest) == _DEFAULTS[dest]:
            setattr(args, dest, value)


def run(args) -> int:
    from medtf.cli.main import EXIT_CHECK_FAILED, EXIT_FAILED, EXIT_OK, EXIT_USAGE

    if args.profile:
        try:
            apply_profile(args, args.profile)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    run_dir = pathlib.Path(args.run)
    formats = args.format or ["all"]
    if "all" in formats:
        formats = ["savedmodel", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8"]
        if args.target == "tflite-runtime-2.14":
            print("note: tflite-dynamic skipped for --target tflite-runtime-2.14 (its kernels are missing there)")
            formats.remove("tflite-dynamic")
    if args.prune is not None and not 0 < args.prune < 1:
        print(f"error: --prune must be in (0, 1). Received: {args.prune}", file=sys.stderr)
        return EXIT_USAGE
    if args.int8_float_ops:
        from medtf.export.litert import parse_float_ops

        try:
            args.int8_float_ops = parse_float_ops(args.int8_float_ops)
        except ValueError as exc:
            print(f"error: --int8-float-ops: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.calibration_examples < 200:
        print(f"error: --calibration-examples must be >= 200. Received: {args.calibration_examples}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from medtf.export import litert, parity
        from medtf.export.saved_model import export_saved_model
        from medtf.training.run import RunInfo, load_model

        gates = parity.parse_gates(args.gate)
        info = RunInfo.load(run_dir)
        model = load_model(run_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for fmt in formats:
        if fmt != "savedmodel" and (args.target, fmt) in litert.INCOMPATIBLE:
            print(f"error: {fmt} cannot run on {args.target}: {litert.INCOMPATIBLE[(args.target, fmt)]}",
                  file=sys.stderr)
            return EXIT_USAGE
    out = pathlib.Path(args.out) if args.out else run_dir / "export"
    name = args.name or run_dir.resolve().name
    try:
        need_train = any(f == "tflite-int8" for f in formats) or args.qat or args.prune is not None
        n_train = max(args.calibration_examples, 2000 if (args.qat or args.prune) else 0)
        x_train = y_train = x_test = y_test = None
        epochs = None
        if need_train or not args.no_parity:
            x_train, y_train, x_test, y_test, epochs = _load_data(run_dir, args, n_train if need_train else 1)
        calibration = None if x_train is None else x_train[: args.calibration_examples]
        from medtf.export.metadata import sha256_file

        model_file = run_dir / "model.keras"
        conversion = None if info.conversion is None else info.conversion.to_dict()
        common = dict(preprocessing=info.preprocessing.to_dict(), conversion=conversion, task=info.task, class_names=list(info.class_names),
                      threshold=info.threshold, source_run=str(run_dir), name=name,
                      source_sha256=sha256_file(model_file) if model_file.is_file() else None)
        artifacts: dict[str, pathlib.Path] = {}
        failures: dict[str, str] = {}
        n_cal = 0 if x_train is None else len(x_train)
        cal_name = args.calibration_split or "train"
        for fmt in formats:
            if fmt == "tflite-int8" and n_cal < litert.MIN_CALIBRATION:
                failures[fmt] = (f"int8 needs >= {litert.MIN_CALIBRATION} calibration examples; the {cal_name} split "
                                 f"has {n_cal}: use --calibration-split SPLIT or more data")
                continue
            print(f"exporting {fmt} …", flush=True)
            try:
                _export_one(fmt, model, out, name, args, info, calibration, common, export_saved_model, litert,
                            artifacts)
            except Exception as exc:  # noqa: BLE001 - the other formats still export
                failures[fmt] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                continue
        if (args.qat or args.prune is not None) and n_cal < litert.MIN_CALIBRATION:
            failures["qat" if args.qat else "pruned"] = (
                f"QAT/pruning needs >= {litert.MIN_CALIBRATION} training examples; the {cal_name} split has {n_cal}")
        elif args.qat or args.prune is not None:
            from medtf.export import qat

            n_out = int(model.outputs[0].shape[-1])
            ep = args.qat_epochs or epochs or 1
            kw = dict(x_train=x_train, y_train=_targets(info.task, y_train, n_out), calibration=calibration,
                      task=info.task, epochs=ep, io_dtype=args.io, metadata={**common, "target": args.target})
            if args.qat:
                key = "tflite-int8-qat" if args.prune is None else "tflite-int8-pqat"
                path = out / f"{name}_{key.replace('tflite-', '')}.tflite"
                print(f"quantization-aware training for {ep} epoch(s) …", flush=True)
                summary = qat.quantization_aware_int8(model, path, prune=args.prune, **kw)
            else:
                key = "tflite-pruned"
                path = out / f"{name}_pruned.tflite"
                print(f"pruning to {args.prune:.0%} over {ep} epoch(s) …", flush=True)
                summary = qat.prune(model, path, args.prune, **kw)
            if summary.get("sparsity_achieved") is not None:
                print(f"achieved sparsity {summary['sparsity_achieved']:.3f}")
            artifacts[key] = path
            gates.setdefault(key, gates["tflite-int8"])
    except Exception as exc:  # noqa: BLE001 - report and exit 3
        print(f"error: export failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for fmt, path in artifacts.items():
        print(f"  {fmt:<18} {path}")
    for fmt, why in failures.items():
        print(f"  {fmt:<18} NOT exported: {why}", file=sys.stderr)
    if not artifacts:
        print("error: no format could be exported", file=sys.stderr)
        return EXIT_FAILED
    partial = EXIT_CHECK_FAILED if failures else EXIT_OK
    if args.no_parity:
        return partial
    if x_test is None or not len(x_test):
        print("error: no test examples for the parity check (use --no-parity to skip)", file=sys.stderr)
        return EXIT_FAILED
    if info.task == "restoration":
        print("note: parity metrics are not defined for restoration; skipping the gate")
        return partial
    report = parity.parity_report(model, artifacts, x_test, y_test, task=info.task, threshold=info.threshold,
                                  gates=gates, reference_size_path=run_dir / "model.keras")
    try:
        raw = _raw_parity(run_dir, info, model, artifacts, args)
    except Exception as exc:  # noqa: BLE001 - the exports exist; the check could not run
        raw = {"examples": 0, "passed": False, "failed": ["raw-input"], "exports": {},
               "note": f"raw-input parity could not run: {type(exc).__name__}: {exc}"}
    if raw is not None:
        report["raw"] = raw
        if not raw["passed"]:
            report["failed"] = report["failed"] + [f"raw:{f}" for f in raw["failed"]]
            report["passed"] = False
    parity.write_report(report, out / "parity.json")
    print(parity.format_table(report))
    if raw is not None:
        from medtf.export.raw_parity import format_table as raw_table

        print(raw_table(raw))
    print(f"wrote {out / 'parity.json'}")
    if raw is not None and not raw["passed"]:
        print(f"raw-input parity failed for {', '.join(raw['failed'])}: on the raw source files these artifacts "
              "do not return what they return on the records — the stored preprocessing does not reproduce the "
              "conversion (see parity.json 'raw')", file=sys.stderr)
        return EXIT_CHECK_FAILED
    if not report["passed"] and report["failed"]:
        details = ", ".join(_gate_detail(f, report["exports"][f], gates) for f in report["failed"])
        hint = ("Try `--qat` (quantization-aware training) or a float format."
                if any(f != "onnx" for f in report["failed"]) else
                "An fp32 ONNX graph must give the Keras numbers: an op converts wrongly (see docs/export.md, ONNX).")
        print(f"parity gate exceeded for {', '.join(report['failed'])}: the export loses more than allowed "
              f"({details}). {hint}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    if failures:
        report["not_exported"] = failures
        parity.write_report(report, out / "parity.json")
    return partial
