"""Inference on raw files with a trained run: ``predict_inputs(run_dir, inputs)`` (``medtf predict``).

Inputs are read through ``medtf.io`` (DICOM files and series folders, NIfTI, PNG/JPEG/TIFF, npz) exactly as
the converter read them, then the run's whole preprocessing chain (``RunInfo.chain``: the records'
conversion stage — resample, window, size — and the training stage) is applied with the NumPy
reference of ``medtf.preprocess``, so the model sees the numbers it was trained on. Classifier outputs
become decisions through ``medtf.interpret`` (tie rule ``p >= threshold``); segmentation label maps are
computed on the model's grid and put back on the source grid (nearest neighbour, with the source's
origin, spacing and direction). Outputs name inputs by their source key (path relative to the given
folder, or a series token), never by a patient identifier.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

import numpy as np

from medtf.interpret import interpret as interpret_output
from medtf.interpret import segmentation_labels
from medtf.preprocess import apply_chain, chain_map, resize, to_source_grid
from medtf.training.run import RunInfo, load_model


def interpret(p: np.ndarray, info: RunInfo) -> dict[str, Any]:
    """One classifier output vector → {"prediction", "label", ...} (``medtf.interpret.interpret``)."""
    return interpret_output(p, info.task, class_names=info.class_names, threshold=info.threshold)


def prepare(array: np.ndarray, info: RunInfo, spacing=None) -> np.ndarray:
    """Raw (modality) values of one image → the model input (the run's whole chain).

    Raises:
        ValueError: the chain does not fit the image, or the result does not fit the model input
            (the message names both shapes).
    """
    x = apply_chain(array, info.chain, spacing)
    want = tuple(info.input_shape)
    if info.task not in ("segmentation", "restoration") and tuple(x.shape) != want:
        raise ValueError(f"preprocessing ({info.chain.describe()}) produced shape {tuple(x.shape)} but the model "
                         f"expects {want}")
    return x


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
                   batch_size: int = 4, progress: bool = True,
                   show_paths: bool = False) -> tuple[list[dict], list[tuple[str, str]]]:
    """Predict every image found under ``inputs`` with the run's model.

    Args:
        run_dir: run folder (model.keras + model.json).
        inputs: files and/or folders (a folder of one DICOM series is one volume for a 3D model).
        masks_dir: where segmentation masks / restored images go (required for those tasks).
        mask_format: "nifti", "png" or "auto" (PNG for 2D PNG/JPEG inputs, NIfTI otherwise).
        overlap: sliding-window overlap for segmentation inputs larger than the model.
        batch_size: windows per model call.
        progress: tqdm progress bar over inputs.
        show_paths: add ``"path"`` (the file, or a series' folder) to each row; off by default since names
            can identify patients — ``"source"`` is the keyed pseudonym the records use.

    Returns:
        (rows, rejected): one dict per predicted image ({"source", "index", ...task fields}) and
        ``[(path, reason)]`` for inputs that could not be read or predicted.

    Raises:
        FileNotFoundError: no run / model, or an input does not exist.
        ValueError: segmentation/restoration without ``masks_dir``.
    """
    from tqdm import tqdm

    from medtf.io.inputs import iter_inputs

    info = RunInfo.load(run_dir)
    info.warn_if_incomplete()
    model = load_model(run_dir)
    dense = info.task in ("segmentation", "restoration")
    if dense and masks_dir is None:
        raise ValueError(f"task {info.task!r} writes images: pass masks_dir (--masks-dir)")
    if masks_dir is not None and dense:
        masks_dir = pathlib.Path(masks_dir)
        masks_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    rejected: list[tuple[str, str]] = []
    win = tuple(info.input_shape[:-1])
    nd = info.spatial_dims
    items = iter_inputs(list(inputs), spatial_dims=nd, voi=info.chain.voi, rejected=rejected)
    for unit, image in tqdm(items, desc="predict", unit="image", disable=not progress):
        arr = image.array
        try:
            if arr.ndim - 1 == nd + 1 and nd == 2:  # a volume for a 2D model: slice by slice
                sp = tuple(image.spacing)[1:]
                slices = [(k, arr[k], sp) for k in range(arr.shape[0])]
            elif arr.ndim - 1 == nd:
                slices = [(None, arr, tuple(image.spacing))]
            else:
                raise ValueError(f"a {arr.ndim - 1}D image for a {nd}D model")
            if not dense:
                for k, a, sp in slices:
                    x = prepare(a, info, sp)
                    p = np.asarray(model(x[None], training=False))[0]
                    row = {"source": unit.key, "index": int(image.index)}
                    if show_paths:
                        row["path"] = _shown_path(unit)
                    if k is not None:
                        row["slice"] = k
                    row.update(interpret(p, info))
                    rows.append(row)
                continue
            scale = _sr_scale(info, len(slices[0][1].shape) - 1)
            if scale is not None:  # super-resolution: the input on the target grid, as in training
                slices = [(k, resize(a, [n * f for n, f in zip(a.shape[:-1], scale)]), tuple(v / f for v, f in zip(sp, scale)))
                          for k, a, sp in slices]
                image = _upsampled_geometry(image, scale)
            outs = [_dense_predict(model, a, info, win, overlap, batch_size, sp) for _, a, sp in slices]
            out = np.stack(outs) if slices[0][0] is not None else outs[0]
            fmt = mask_format
            if fmt == "auto":
                fmt = "png" if unit.kind == "image" and out.ndim == 2 else "nifti"
            name = _safe_name(unit.key, image.index) + (".png" if fmt == "png" else ".nii.gz")
            _write_volume(out, image, masks_dir / name)
            row = {"source": unit.key, "index": int(image.index), "output": str(masks_dir / name),
                   "shape": list(out.shape)}
            if show_paths:
                row["path"] = _shown_path(unit)
            if info.task == "segmentation":
                row["labels_present"] = sorted(int(v) for v in np.unique(out))
            rows.append(row)
        except (ValueError, OSError) as exc:
            rejected.append((unit.key, str(exc)))
    return rows, rejected


def _sr_scale(info: RunInfo, dims: int) -> tuple[int, ...] | None:
    """The super-resolution factor per spatial axis of a restoration run trained on ``--targets`` pairs whose
    target grid is k × the input grid (``model.json`` extra ``target_scale``); None otherwise."""
    k = info.extra.get("target_scale") if info.task == "restoration" else None
    if not k:
        return None
    k = tuple(int(v) for v in (k if isinstance(k, (list, tuple)) else [k] * dims))[-dims:]
    return None if all(v == 1 for v in k) else k


def _upsampled_geometry(image, scale):
    """The Image's geometry on its grid resized by ``scale`` with half-pixel centres (spacing / k; the first
    voxel centre moves back by (k - 1) / 2k of a source voxel)."""
    import dataclasses

    from medtf.preprocess import shift_origin

    sd = len(image.spacing)
    k = (1,) * (sd - len(scale)) + tuple(scale)  # a volume for a 2D model: in-plane axes only
    spacing = tuple(float(s) / f for s, f in zip(image.spacing, k))
    origin = shift_origin(image.origin, image.direction, image.spacing, tuple((1.0 / f - 1.0) / 2.0 for f in k))
    return dataclasses.replace(image, spacing=spacing, origin=origin)


def _shown_path(unit) -> str:
    return unit.paths[0] if len(unit.paths) == 1 else str(pathlib.Path(unit.paths[0]).parent)


def predict_dense_model_space(model, x: np.ndarray, win, overlap: float = 0.5, batch_size: int = 4) -> np.ndarray:
    """Model output for one preprocessed image (sliding window when it is not the model's size)."""
    from medtf.data.sliding_window import sliding_window_inference

    if tuple(x.shape[:-1]) != tuple(win):
        p = sliding_window_inference(model, x, win, overlap=overlap, batch_size=batch_size)
        return np.asarray(p)[tuple(slice(0, s) for s in x.shape[:-1])]
    return np.asarray(model(x[None], training=False))[0]


def _dense_predict(model, a, info: RunInfo, win, overlap, batch_size, spacing=None) -> np.ndarray:
    """Segmentation → label map on the source grid of ``a``; restoration → restored image (channel 0),
    both put back with nearest neighbour through the chain's geometric steps."""
    x = apply_chain(a, info.chain, spacing)
    p = predict_dense_model_space(model, x, win, overlap, batch_size)
    values = p[..., 0].astype(np.float32) if info.task == "restoration" else segmentation_labels(p)
    amap = chain_map(info.chain, a.shape[:-1], spacing)
    return to_source_grid(values, amap)
