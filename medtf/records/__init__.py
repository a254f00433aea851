"""② TFRecord shards + manifest: the one versioned schema, encoder, writer, splits and the converter.

Public API (lazy: importing ``medtf.records`` does not import TensorFlow; ``load`` and
``schema.parse_example`` do; writing records never needs it):

* :func:`load` (``directory, split`` → ``tf.data.Dataset`` of dicts), :func:`read_manifest` (the one
  manifest reader) and :func:`shard_paths` (the one shard lister).
* :func:`convert` with :class:`ConvertConfig` (what ``tfrecord-convert`` runs), :func:`convert_unit`
  (the pure "one source → examples" function), :class:`ProcessOptions`; :func:`convert_beam`, the same
  conversion as an Apache Beam job (``--runner beam``).
* :func:`encode_example` (the one record encoder, TF-free), :func:`assign_splits`, :func:`parse_split`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load": "medtf.records.reader",
    "read_manifest": "medtf.records.reader",
    "shard_paths": "medtf.records.reader",
    "convert": "medtf.records.convert",
    "convert_unit": "medtf.records.convert",
    "convert_beam": "medtf.records.beam",
    "iter_convert_unit": "medtf.records.convert",
    "ConvertConfig": "medtf.records.convert",
    "ConvertError": "medtf.records.convert",
    "ConvertResult": "medtf.records.convert",
    "Example": "medtf.records.convert",
    "ProcessOptions": "medtf.records.process",
    "ProcessError": "medtf.records.process",
    "process_image": "medtf.records.process",
    "encode_example": "medtf.records.encode",
    "frame_record": "medtf.records.encode",
    "SCHEMA_VERSION": "medtf.records.schema",
    "SCHEMA_NAME": "medtf.records.schema",
    "assign_splits": "medtf.records.split",
    "parse_split": "medtf.records.split",
    "read_labels": "medtf.records.labels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'medtf.records' has no attribute {name!r}")
