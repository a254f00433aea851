"""Raw files → predictions, the way ``medtf predict`` makes them, for any :class:`~medtf.serving.models.ServedModel`.

Inputs are read by ``medtf.io.inputs.iter_inputs`` (DICOM files and series folders — a series is one
volume for a 3D model — NIfTI, PNG/JPEG/TIFF) exactly as the converter read them; the model's stored chain
is applied with the NumPy reference (``ServedModel.preprocess``); classifier outputs go through
``medtf.interpret`` (tie rule ``p >= threshold``); segmentation label maps are computed on the model grid
(sliding window when the image is larger) and put back on the source grid with
``medtf.preprocess.chain_map`` / ``to_source_grid`` — the same steps as ``medtf.training.predict``.

Rows name images by their source key (a path relative to the input folder, or ``series-<token>``), never by
a patient identifier.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from medtf.interpret import interpret, segmentation_labels
from medtf.preprocess import chain_map, to_source_grid


@dataclasses.dataclass
class UnitResult:
    """Predictions for one source unit (a file or a series).

    Attributes:
        unit: the ``medtf.io.SourceUnit`` (``paths`` are the files read).
        image: the ``medtf.io.Image`` read from it.
        rows: JSON-ready rows (one per image, or per slice when a 2D model reads a volume).
        outputs: model outputs per row (classification) — what the SR reports.
        mask: segmentation label map on the source grid ((H, W), (D, H, W) or (F, H, W)), else None.
        slices: per row, the slice index into the unit's volume, or None.
    """

    unit: Any
    image: Any
    rows: list[dict]
    outputs: list[np.ndarray]
    mask: np.ndarray | None
    slices: list[int | None]


def _slices(image, spatial_dims: int):
    arr = np.asarray(image.array)
    if arr.ndim - 1 == spatial_dims + 1 and spatial_dims == 2:  # a volume for a 2D model: slice by slice
        sp = tuple(image.spacing)[1:]
        return [(k, arr[k], sp) for k in range(arr.shape[0])]
    if arr.ndim - 1 == spatial_dims:
        return [(None, arr, tuple(image.spacing))]
    raise ValueError(f"a {arr.ndim - 1}D image does not fit this {spatial_dims}D model")


def predict_image(model, unit, image, *, overlap: float = 0.5, batch_size: int = 4) -> UnitResult:
    """Predict one (unit, image) pair from ``iter_inputs``.

    Raises:
        ValueError: the image does not fit the model (the message names shapes, never header values).
    """
    from medtf.training.predict import predict_dense_model_space

    slices = _slices(image, model.spatial_dims)
    base = {"source": unit.key, "index": int(image.index)}
    if not model.dense:
        x = np.stack([model.preprocess(a, sp) for _, a, sp in slices])
        out = model.run(x)
        rows, outputs = [], []
        for (k, _, _), p in zip(slices, out):
            row = dict(base)
            if k is not None:
                row["slice"] = k
            row.update(interpret(p, model.task, class_names=model.class_names, threshold=model.threshold))
            rows.append(row)
            outputs.append(np.asarray(p, np.float32))
        return UnitResult(unit, image, rows, outputs, None, [k for k, _, _ in slices])
    win = tuple(model.input_shape[:-1])
    maps = []
    for _, a, sp in slices:
        x = model.preprocess(a, sp)
        p = predict_dense_model_space(model, x, win, overlap, batch_size)
        values = p[..., 0].astype(np.float32) if model.task == "restoration" else segmentation_labels(p)
        maps.append(to_source_grid(values, chain_map(model.chain, a.shape[:-1], sp)))
    out = np.stack(maps) if slices[0][0] is not None else maps[0]
    row = dict(base, shape=list(out.shape))
    if model.task == "segmentation":
        labels, counts = np.unique(out, return_counts=True)
        row["labels_present"] = [int(v) for v in labels]
        names = model.class_names
        row["voxels"] = {(names[int(v)] if int(v) < len(names) else str(int(v))): int(c)
                         for v, c in zip(labels, counts)}
    return UnitResult(unit, image, [row], [], out, [None])


def predict_paths(model, inputs: Sequence, *, pseudonymizer=None, rejected: list | None = None,
                  overlap: float = 0.5, batch_size: int = 4) -> list[UnitResult]:
    """Predict every image under ``inputs`` (files / folders) with ``model``.

    Args:
        model: a :class:`~medtf.serving.models.ServedModel`.
        inputs: files and folders (a series folder is one volume for a 3D model).
        pseudonymizer: for series keys (default: the site's, see ``medtf.io.inputs.site_pseudonymizer``).
        rejected: receives ``(path or key, reason)`` for inputs that cannot be read or do not fit.
        overlap, batch_size: sliding-window settings (segmentation).

    Returns:
        One :class:`UnitResult` per image read.
    """
    from medtf.io.inputs import iter_inputs

    sink = rejected if rejected is not None else []
    results = []
    for unit, image in iter_inputs(list(inputs), spatial_dims=model.spatial_dims, voi=model.chain.voi,
                                   pseudonymizer=pseudonymizer, rejected=sink):
        try:
            results.append(predict_image(model, unit, image, overlap=overlap, batch_size=batch_size))
        except (ValueError, OSError) as exc:
            sink.append((unit.key, str(exc)))
    return results


def scratch_dir() -> str | None:
    """Where received images are written while they are read: ``/dev/shm`` (memory, never on disk) when
    it is writable, else the system temp folder (None)."""
    import os

    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK) else None


def ids_of_file(path, pseudonymizer) -> dict[str, str]:
    """``{"series": "series-<token>", "instance": "instance-<token>"}`` of one DICOM file."""
    from medtf.io.header import header_value, read_header

    ds = read_header(path)
    return {"series": "series-" + pseudonymizer.token(str(header_value(ds, "SeriesInstanceUID", "") or "")),
            "instance": "instance-" + pseudonymizer.token(str(header_value(ds, "SOPInstanceUID", "") or ""))}


def identify(result, pseudonymizer) -> dict[str, Any]:
    """Pseudonymous names of a DICOM result's source: ``{"series": "series-<token>", "instance":
    "instance-<token>"}`` for a file, ``{"series": key, "instances": n}`` for a series, else
    ``{"source": key}`` — keyed tokens of the UIDs (``Pseudonymizer.token``), never the UIDs."""
    unit = result.unit
    if unit.kind == "dicom_series":
        return {"series": unit.key, "instances": len(unit.paths)}
    if unit.kind == "dicom":
        return ids_of_file(unit.paths[0], pseudonymizer)
    return {"source": unit.key}


def public_rows(result, pseudonymizer) -> list[dict[str, Any]]:
    """``result.rows`` with ``source`` replaced by :func:`identify`'s pseudonymous names."""
    ids = identify(result, pseudonymizer)
    return [{**ids, **{k: v for k, v in row.items() if k != "source"}} for row in result.rows]
