"""Inference on files with a trained run: ``predict_inputs(run_dir, inputs)`` (used by ``medtf predict``).

Inputs are read through ``medtf.io`` (DICOM files/series, NIfTI, PNG/JPEG/TIFF, npz), preprocessed with
the run's stored ``Preprocessing`` (``medtf.data.transforms.apply_preprocessing``); segmentation images
larger than the model input go through ``medtf.data.sliding_window.sliding_window_inference``. Outputs
name inputs by their source key (path relative to the given folder, or a series token), never by a
patient identifier.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

import numpy as np

from medtf.training.run import RunInfo, load_model


def _prep(image: np.ndarray, info: RunInfo, size=None) -> np.ndarray:
    import dataclasses

    from medtf.data.transforms import apply_preprocessing

    spec = info.preprocessing
    if size is not None:
        spec = dataclasses.replace(spec, size=tuple(size))
    return np.asarray(apply_preprocessing(image.astype(np.float32), spec))


def interpret(p: np.ndarray, info: RunInfo) -> dict[str, Any]:
    """One classifier output vector → {"prediction", "label", "probabilities" / "grade"}."""
    names = list(info.class_names)
    p = np.asarray(p, dtype=np.float64).ravel()
    if info.task == "binary":
        thr = 0.5 if info.threshold is None else info.threshold
        pred = int(p[-1] >= thr)
        return {"probability": float(p[-1]), "threshold": thr, "prediction": pred,
                "label": names[pred] if len(names) > pred else str(pred)}
    if info.task == "multiclass":
        pred = int(p.argmax())
        return {"prediction": pred, "label": names[pred] if pred < len(names) else str(pred),
                "probabilities": {n: float(v) for n, v in zip(names or map(str, range(len(p))), p)}}
    if info.task == "multilabel":
        on = [int(i) for i in np.nonzero(p > 0.5)[0]]
        return {"prediction": on, "label": ";".join(names[i] for i in on if i < len(names)),
                "probabilities": {n: float(v) for n, v in zip(names or map(str, range(len(p))), p)}}
    if info.task == "ordinal":
        grade = int((p > 0.5).sum())
        return {"prediction": grade, "label": names[grade] if grade < len(names) else str(grade),
                "cumulative": [float(v) for v in p]}
    raise ValueError(f"interpret: task {info.task!r} is not a classification task")


def _write_volume(arr: np.ndarray, image, path: pathlib.Path) -> None:
    """Write a (H, W) / (D, H, W) array as NIfTI (geometry from the Image) or PNG (2D, .png)."""
    if path.suffix == ".png":
        import cv2

        a = arr.astype(np.uint8) if arr.max(initial=0) > 1 or arr.dtype == np.uint8 else (arr * 255).astype(np.uint8)
        if not cv2.imwrite(str(path), a):
            raise OSError(f"{path}: could not write PNG")
        return
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    sp = tuple(float(s) for s in image.spacing)[::-1]
    img.SetSpacing(sp if len(sp) == arr.ndim else (1.0,) * arr.ndim)
    if arr.ndim == 3 and image.origin is not None:
        img.SetOrigin(tuple(float(v) for v in image.origin))
    if arr.ndim == 3 and image.direction is not None:
        img.SetDirection(tuple(float(v) for v in image.direction))
    sitk.WriteImage(img, str(path))


def _safe_name(key: str, index: int) -> str:
    stem = key.replace(os.sep, "__").replace("/", "__")
    for ext in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npz"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
    return f"{stem}_{index}" if index else stem


def predict_inputs(run_dir, inputs: Sequence, *, masks_dir=None, mask_format: str = "auto", overlap: float = 0.5,
                   batch_size: int = 4, progress: bool = True) -> tuple[list[dict], list[tuple[str, str]]]:
    """Predict every image found under ``inputs`` with the run's model.

    Args:
        run_dir: run folder (model.keras + model.json).
        inputs: files and/or folders.
        masks_dir: where segmentation masks / restored images go (required for those tasks).
        mask_format: "nifti", "png" or "auto" (PNG for 2D PNG/JPEG inputs, NIfTI otherwise).
        overlap: sliding-window overlap for large segmentation inputs.
        batch_size: windows per model call.
        progress: tqdm progress bar over inputs.

    Returns:
        (rows, rejected): one dict per predicted image ({"source", "index", ...task fields}) and
        ``[(path, reason)]`` for inputs that could not be read or predicted.

    Raises:
        FileNotFoundError: no run / model, or an input does not exist.
        ValueError: segmentation/restoration without ``masks_dir``.
    """
    from tqdm import tqdm

    from medtf.io import Pseudonymizer, ReadError, discover, read_unit

    info = RunInfo.load(run_dir)
    model = load_model(run_dir)
    dense = info.task in ("segmentation", "restoration")
    if dense and masks_dir is None:
        raise ValueError(f"task {info.task!r} writes images: pass masks_dir (--masks-dir)")
    if masks_dir is not None and dense:
        masks_dir = pathlib.Path(masks_dir)
        masks_dir.mkdir(parents=True, exist_ok=True)
    pz = Pseudonymizer(os.urandom(32))  # ephemeral: nothing patient-related is written
    units, rejected = discover(list(inputs), pseudonymizer=pz, mode="auto" if info.spatial_dims == 3 else "slice")
    rows: list[dict] = []
    win = tuple(info.input_shape[:-1])
    nd = info.spatial_dims
    for unit in tqdm(units, desc="predict", unit="input", disable=not progress):
        try:
            images = read_unit(unit, pseudonymizer=pz)
        except (ReadError, OSError, ValueError) as exc:
            rejected.append((unit.key, str(getattr(exc, "reason", exc))))
            continue
        for image in images:
            arr = image.array
            try:
                if arr.ndim - 1 == nd + 1 and nd == 2:  # a volume for a 2D model: slice by slice
                    slices = [(k, arr[k]) for k in range(arr.shape[0])]
                elif arr.ndim - 1 == nd:
                    slices = [(None, arr)]
                else:
                    raise ValueError(f"a {arr.ndim - 1}D image for a {nd}D model")
                if not dense:
                    for k, a in slices:
                        x = _prep(a, info, size=info.preprocessing.size or win)
                        p = np.asarray(model(x[None], training=False))[0]
                        row = {"source": unit.key, "index": int(image.index)}
                        if k is not None:
                            row["slice"] = k
                        row.update(interpret(p, info))
                        rows.append(row)
                    continue
                outs = []
                for k, a in slices:
                    outs.append(_dense_predict(model, a, info, win, overlap, batch_size))
                out = np.stack(outs) if slices[0][0] is not None else outs[0]
                fmt = mask_format
                if fmt == "auto":
                    fmt = "png" if unit.kind == "image" and out.ndim == 2 else "nifti"
                name = _safe_name(unit.key, image.index) + (".png" if fmt == "png" else ".nii.gz")
                _write_volume(out, image, masks_dir / name)
                row = {"source": unit.key, "index": int(image.index), "output": str(masks_dir / name),
                       "shape": list(out.shape)}
                if info.task == "segmentation":
                    row["labels_present"] = sorted(int(v) for v in np.unique(out))
                rows.append(row)
            except (ValueError, OSError) as exc:
                rejected.append((unit.key, str(exc)))
    return rows, rejected


def _dense_predict(model, a, info: RunInfo, win, overlap, batch_size) -> np.ndarray:
    """Segmentation → label map (spatial shape of ``a``); restoration → restored image (channel 0)."""
    from medtf.data.sliding_window import sliding_window_inference
    from medtf.data.transforms import resize

    spatial = a.shape[:-1]
    pre = info.preprocessing
    x = _prep(a, info, size=pre.size) if pre.size is not None else _prep(a, info)
    if any(s > w for s, w in zip(x.shape[:-1], win)) or any(s < w for s, w in zip(x.shape[:-1], win)):
        p = sliding_window_inference(model, x, win, overlap=overlap, batch_size=batch_size)
        p = np.asarray(p)[tuple(slice(0, s) for s in x.shape[:-1])]
    else:
        p = np.asarray(model(x[None], training=False))[0]
    if tuple(p.shape[:-1]) != tuple(spatial):
        p = np.asarray(resize(p, spatial, "linear"))
    if info.task == "restoration":
        return p[..., 0].astype(np.float32)
    if p.shape[-1] == 1:
        return (p[..., 0] > 0.5).astype(np.uint8)
    return p.argmax(-1).astype(np.uint8)
