"""Export metadata: what travels with every exported artifact (TF-free).

Every ``.tflite`` file gets

* a sidecar JSON ``<file>.json`` (labels, preprocessing, input/output spec, source run, the file's
  sha256 and size), and
* the same document (without the file's own hash, which it cannot contain) inside the flatbuffer,
  as a ``Model.metadata`` entry named :data:`METADATA_NAME` whose buffer holds UTF-8 JSON.

The flatbuffer is edited with the generated schema module shipped by ``ai_edge_litert`` (or by
TensorFlow), so writing and reading work without TensorFlow. Nothing here imports TensorFlow or
Keras: the edge runtime reads its metadata through this module.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pathlib
from typing import Any

#: Schema name of the metadata document.
SCHEMA = "medtf.export/v1"
#: Name of the ``Model.metadata`` entry holding the JSON document inside a ``.tflite`` file.
METADATA_NAME = "medtf_metadata"
_TFLITE_IDENTIFIER = b"TFL3"


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(artifact) -> pathlib.Path:
    """``model.tflite`` → ``model.tflite.json``."""
    artifact = pathlib.Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def build_metadata(
    *,
    format: str,
    task: str,
    class_names,
    preprocessing: dict | None,
    input_spec: dict,
    conversion: dict | None = None,
    output_spec: dict,
    spatial_dims: int | None = None,
    threshold: float | None = None,
    source_run: str | None = None,
    source_sha256: str | None = None,
    quantization: dict | None = None,
    target: str = "ai-edge-litert",
    name: str | None = None,
    extra: dict | None = None,
) -> dict[str, Any]:
    """The metadata document (JSON-serialisable) for one exported artifact.

    Args:
        format: "tflite-fp32" | "tflite-fp16" | "tflite-dynamic" | "tflite-int8" | "savedmodel" ...
        task: binary | multiclass | multilabel | ordinal | segmentation | restoration.
        class_names: label names in output order (may be empty).
        preprocessing: ``Preprocessing.to_dict()`` of the training stage (applied by the edge runtime).
        conversion: the conversion stage applied before it on raw input (None: identity).
        input_spec / output_spec: {"name", "shape", "dtype", "quantization": [scale, zero_point]|None}.
        spatial_dims: 2 or 3.
        threshold: binary operating point chosen on validation, or None.
        source_run: the run folder (or model file) the artifact comes from.
        source_sha256: sha256 of the source model file.
        quantization: {"mode", "calibration_examples", "qat", "sparsity", ...}.
        target: runtime the artifact was made for ("ai-edge-litert", "tflite-runtime-2.14").
        name: model name.
        extra: more keys merged in.

    Returns:
        dict.
    """
    from medtf import __version__

    doc = {
        "schema": SCHEMA,
        "name": name,
        "format": format,
        "task": task,
        "class_names": [str(c) for c in (class_names or [])],
        "threshold": None if threshold is None else float(threshold),
        "spatial_dims": spatial_dims,
        "conversion": conversion,
        "preprocessing": preprocessing,
        "input": input_spec,
        "output": output_spec,
        "quantization": quantization or {"mode": "none"},
        "target": target,
        "source": {"run": None if source_run is None else str(source_run), "sha256": source_sha256},
        "medtf_version": __version__,
    }
    if extra:
        doc.update(extra)
    return doc


def schema_module():
    """The generated TFLite flatbuffer schema (``ModelT`` ...), without importing TensorFlow if possible."""
    for mod in ("ai_edge_litert.schema_py_generated", "tflite_runtime.schema_py_generated",
                "tensorflow.lite.python.schema_py_generated"):
        try:
            return importlib.import_module(mod)
        except ImportError:
            continue
    raise ImportError(
        "reading/writing metadata inside a .tflite needs the flatbuffer schema shipped with ai_edge_litert; "
        "install it with `pip install medtf[edge]` (or use the sidecar JSON)"
    )


def embed_metadata(tflite_bytes: bytes, doc: dict, name: str = METADATA_NAME) -> bytes:
    """Return ``tflite_bytes`` with ``doc`` (JSON) stored as the model metadata entry ``name``.

    An existing entry of that name is replaced; the converter's own entries are kept.

    Raises:
        ValueError: the bytes are not a TFLite flatbuffer.
    """
    import flatbuffers
    import numpy as np

    if len(tflite_bytes) < 8 or tflite_bytes[4:8] != _TFLITE_IDENTIFIER:
        raise ValueError(f"not a TFLite flatbuffer (file identifier {bytes(tflite_bytes[4:8])!r}, expected b'TFL3')")
    schema = schema_module()
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)
    payload = json.dumps(doc, sort_keys=True).encode("utf-8")
    buf = schema.BufferT()
    buf.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers = list(model.buffers or [])
    model.metadata = [m for m in (model.metadata or []) if _str(m.name) != name]
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(max(1024, len(tflite_bytes) + len(payload) + 4096))
    builder.Finish(model.Pack(builder), file_identifier=_TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _str(v) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)


def read_embedded_metadata(tflite, name: str = METADATA_NAME) -> dict | None:
    """The JSON document stored in a ``.tflite`` (path or bytes) under ``name``, or None."""
    data = tflite if isinstance(tflite, (bytes, bytearray)) else pathlib.Path(tflite).read_bytes()
    schema = schema_module()
    model = schema.Model.GetRootAs(bytearray(data), 0)
    for i in range(model.MetadataLength()):
        meta = model.Metadata(i)
        if _str(meta.Name()) == name:
            buffer = model.Buffers(meta.Buffer())
            raw = buffer.DataAsNumpy()
            if isinstance(raw, int):  # empty vector
                return None
            return json.loads(bytes(raw).decode("utf-8"))
    return None


def write_sidecar(artifact, doc: dict) -> pathlib.Path:
    """Write ``<artifact>.json``: ``doc`` plus the artifact's sha256 and size. Returns the path."""
    artifact = pathlib.Path(artifact)
    full = dict(doc)
    full["file"] = artifact.name
    if artifact.is_file():
        full["sha256"] = sha256_file(artifact)
        full["size_bytes"] = artifact.stat().st_size
    path = sidecar_path(artifact)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load_metadata(artifact, *, verify: bool = True) -> dict:
    """Metadata of an exported ``.tflite``: the sidecar JSON, else the embedded document.

    Args:
        artifact: path of the ``.tflite``.
        verify: check the sidecar's sha256 against the file.

    Raises:
        FileNotFoundError: the artifact does not exist.
        ValueError: no metadata found, or the sha256 does not match.
    """
    artifact = pathlib.Path(artifact)
    if not artifact.is_file():
        raise FileNotFoundError(f"{artifact}: no such model file")
    side = sidecar_path(artifact)
    if side.is_file():
        doc = json.loads(side.read_text())
        if verify and doc.get("sha256") and doc["sha256"] != sha256_file(artifact):
            raise ValueError(
                f"{side}: sha256 {doc['sha256'][:12]}… does not match {artifact.name} "
                f"({sha256_file(artifact)[:12]}…); the sidecar belongs to another file"
            )
        return doc
    try:
        doc = read_embedded_metadata(artifact)
    except ImportError:
        doc = None
    if doc is None:
        raise ValueError(
            f"{artifact}: no metadata (expected the sidecar {side.name} or a '{METADATA_NAME}' entry in the "
            "flatbuffer); export it with `medtf export`"
        )
    return doc
