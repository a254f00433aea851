"""Benchmark: the disease recipes end to end on real public data, against published / in-run baselines.

Each recipe runs with its default ``recipes/<name>/config.yaml`` through the library (convert or a
``data_tools`` preparer → ``medtf.training.train`` → ``medtf.evaluation.evaluate_run`` / the recipe's
metric) and writes its numbers into ``benchmarks/results/recipes.json`` (entries of recipes not run
are kept, so recipes can be run one at a time). The printed ratio is measured / baseline, where the
baseline is the published number (MedMNIST v2 table, see recipes/README.md) or, for CT denoising,
OpenCV non-local means measured in the same run on the same held-out slices.

    python benchmarks/recipes.py [--quick] [--only pneumonia_cxr,adrenal_3d] [--work benchmarks/_work]

``--quick`` trains 1 epoch (a smoke test of the wiring; its numbers are not results and are written to
``recipes_quick.json``). Real data is read from ``$MEDTF_SHARED_DATA`` or ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "data_tools"))

SHARED = pathlib.Path(os.environ.get("MEDTF_SHARED_DATA", REPO.parent / "shared" / "data"))

#: Published reference numbers (MedMNIST v2, Yang et al., Scientific Data 2023, test split).
PUBLISHED = {
    "pneumonia_cxr": {"ResNet-18 (28)": {"auc": 0.944, "acc": 0.854}, "Google AutoML Vision": {"auc": 0.991, "acc": 0.946}},
    "diabetic_retinopathy": {"ResNet-18 (28)": {"auc": 0.717, "acc": 0.524}, "Google AutoML Vision": {"auc": 0.750, "acc": 0.531}},
    "adrenal_3d": {"ResNet-50 + 3D": {"auc": 0.828, "acc": 0.745}},
}
#: Acceptance targets of the recipes (issue 7).
TARGETS = {
    "pneumonia_cxr": {"test_auc": 0.97, "test_accuracy": 0.90},
    "pneumonia_cxr_efficientnet": {"test_auc": 0.97, "test_accuracy": 0.90},
    "pneumonia_cxr_efficientnet_lite": {"test_auc": 0.97, "test_accuracy": 0.90},
    "diabetic_retinopathy": {"test_auc": 0.75, "test_accuracy": 0.53},
    "diabetic_retinopathy_multiscale": {"test_auc": 0.75, "test_accuracy": 0.53},
    "adrenal_3d": {"test_auc": 0.85, "test_accuracy": 0.80},
    "em_membrane": {"test_dice": 0.85},
    "brain_tumor_mri": {"whole_tumor_dice": 0.80},
    "ct_denoising": {"psnr_gain_vs_nlm_db": 0.0},
}


class Ctx:
    def __init__(self, work: pathlib.Path, quick: bool, reuse: bool = False, seed: int | None = None):
        self.work = work
        self.quick = quick
        self.reuse = reuse
        self.seed = seed  # --seeds: this run's training seed (run folders get a _s<seed> suffix)

    def run_name(self, name: str) -> str:
        return name if self.seed is None else f"{name}_s{self.seed}"

    def overrides(self, name: str, extra=()) -> list[str]:
        o = [f"output_dir={self.work / 'runs'}", f"run_name={self.run_name(name)}", "verbose=2", "tensorboard=false"]
        if self.quick:
            o += ["epochs=1"]
        if self.seed is not None:
            o += [f"seed={self.seed}"]
        extra = [f"run_name={self.run_name(e.split('=', 1)[1])}" if e.startswith("run_name=") else e for e in extra]
        return o + extra


def aggregate_seeds(runs: dict[int, dict]) -> dict:
    """One recipe row from several seeded runs: every number that all runs report becomes the mean under its
    own key, with ``<key>_std`` (sample sd, ddof=1) and ``<key>_per_seed`` beside it; ``seeds`` lists the
    seeds and ``per_seed`` keeps each run's full result. One run's confidence interval (``*_ci``) says nothing
    about the mean, so it stays in ``per_seed`` only; other non-numeric values come from the first seed."""
    import statistics

    seeds = sorted(runs)
    first = runs[seeds[0]]
    row: dict = {"seeds": seeds, "per_seed": {str(s): runs[s] for s in seeds}}
    for key, value in first.items():
        values = [runs[s].get(key) for s in seeds]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            row[key] = float(statistics.fmean(values))
            row[f"{key}_std"] = float(statistics.stdev(values)) if len(values) > 1 else 0.0
            row[f"{key}_per_seed"] = [float(v) for v in values]
        elif key not in row and not key.endswith("_ci"):
            row[key] = value
    return row



def _rel(path):
    """A path relative to the repository when inside it (results files never hold machine paths)."""
    if path is None:
        return None
    p = pathlib.Path(path).resolve()
    try:
        return p.relative_to(pathlib.Path(__file__).resolve().parents[1]).as_posix()
    except ValueError:
        return p.name

def _shared(name: str) -> pathlib.Path:
    p = SHARED / name
    if not p.exists():
        raise FileNotFoundError(f"real data {name!r} not found at {p} (set MEDTF_SHARED_DATA)")
    return p


def _auc(v) -> float:
    return float(v["value"]) if isinstance(v, dict) else float(v)


def _medmnist_records(name: str, work: pathlib.Path) -> pathlib.Path:
    """``work/records/<name>``: ``../shared/data/<name>/<name>.npz`` converted once (the npz's own splits)."""
    from medtf.records.convert import ConvertConfig, convert

    src, out = _shared(name) / f"{name}.npz", work / "records" / name
    if not (out / "manifest.json").exists():
        res = convert(ConvertConfig(inputs=(str(src),), output=str(out), split="input", overwrite=True, progress=False))
        if res.exit_code != 0:
            raise RuntimeError(f"converting {src} failed (exit {res.exit_code})")
    return out


def _train(recipe: str, ctx: Ctx, records: pathlib.Path, extra=(), config_name: str = "config.yaml") -> pathlib.Path:
    from medtf.training.config import load_config
    from medtf.training.trainer import train

    cfg = load_config(REPO / "recipes" / recipe / config_name,
                      [f"records={records}", *ctx.overrides(recipe, extra)])
    run = pathlib.Path(cfg.output_dir) / cfg.run_name  # a fresh run every time
    if run.exists():
        import shutil

        shutil.rmtree(run)
    if cfg.folds and int(cfg.folds) >= 2:  # K-fold on train+val, fold ensemble on test (folds.json)
        from medtf.training.folds import train_folds

        return pathlib.Path(train_folds(cfg)).parent
    return pathlib.Path(train(cfg))


def _trained_or_train(recipe: str, ctx: Ctx, records: pathlib.Path, *, name: str | None = None,
                      config_name: str = "config.yaml") -> tuple[pathlib.Path, float]:
    """``(run, train_minutes)``. With ``--reuse``, the finished run ``name`` (default: the recipe) in ``--work``
    (model.keras + model.json, no resume backup left), its minutes taken from the run's own span (resolved config
    written at its start, history.csv after its last epoch); otherwise a fresh :func:`_train`."""
    name = name or recipe
    run = ctx.work / "runs" / ctx.run_name(name)
    done = (run / "model.keras").is_file() and (run / "model.json").is_file() and not (run / "checkpoints" / "backup").exists()
    if ctx.reuse and done:
        print(f"--reuse: evaluating the trained run {_rel(run)}", flush=True)
        return run, ((run / "history.csv").stat().st_mtime - (run / "config.yaml").stat().st_mtime) / 60
    t0 = time.perf_counter()
    run = _train(recipe, ctx, records, extra=[f"run_name={name}"], config_name=config_name)
    return run, (time.perf_counter() - t0) / 60


def _fold_ensemble_report(run: pathlib.Path) -> dict:
    """Test metrics of a K-fold run's ensemble (mean probability), with the same metric code and bootstrap
    CIs as ``evaluate_run``."""
    import numpy as np

    from medtf.evaluation.evaluate import evaluate_predictions
    from medtf.training.run import RunInfo

    info = RunInfo.load(run / "folds" / "fold0")
    pred = np.load(run / "test_predictions.npz")
    rep = evaluate_predictions(pred["y_true"], pred["ensemble"], info.task, class_names=list(info.class_names))
    folds = json.loads((run / "folds.json").read_text())
    rep["n"] = int(len(pred["y_true"]))
    rep["folds"] = {"k": folds["k"], "per_fold_test": folds["ensemble"]["fold_metrics"]}
    return rep


def _arrays(records, split, run_dir):
    """Preprocessed (x, y) of a split exactly as the run's data config builds them (no augmentation)."""
    import numpy as np

    from medtf.data import DataConfig, build_dataset
    from medtf.training.run import RunInfo

    info = RunInfo.load(run_dir)
    cfg = DataConfig.from_dict(dict(info.data)).replace(augment="none", class_balance=None, cache=None,
                                                         repeat=False, patch=None)
    xs, ys = [], []
    for b in build_dataset(records, split, cfg, training=False, seed=0):
        xs.append(np.asarray(b[0]))
        ys.append(np.asarray(b[1]))
    return np.concatenate(xs), np.concatenate(ys)


def _classification(recipe: str, ctx: Ctx, records: pathlib.Path, *, int8: bool = False, name: str | None = None,
                    config_name: str = "config.yaml", tta: str | None = None) -> dict:
    """Train ``recipes/<recipe>/<config_name>`` as run ``name`` (default: the recipe) and evaluate on test
    (``medtf evaluate --tta TTA`` when given; the plain evaluation is recorded beside it)."""
    from medtf.evaluation.evaluate import evaluate_run

    name = name or recipe
    run, train_min = _trained_or_train(recipe, ctx, records, name=name, config_name=config_name)
    plain = None
    if (run / "folds.json").exists():
        rep = _fold_ensemble_report(run)
    else:
        rep = evaluate_run(run, "test", tta=tta, out_dir=ctx.work / "reports" / name, progress=False)
        if tta:
            plain = evaluate_run(run, "test", write=False, progress=False)["metrics"]
    m = rep["metrics"]
    out = {"test_auc": _auc(m["auc"]), "test_accuracy": float(m["accuracy"]), "n_test": int(rep["n"]),
           "train_minutes": round(train_min, 2), "run": _rel(run), "report": _rel(rep.get("files", {}).get("html"))}
    if plain is not None:
        out.update(tta=tta, test_auc_no_tta=_auc(plain["auc"]), test_accuracy_no_tta=float(plain["accuracy"]))
        if "kappa_quadratic" in plain:
            out["test_kappa_no_tta"] = float(plain["kappa_quadratic"])
    if "folds" in rep:
        out["folds"] = rep["folds"]
    if isinstance(m["auc"], dict):
        out["test_auc_ci"] = [m["auc"].get("ci_low"), m["auc"].get("ci_high")]
    if "kappa_quadratic" in m:
        out["test_kappa"] = float(m["kappa_quadratic"])
    if rep.get("threshold") and isinstance(rep["threshold"], dict) and rep["threshold"].get("value") is not None:
        out["threshold"] = float(rep["threshold"]["value"])
    if int8:
        out.update(_int8_parity(run, records, ctx, recipe))
    return out


def _int8_parity(run, records, ctx: Ctx, recipe: str) -> dict:
    from medtf.export import litert, parity
    from medtf.training.run import RunInfo, load_model

    info = RunInfo.load(run)
    model = load_model(run)
    x_cal, _ = _arrays(records, "train", run)
    x_test, y_test = _arrays(records, "test", run)
    path = ctx.work / "export" / recipe / "model-int8.tflite"
    flat = litert.convert(model, "tflite-int8", calibration=x_cal[:1000])
    litert.export_tflite(model, path, "tflite-int8", preprocessing=info.preprocessing.to_dict(), task=info.task,
                         class_names=list(info.class_names), threshold=info.threshold, tflite_bytes=flat)
    rep = parity.parity_report(model, {"tflite-int8": path}, x_test, y_test, task=info.task, threshold=info.threshold,
                               runs=50, progress=False)
    parity.write_report(rep, path.with_suffix(".parity.json"))
    e = rep["exports"]["tflite-int8"]
    return {"keras_auc_parity": float(rep["reference"]["auc"]), "int8_auc": float(e["export"]["auc"]),
            "int8_delta_auc": float(rep["reference"]["auc"]) - float(e["export"]["auc"]),
            "int8_agreement": float(e["agreement"]), "int8_size_kb": round(e["size_bytes"] / 1024, 1)}


# ---------------------------------------------------------------------------------------------- recipes


def pneumonia_cxr(ctx: Ctx) -> dict:
    rec = _medmnist_records("pneumoniamnist", ctx.work)
    return _classification("pneumonia_cxr", ctx, rec, int8=True, config_name="compact.yaml")


def pneumonia_cxr_efficientnet(ctx: Ctx) -> dict:
    """The recipe's default, the card's classifier: ``recipes/pneumonia_cxr/config.yaml`` (EfficientNet-B0
    from scratch, 64 px grey)."""
    rec = _medmnist_records("pneumoniamnist", ctx.work)
    return _classification("pneumonia_cxr", ctx, rec, name="pneumonia_cxr_efficientnet", config_name="config.yaml")


def pneumonia_cxr_efficientnet_lite(ctx: Ctx) -> dict:
    """EfficientNet-B0 in its Lite form (``recipes/pneumonia_cxr/efficientnet_lite.yaml``: ReLU6, no
    squeeze-excitation), the form that keeps its AUC under full-int8 PTQ (benchmarks/export.py)."""
    rec = _medmnist_records("pneumoniamnist", ctx.work)
    return _classification("pneumonia_cxr", ctx, rec, name="pneumonia_cxr_efficientnet_lite",
                           config_name="efficientnet_lite.yaml")


def diabetic_retinopathy(ctx: Ctx) -> dict:
    rec = _medmnist_records("retinamnist", ctx.work)
    return _classification("diabetic_retinopathy", ctx, rec, tta="dihedral")


def diabetic_retinopathy_multiscale(ctx: Ctx) -> dict:
    """Two-scale Xception (recipes/diabetic_retinopathy/multiscale.yaml: 74 px + 37 px branches), evaluated like
    the single-scale row (dihedral TTA, plain evaluation beside it)."""
    from medtf.training.config import load_config

    rec = _medmnist_records("retinamnist", ctx.work)
    cfg = load_config(REPO / "recipes" / "diabetic_retinopathy" / "multiscale.yaml")
    out = _classification("diabetic_retinopathy", ctx, rec, name="diabetic_retinopathy_multiscale",
                          config_name="multiscale.yaml", tta="dihedral")
    out.update(scales=list(cfg.model.kwargs["scales"]), input_size=list(cfg.data.preprocessing.size),
               epochs=1 if ctx.quick else int(cfg.epochs))
    return out


def adrenal_3d(ctx: Ctx) -> dict:
    """The lung_nodule_ct recipe's model on the published 3D benchmark (recipes/lung_nodule_ct/adrenal_3d.yaml)."""
    rec = _medmnist_records("adrenalmnist3d", ctx.work)
    return _classification("lung_nodule_ct", ctx, rec, name="adrenal_3d", config_name="adrenal_3d.yaml")


def _dice(p, t) -> float:
    import numpy as np

    p, t = np.asarray(p, bool), np.asarray(t, bool)
    s = p.sum() + t.sum()
    return 1.0 if s == 0 else float(2 * np.logical_and(p, t).sum() / s)


#: membrane-probability thresholds searched on the validation slices (argmax of two softmax classes = 0.5)
EM_THRESHOLDS = tuple(round(0.30 + 0.02 * i, 2) for i in range(21))


def em_membrane(ctx: Ctx) -> dict:
    """``test_dice``: pooled membrane Dice of the argmax on the test slices 24-29. Beside it (``*_selected``):
    the test-time augmentation (none, flip or dihedral, ``medtf.evaluation.tta_predict``) and membrane
    threshold with the best pooled Dice on the validation slices 21-23, applied to the test slices. Records:
    the recipe's ``tfrecord-convert --masks`` command (splits from ``recipes/em_membrane/splits.csv``)."""
    import numpy as np

    from medtf.evaluation.evaluate import tta_predict
    from medtf.training.run import load_model

    src = _shared("isbi2012_em_membrane") / "train"
    rec = _convert([src / "image"], ctx.work / "records" / "isbi2012", masks=str(src / "label"),
                   mask_map=((0, 1), (255, 0)), labels=str(REPO / "recipes" / "em_membrane" / "splits.csv"),
                   split="input", tile=(256, 256))
    run, train_min = _trained_or_train("em_membrane", ctx, rec)
    model = load_model(run)

    arrays = {split: _arrays(rec, split, run) for split in ("val", "test")}  # read each split once

    def membrane_prob(split, tta):
        x, y = arrays[split]
        prob = np.stack([tta_predict(model.predict_on_batch, x[i:i + 1], tta, spatial_axes=(1, 2), dense=True)[0]
                         for i in range(len(x))])
        truth = (y.argmax(-1) == 1) if y.shape[-1] > 1 else (y[..., 0] > 0.5)
        return prob[..., 1], truth

    val_dice = {}  # (tta mode, threshold) → pooled Dice on the validation slices
    for mode in (None, "flip", "dihedral"):
        val_p, val_t = membrane_prob("val", mode)
        val_dice.update({(mode, t): _dice(val_p >= t, val_t) for t in EM_THRESHOLDS})
    # best on validation; ties → no/fewer transforms, then the threshold nearest 0.5
    mode, thr = max(val_dice, key=lambda k: (round(val_dice[k], 6), k[0] is None, k[0] == "flip", -abs(k[1] - 0.5)))
    plain_p, truth = membrane_prob("test", None)
    pred = plain_p > 0.5  # = argmax of the two softmax classes
    selected = (plain_p if mode is None else membrane_prob("test", mode)[0]) >= thr
    per = [_dice(pred[i], truth[i]) for i in range(len(pred))]
    return {"test_dice": _dice(pred, truth), "test_dice_per_slice": per, "test_pixel_accuracy": float((pred == truth).mean()),
            "test_dice_selected": _dice(selected, truth), "tta_selected": mode,
            "threshold_selected": thr, "val_dice_selected": val_dice[(mode, thr)], "val_dice": val_dice[(None, 0.5)],
            "n_test": len(pred), "train_minutes": round(train_min, 2), "run": _rel(run)}


def _convert(inputs, out: pathlib.Path, **options) -> pathlib.Path:
    """``tfrecord-convert`` through its Python API (same code as the CLI); exit code 0 required."""
    from medtf.records.convert import ConvertConfig, convert

    res = convert(ConvertConfig(inputs=tuple(str(i) for i in inputs), output=str(out), overwrite=True,
                                progress=False, **options))
    if res.exit_code != 0:
        raise RuntimeError(f"converting {inputs} failed (exit {res.exit_code}); see {out / 'manifest.json'}")
    return out


def brain_tumor_mri(ctx: Ctx) -> dict:
    """The recipe README's commands: nnU-Net folder (``data_tools/brats2015_to_nnunet.py``) →
    ``tfrecord-convert --mode slice`` → ``medtf train`` → ``medtf evaluate`` (test slices re-stacked into the 2
    test volumes; Dice per BraTS region from the dataset.json regions, at the records' 1-mm grid)."""
    from brats2015_to_nnunet import build
    from medtf.evaluation.evaluate import evaluate_run
    from medtf.records.process import ProcessOptions

    folder = ctx.work / "data" / "Dataset501_BraTS2015"
    build(_shared("brats2015_deepmedic"), folder)
    rec = _convert([folder], ctx.work / "records" / "brats2015", mode="slice", split="train=1.0",
                   process=ProcessOptions(size=(208, 208), resize="crop_or_pad"))
    run, train_min = _trained_or_train("brain_tumor_mri", ctx, rec)
    names = (("whole_tumor", "whole tumor"), ("tumor_core", "tumor core"), ("enhancing", "enhancing tumor"))
    rep = evaluate_run(run, "test", progress=False)
    regions = rep["metrics"]["per_region"]
    res = {f"{k}_dice": regions[name]["dice"]["mean"] for k, name in names}
    res.update({"whole_tumor_hd95_mm": regions["whole tumor"]["hd95"]["mean"],
                "per_case": {k: [c["regions"][name]["dice"] for c in rep["per_case"]] for k, name in names},
                "n_test_cases": rep["n"], "train_minutes": round(train_min, 2), "run": _rel(run),
                "report": _rel(rep["files"]["html"])})
    # beside the headline (no TTA, the recipe's protocol): left-right flip TTA (`medtf evaluate --tta`), reported
    # only — never used to choose anything, since there is no validation split here
    flip = evaluate_run(run, "test", tta="flip", progress=False, write=False)["metrics"]["per_region"]
    res.update({f"{k}_dice_flip_tta": flip[name]["dice"]["mean"] for k, name in names})
    return res


def ct_denoising(ctx: Ctx) -> dict:
    """The recipe's README commands: ``data_tools/simulate_low_dose.py`` → ``tfrecord-convert --targets`` →
    ``medtf train recipes/ct_denoising/config.yaml`` → ``medtf evaluate`` (restoration U-Net vs the low-dose
    input and OpenCV non-local means, its strength chosen on the validation slices, on the 9 held-out slices)."""
    from medtf.cli.tfrecord_convert import main as tfrecord_convert
    from medtf.evaluation.evaluate import evaluate_run
    from simulate_low_dose import simulate

    data = ctx.work / "data" / "ct_low_dose"
    if not (data / "splits.csv").exists():
        simulate(_shared("tcia_lidc_idri_0001_ct_subset"), data)
    rec = ctx.work / "records" / "ct_denoising"
    if not (rec / "manifest.json").exists():
        code = tfrecord_convert([str(data / "low"), "--targets", str(data / "full"), "--labels", str(data / "splits.csv"),
                                 "--split", "input", "--mode", "slice", "--intensity", "window", "--window", "2048,0",
                                 "-o", str(rec), "--overwrite", "--no-progress"])
        if code != 0:
            raise RuntimeError(f"tfrecord-convert of {data} failed (exit {code})")
    run, train_min = _trained_or_train("ct_denoising", ctx, rec)
    rep = evaluate_run(run, "test", out_dir=ctx.work / "reports" / "ct_denoising", progress=False)
    rows = {r["method"]: r for r in rep["metrics"]["comparison"]}
    m_model, m_noisy, m_nlm = rows["model"], rows["input"], rows["nlm"]
    return {"psnr_model_db": m_model["psnr_mean"], "ssim_model": m_model["ssim_mean"],
            "psnr_noisy_db": m_noisy["psnr_mean"], "ssim_noisy": m_noisy["ssim_mean"],
            "psnr_nlm_db": m_nlm["psnr_mean"], "ssim_nlm": m_nlm["ssim_mean"], "nlm_h": m_nlm["h"],
            "nlm_h_split": m_nlm["h_split"],
            "psnr_gain_vs_nlm_db": m_model["psnr_mean"] - m_nlm["psnr_mean"],
            "psnr_gain_vs_noisy_db": m_model["psnr_mean"] - m_noisy["psnr_mean"],
            "n_test_slices": int(rep["n"]), "train_minutes": round(train_min, 2), "run": _rel(run)}


def lung_nodule_ct(ctx: Ctx) -> dict:
    """Phantom CT series (DICOM) → nodule patches → 3D DenseNet-CBAM; plus patch extraction on the real LIDC series."""
    import numpy as np

    from medtf.evaluation.evaluate import evaluate_run
    from medtf.records.split import parse_split
    from medtf.synthetic import write_ct_phantoms
    from nodule_patches import lidc_examples, phantom_examples, split_examples
    from _records import write_records

    ph = ctx.work / "data" / "ct_phantoms"
    if not (ph / "labels.csv").exists():
        write_ct_phantoms(ph, n_patients=12, studies_per_patient=2, size=128, n_slices=48, seed=0,
                          positive_fraction=0.5, nodule_radius_mm=(3.0, 8.0))
    rec = ctx.work / "records" / "ct_nodule_patches"
    exs = phantom_examples(ph, spacing=1.5, size=32, negatives=2, seed=0)
    write_records(rec, split_examples(exs, parse_split("0.6,0.2,0.2"), 0), image_dtype="int16",
                  intensity={"kind": "raw"}, tool="data_tools/nodule_patches", label_names=["no nodule", "nodule"])
    t0 = time.perf_counter()
    run = _train("lung_nodule_ct", ctx, rec)
    train_min = (time.perf_counter() - t0) / 60
    rep = evaluate_run(run, "test", out_dir=ctx.work / "reports" / "lung_nodule_ct", progress=False)
    lidc, info = lidc_examples(_shared("tcia_lidc_idri_0001_ct_subset"), min_readers=1, spacing=1.5, size=32,
                               negatives=3, seed=0)
    centre = [float(np.asarray(e["image"])[12:20, 12:20, 12:20].mean()) for e in lidc]
    return {"phantom_test_auc": _auc(rep["metrics"]["auc"]), "phantom_test_accuracy": float(rep["metrics"]["accuracy"]),
            "n_test": int(rep["n"]), "lidc_positive_patches": info["positives"],
            "lidc_patch_centre_hu": {"nodule": [c for c, e in zip(centre, lidc) if e["label"][0] == 1],
                                     "background": [c for c, e in zip(centre, lidc) if e["label"][0] == 0]},
            "train_minutes": round(train_min, 2), "run": _rel(run)}


RECIPES = {
    "pneumonia_cxr": pneumonia_cxr,
    "pneumonia_cxr_efficientnet": pneumonia_cxr_efficientnet,
    "pneumonia_cxr_efficientnet_lite": pneumonia_cxr_efficientnet_lite,
    "diabetic_retinopathy": diabetic_retinopathy,
    "diabetic_retinopathy_multiscale": diabetic_retinopathy_multiscale,
    "adrenal_3d": adrenal_3d,
    "em_membrane": em_membrane,
    "brain_tumor_mri": brain_tumor_mri,
    "ct_denoising": ct_denoising,
    "lung_nodule_ct": lung_nodule_ct,
}


def _ratio(name: str, res: dict) -> str:
    if name in PUBLISHED:
        ref_name, ref = next(iter(PUBLISHED[name].items()))
        return (f"AUC {res['test_auc']:.3f} / {ref['auc']:.3f} ({ref_name}) = {res['test_auc'] / ref['auc']:.3f}x; "
                f"acc {res['test_accuracy']:.3f} / {ref['acc']:.3f} = {res['test_accuracy'] / ref['acc']:.3f}x")
    if name == "ct_denoising":
        return (f"PSNR {res['psnr_model_db']:.2f} dB vs NLM {res['psnr_nlm_db']:.2f} dB (noisy {res['psnr_noisy_db']:.2f}); "
                f"gain {res['psnr_gain_vs_nlm_db']:+.2f} dB")
    keys = [k for k in TARGETS.get(name, {})]
    return ", ".join(f"{k} {res[k]:.3f} (target {TARGETS[name][k]})" for k in keys) or json.dumps(
        {k: v for k, v in res.items() if isinstance(v, float)})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 epoch per recipe (wiring smoke test; not results)")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(RECIPES)}")
    p.add_argument("--work", default=str(HERE / "_work"), help="scratch folder (records, runs, reports)")
    p.add_argument("--seeds", default=None,
                   help="comma-separated training seeds (e.g. 0,1,2): each recipe runs once per seed and its row "
                        "holds the mean, <key>_std and <key>_per_seed")
    p.add_argument("--reuse", action="store_true",
                   help="evaluate the run already trained in --work (same name, seed suffix included) instead of "
                        "training it again; runs that are missing or unfinished are trained")
    a = p.parse_args(argv)
    names = list(RECIPES) if not a.only else [n.strip() for n in a.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        print(f"error: unknown recipe(s) {unknown}; choose from {list(RECIPES)}", file=sys.stderr)
        return 2
    try:
        seeds = [int(v) for v in a.seeds.split(",")] if a.seeds else None
    except ValueError:
        print(f"error: --seeds expects integers like 0,1,2. Received: {a.seeds!r}", file=sys.stderr)
        return 2
    ctx = Ctx(pathlib.Path(a.work).resolve(), a.quick, a.reuse)
    out = HERE / "results" / ("recipes_quick.json" if a.quick else "recipes.json")
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("_meta", {})
    code = 0
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            if seeds:
                runs = {}
                for seed in seeds:
                    print(f"--- {name}, seed {seed} ---", flush=True)
                    ctx.seed = seed
                    runs[seed] = RECIPES[name](ctx)
                ctx.seed = None
                res = aggregate_seeds(runs)
            else:
                res = RECIPES[name](ctx)
        except FileNotFoundError as exc:
            print(f"skipped: {exc}")
            continue
        res["wall_minutes"] = round((time.perf_counter() - t0) / 60, 2)
        res["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        res["quick"] = a.quick
        if name in PUBLISHED:
            res["published"] = PUBLISHED[name]
        res["targets"] = TARGETS.get(name, {})
        results = json.loads(out.read_text()) if out.exists() else {}  # re-read: other recipes may have finished
        results[name] = res
        print(f"{name}: {_ratio(name, res)}  [{res['wall_minutes']:.1f} min]", flush=True)
        results["_meta"] = {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count(),
                            "note": "CPU only; the machine was shared with other jobs while measuring"}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, sort_keys=True, default=float) + "\n")
    print(f"\nwrote {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
