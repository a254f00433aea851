"""TF Serving's REST predict format: request parsing and response formatting (pure functions).

As TF Serving documents it (https://www.tensorflow.org/tfx/serving/api_rest):

* request ``{"signature_name": str, "instances": [...]}`` (row format: one element per example — the value
  itself when the signature has one input, else an object ``{input_name: value}``) or
  ``{"signature_name": str, "inputs": value | {input_name: value}}`` (columnar format: batched values);
  never both;
* binary values are ``{"b64": "<base64>"}``;
* response ``{"predictions": [...]}`` (row format: one element per example, the value itself when the
  signature has one output, else an object) or ``{"outputs": value | {output_name: value}}`` (columnar);
  failures ``{"error": "<message>"}``.

medtf's signatures take float32 pixels, not strings, so a ``{"b64": ...}`` value of ``image`` is read as a
file — DICOM, PNG/JPEG/TIFF, NIfTI — by ``medtf.io`` exactly as the converter reads it (its ``spacing``
comes from the file unless the request gives one). Examples whose images differ in size cannot be stacked
(TF Serving refuses them); examples given as files are run one by one instead.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable

import numpy as np


class RequestError(ValueError):
    """A malformed predict request (HTTP 400); the message is TF Serving-like and holds no data values."""


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _decode_b64(value) -> bytes:
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise RequestError("Unable to base64 decode") from None


def _array(value, name: str, info) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.dtype(info.dtype))
    except (TypeError, ValueError):
        raise RequestError(f"Input '{name}': expected numbers of type {info.dtype} in a rectangular (nested) "
                           "list") from None
    return arr


def _check_shape(arr: np.ndarray, name: str, info, batched: bool) -> None:
    want = info.shape if batched else info.shape[1:]
    if arr.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, arr.shape)):
        shown = "[" + ",".join("-1" if w is None else str(w) for w in want) + "]"
        raise RequestError(f"Input '{name}' has shape {list(arr.shape)} but the signature expects {shown}"
                           + ("" if batched else " per instance"))


def parse_request(body: bytes, signatures: dict, *, read_file: Callable[[bytes], tuple[np.ndarray, Any]] | None = None
                  ) -> tuple[str, list[dict[str, np.ndarray]], bool]:
    """Parse a ``:predict`` JSON body.

    Args:
        body: the request body.
        signatures: ``{name: Signature}`` of the model (``medtf.serving.models``).
        read_file: bytes of a ``{"b64": ...}`` image → (raw channels-last array, spacing or None).

    Returns:
        (signature name, batches, row_format): each batch is a dict of stacked arrays with a leading
        batch axis; one batch normally, one per example when examples come as files of different sizes.

    Raises:
        RequestError: malformed JSON, both / neither of ``instances`` and ``inputs``, an unknown signature or
            input, a value of the wrong shape or type.
    """
    try:
        doc = json.loads(body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"JSON Parse error: {exc.msg if hasattr(exc, 'msg') else 'invalid UTF-8'}") from None
    if not isinstance(doc, dict):
        raise RequestError("JSON Value: the request body must be a JSON object")
    sig_name = doc.get("signature_name") or "serving_default"
    if not isinstance(sig_name, str) or sig_name not in signatures:
        raise RequestError(f'Serving signature name: "{sig_name}" not found in signature def')
    sig = signatures[sig_name]
    names = list(sig.inputs)
    has_rows, has_cols = "instances" in doc, "inputs" in doc
    if has_rows and has_cols:
        raise RequestError("Not both 'instances' and 'inputs' can be specified")
    if not has_rows and not has_cols:
        raise RequestError("Missing 'inputs' or 'instances' key")

    def value_of(name, value, batched):
        """→ (array, spacing from a file or None)."""
        if _is_b64(value) or (batched and isinstance(value, list) and value and all(_is_b64(v) for v in value)):
            raise RequestError(f"Input '{name}': a b64 value stands for one example; use the row format "
                               "('instances') to send files")
        arr = _array(value, name, sig.inputs[name])
        _check_shape(arr, name, sig.inputs[name], batched)
        return arr

    if has_cols:
        inputs = doc["inputs"]
        if not isinstance(inputs, dict) or (len(names) == 1 and names[0] not in inputs):
            inputs = {names[0]: inputs} if len(names) == 1 else inputs
        if not isinstance(inputs, dict):
            raise RequestError(f"'inputs' must be an object with keys {names}")
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise RequestError(f"Input tensor alias not found in signature: {unknown[0]}. Inputs expected to be in "
                               f"the set {{{','.join(names)}}}.")
        missing = [n for n in names if n not in inputs]
        if missing:
            raise RequestError(f"Missing input(s) {missing}; the signature takes {names}")
        batch = {n: value_of(n, inputs[n], True) for n in names}
        sizes = {len(v) for v in batch.values()}
        if len(sizes) != 1:
            raise RequestError("Input tensors must have the same size along the 0-th (batch) dimension")
        return sig_name, [batch], False

    instances = doc["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError("'instances' must be a non-empty list")
    examples: list[dict[str, np.ndarray]] = []
    from_files = False
    for i, inst in enumerate(instances):
        if not (isinstance(inst, dict) and not _is_b64(inst)):
            if len(names) != 1 and not (_is_b64(inst) and "image" in names):
                raise RequestError(f"Failed to process element: {i} of 'instances' list. Expecting an object with "
                                   f"keys {names}")
            inst = {"image" if _is_b64(inst) and "image" in names else names[0]: inst}
        unknown = sorted(set(inst) - set(names))
        if unknown:
            raise RequestError(f"Failed to process element: {i} of 'instances' list. JSON object: unknown input "
                               f"'{unknown[0]}'; the signature takes {names}")
        ex = {}
        for n in names:
            if n not in inst:
                continue
            v = inst[n]
            if _is_b64(v):
                if n != "image" or read_file is None:
                    raise RequestError(f"Failed to process element: {i} of 'instances' list. Input '{n}' takes "
                                       "numbers, not b64 bytes")
                arr, spacing = read_file(_decode_b64(v))
                from_files = True
                if "spacing" in names and "spacing" not in inst and spacing is not None:
                    ex["spacing"] = np.asarray(spacing, np.float32)
            else:
                arr = _array(v, n, sig.inputs[n])
            ex[n] = arr
        missing = [n for n in names if n not in ex]
        if missing:
            raise RequestError(f"Failed to process element: {i} of 'instances' list. Missing input(s) {missing}")
        for n in names:
            try:
                _check_shape(ex[n], n, sig.inputs[n], batched=False)
            except RequestError as exc:
                raise RequestError(f"Failed to process element: {i} of 'instances' list. {exc}") from None
        examples.append(ex)
    shapes = {tuple((n, ex[n].shape) for n in names) for ex in examples}
    if len(shapes) == 1:
        return sig_name, [{n: np.stack([ex[n] for ex in examples]) for n in names}], True
    if from_files:
        return sig_name, [{n: ex[n][None] for n in names} for ex in examples], True
    raise RequestError("Failed to process 'instances': the examples have different shapes "
                       f"({sorted({ex[names[0]].shape for ex in examples})}); they cannot be batched")


def _tolist(a: np.ndarray):
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return a.astype(np.float64).tolist()
    if a.dtype.kind in "SO":
        return [{"b64": base64.b64encode(bytes(v)).decode()} for v in a.ravel()]
    return a.tolist()


def format_response(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    """``{"predictions": ...}`` (row format) or ``{"outputs": ...}`` (columnar), as TF Serving writes them."""
    if row_format:
        if len(outputs) == 1:
            return {"predictions": _tolist(next(iter(outputs.values())))}
        n = len(next(iter(outputs.values())))
        cols = {k: _tolist(v) for k, v in outputs.items()}
        return {"predictions": [{k: cols[k][i] for k in cols} for i in range(n)]}
    if len(outputs) == 1:
        return {"outputs": _tolist(next(iter(outputs.values())))}
    return {"outputs": {k: _tolist(v) for k, v in outputs.items()}}


def model_status(version: int) -> dict:
    """``GetModelStatus`` for one loaded version."""
    return {"model_version_status": [{"version": str(int(version)), "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


def model_metadata(name: str, version: int, metadata: dict) -> dict:
    """``GetModelMetadata``: ``{"model_spec": {...}, "metadata": {"signature_def": ...}}``."""
    return {"model_spec": {"name": name, "signature_name": "", "version": str(int(version))}, "metadata": metadata}
