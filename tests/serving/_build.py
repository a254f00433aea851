"""Small runs, exports and DICOM for the serving tests (no training: fixed weights, seconds to build).

* a binary classifier (``simple_cnn``, seeded weights) on DX chest-X-ray phantoms, conversion stage
  VOI-free window 4096/2048 + resize to 32×32, training stage z-score — a 2D model;
* a 3D "segmenter" (a fixed 1×1×1 convolution: foreground where the windowed input is bright) on CT
  phantom series, conversion stage resample to 5×12×12 mm + window 400/−100 + resize to 8×24×24 —
  so ``serving_default`` takes ``spacing`` and masks go back on the source grid through a resampling.

Every DICOM file gets planted identifiers (:data:`PLANTED`) in the patient/study attributes, so tests
can check that none of them leaks into JSON, logs or metrics.
"""

from __future__ import annotations

import pathlib

import numpy as np

#: Identifier values planted in every source file; none may appear in a response, a log or a metric.
PLANTED = {
    "PatientName": "Leakcheck^Zebulon",
    "PatientID": "PID-LEAK-48151623",
    "AccessionNumber": "ACC-LEAK-4242",
    "PatientBirthDate": "19310217",
    "InstitutionName": "Leakcheck General Hospital",
}


def plant(folder) -> list[pathlib.Path]:
    """Rewrite every ``.dcm`` under ``folder`` with :data:`PLANTED` values (pixels untouched)."""
    import pydicom

    files = sorted(pathlib.Path(folder).rglob("*.dcm"))
    for f in files:
        ds = pydicom.dcmread(f)
        for k, v in PLANTED.items():
            setattr(ds, k, v)
        ds.save_as(f)
    return files


def planted_strings() -> list[str]:
    """The planted values plus the source files' study/series/instance UIDs are checked by callers."""
    return list(PLANTED.values()) + ["Leakcheck", "Zebulon", "48151623"]


def cxr(root) -> pathlib.Path:
    from medtf.synthetic.phantoms import write_cxr_phantoms

    ph = write_cxr_phantoms(pathlib.Path(root), n_patients=3, studies_per_patient=1, size=64, seed=3,
                            transfer_syntaxes=("explicit", "rle"))
    plant(ph.images_dir)
    return ph.images_dir


def ct(root) -> pathlib.Path:
    from medtf.synthetic.phantoms import write_ct_phantoms

    ph = write_ct_phantoms(pathlib.Path(root), n_patients=1, studies_per_patient=1, size=32, n_slices=8, seed=5,
                           transfer_syntaxes=("explicit",))
    plant(ph.images_dir)
    return ph.images_dir


def classifier_run(run_dir) -> pathlib.Path:
    import keras

    from medtf import models
    from medtf.preprocess import Preprocessing
    from medtf.training.run import RunInfo

    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(7)
    model = models.build("simple_cnn", input_shape=(32, 32, 1), num_classes=2, task="binary", filters=(4, 8))
    model.save(run_dir / "model.keras")
    RunInfo(name="simple_cnn", task="binary", class_names=("normal", "opacity"), input_shape=(32, 32, 1),
            spatial_dims=2, preprocessing=Preprocessing(intensity="zscore", mean=0.5, std=0.25),
            conversion=Preprocessing(intensity="window", windows=((4096, 2048),), size=(32, 32)),
            threshold=0.5).save(run_dir)
    return run_dir


def set_threshold_between(run_dir, inputs) -> float:
    """Put the run's threshold halfway between the two middle probabilities on ``inputs``, so both labels occur
    and no probability sits near the threshold (Keras and the SavedModel differ by ~1e-7)."""
    import dataclasses

    from medtf.training.predict import predict_inputs
    from medtf.training.run import RunInfo

    rows, _ = predict_inputs(run_dir, inputs, progress=False)
    probs = sorted(r["probability"] for r in rows)
    k = len(probs) // 2
    thr = float((probs[k - 1] + probs[k]) / 2)
    info = RunInfo.load(run_dir)
    dataclasses.replace(info, threshold=thr).save(run_dir)
    return thr


def segmenter_run(run_dir, level: float = 0.5) -> pathlib.Path:
    import keras

    from medtf.preprocess import Preprocessing
    from medtf.training.run import RunInfo

    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    shape = (8, 24, 24, 1)
    inp = keras.Input(shape)
    layer = keras.layers.Conv3D(1, 1, activation="sigmoid")
    model = keras.Model(inp, layer(inp))
    w = np.zeros(layer.get_weights()[0].shape, np.float32)
    w[..., 0, 0] = 40.0
    layer.set_weights([w, np.array([-40.0 * level], np.float32)])
    model.save(run_dir / "model.keras")
    RunInfo(name="threshold", task="segmentation", class_names=("background", "bright"), input_shape=shape,
            spatial_dims=3, preprocessing=Preprocessing(),
            conversion=Preprocessing(spacing=(5.0, 12.0, 12.0), intensity="window", windows=((400, -100),),
                                     size=(8, 24, 24))).save(run_dir)
    return run_dir


def export(run_dir) -> pathlib.Path:
    """``medtf export RUN --format savedmodel --no-parity``; returns the version folder."""
    from medtf.cli.main import main as medtf_main

    assert medtf_main(["export", str(run_dir), "--format", "savedmodel", "--no-parity"]) == 0
    return next((pathlib.Path(run_dir) / "export" / "savedmodel").glob("*/1"))
