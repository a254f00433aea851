"""Raw-input parity: every artifact, given the RAW source file of a test record, must return what it
returns on that record — so the preprocessing chain it carries reproduces the conversion and training
preprocessing exactly.

For each test record whose source can be found (``medtf.io.discover`` over the input folders, which
names every source with the same keyed pseudonym the records carry) the source is read as the converter
read it, then:

* ``keras``: the run's chain (NumPy reference) → the Keras model — what ``medtf predict`` does;
* ``savedmodel``: ``serving_default`` on the raw pixels (+ spacing) — the chain as graph ops;
* ``tflite-*``: the edge runtime's ``EdgeModel`` on the raw pixels;
* ``onnx``: ``medtf.export.onnx.OnnxModel`` (ONNX Runtime, the stored chain in NumPy) on the raw pixels.

Each is compared with the same artifact on the record's preprocessed input (``raw_vs_records``: max
|Δ| of the outputs; the gate, :data:`RAW_TOLERANCES`) and with the Keras model on the record
(``raw_vs_keras``: max |Δ| and decision agreement, reported). A stored spec that does not match what
conversion did (a missing window, spacing or size) fails the gate.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

#: Largest accepted max |artifact(raw) − artifact(record)| per format. Float artifacts see the same
#: numbers up to float32 rounding of the resampling/resize arithmetic; quantized ones may move one
#: quantization step when an input value lands on a rounding boundary.
RAW_TOLERANCES = {
    "keras": 1e-4,
    "savedmodel": 1e-4,
    "tflite-fp32": 1e-4,
    "tflite-fp16": 1e-4,
    "tflite-dynamic": 0.02,
    "tflite-int8": 0.02,
    "tflite-int8-qat": 0.02,
    "tflite-int8-pqat": 0.02,
    "tflite-pruned": 1e-4,
    "onnx": 1e-4,
}


@dataclasses.dataclass
class RawSet:
    """Test records paired with their raw sources."""

    keys: list[str]
    raws: list[tuple[np.ndarray, tuple[float, ...]]]  # (raw channels-last array, spacing)
    x_records: np.ndarray  # the records' model inputs (training stage applied), stacked
    skipped: list[tuple[str, str]]  # (record key, reason)


def raw_test_inputs(records_dir, split: str, info, *, input_roots: Sequence | None = None,
                    limit: int | None = 64) -> RawSet:
    """Pair up to ``limit`` records of ``split`` with their raw sources.

    The sources are found the way the converter named them: ``medtf.io.discover`` over the input folders
    with the site's pseudonym key gives every unit its record key (a keyed pseudonym of its path, or the
    series token), so no path needs to be stored with the records.

    Args:
        records_dir: the records the run was trained on.
        split: usually "test".
        info: the run's ``RunInfo`` (its chain says whether the header VOI is applied).
        input_roots: the folders given to ``tfrecord-convert`` (default: remembered on this machine by
            the converter, ``medtf.records.local``, or the manifest's ``input_roots`` with ``--keep-paths``).
        limit: at most this many records (None: all).

    Returns:
        :class:`RawSet` (empty when no source is reachable; ``skipped`` says why).
    """
    import tensorflow as tf

    from medtf.io import ReadError, ReadOptions, discover, read_unit
    from medtf.io.inputs import site_pseudonymizer
    from medtf.preprocess import tf_ops
    from medtf.records.convert import record_key
    from medtf.records.local import recall_inputs
    from medtf.records.reader import load, read_manifest

    manifest = read_manifest(records_dir)
    roots = [str(r) for r in (input_roots or recall_inputs(records_dir) or manifest.get("input_roots") or [])]
    roots = [r for r in roots if os.path.exists(r)]
    keys, raws, xs, skipped = [], [], [], []
    if not roots:
        return RawSet([], [], np.zeros((0,), np.float32), [("*", "source folders unknown (pass --input-root)")])
    options_doc = manifest.get("options") or {}
    pz = site_pseudonymizer()
    units, _ = discover(roots, pseudonymizer=pz, mode=options_doc.get("mode", "auto"),
                        keep_paths=bool(options_doc.get("keep_paths")))
    by_key = {u.key: u for u in units}
    frames = "each" if manifest.get("mode") == "slice" else "all"
    options = ReadOptions(apply_voi=info.chain.voi, frames=frames)
    cache: dict[str, Any] = {}
    for e in load(records_dir, split).as_numpy_iterator():
        if limit is not None and len(keys) >= limit:
            break
        key = e["source"].decode()
        unit_key = key if key in by_key else key.rsplit("#", 1)[0]
        unit = by_key.get(unit_key)
        if unit is None:
            skipped.append((key, "source not found under the input folders (moved, or another pseudonym key)"))
            continue
        if unit_key not in cache:
            try:
                imgs = read_unit(unit, pseudonymizer=pz, options=options)
                cache = {unit_key: {record_key(unit_key, im, len(imgs) == 1): im for im in imgs}}
            except (ReadError, OSError, ValueError) as exc:
                skipped.append((key, f"source not readable ({getattr(exc, 'reason', exc)})"))
                continue
        image = cache[unit_key].get(key)
        if image is None:
            skipped.append((key, "the source no longer holds this image"))
            continue
        keys.append(key)
        raws.append((np.asarray(image.array), tuple(float(s) for s in image.spacing)))
        xs.append(np.asarray(tf_ops.apply(tf.constant(e["image"]), info.preprocessing)))
    x = np.stack(xs).astype(np.float32) if xs else np.zeros((0,), np.float32)
    return RawSet(keys, raws, x, skipped)


def _decisions(task, p, threshold):
    from medtf.interpret import decide

    if task == "restoration":
        return None
    return decide(task, p, threshold)


def raw_parity(model, info, artifacts: dict[str, Any], raw: RawSet, *,
               tolerances: dict[str, float] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every artifact (and the Keras model) on the raw sources; compare (see the module docstring).

    Args:
        model: the Keras model.
        info: the run's ``RunInfo``.
        artifacts: {format: path} as ``medtf export`` wrote them (SavedModel version folder, .tflite or .onnx).
        raw: from :func:`raw_test_inputs`.
        tolerances: {format: max |Δ|} over :data:`RAW_TOLERANCES`.
        progress: print a line per artifact.

    Returns:
        {"examples", "skipped", "exports": {format: {"raw_vs_records", "raw_vs_keras", "agreement",
        "tolerance", "passed", "errors"}}, "passed", "failed"}.
    """
    from medtf.preprocess import apply_chain

    tol = dict(RAW_TOLERANCES)
    tol.update(tolerances or {})
    n = len(raw.keys)
    report: dict[str, Any] = {"examples": n, "skipped": len(raw.skipped),
                              "skipped_reasons": sorted({r for _, r in raw.skipped}), "exports": {}}
    if not n:
        report.update(passed=True, failed=[], note="no raw source reachable: raw parity not checked")
        return report
    ref = np.asarray(model.predict(raw.x_records, verbose=0, batch_size=8), np.float32)
    runners: dict[str, tuple] = {}

    def keras_raw(a, sp):
        x = apply_chain(a, info.chain, sp)
        return np.asarray(model(x[None], training=False), np.float32)[0]

    runners["keras"] = (keras_raw, lambda x: ref)
    for fmt, path in artifacts.items():
        if fmt == "savedmodel":
            runners[fmt] = _savedmodel_runners(path)
        elif str(path).endswith(".tflite"):
            runners[fmt] = _tflite_runners(path)
        elif str(path).endswith(".onnx"):
            runners[fmt] = _onnx_runners(path)
    failed = []
    for fmt, (on_raw, on_records) in runners.items():
        if progress:
            print(f"raw parity: {fmt} on {n} raw source(s) …", flush=True)
        rec = np.asarray(on_records(raw.x_records), np.float32).reshape(ref.shape)
        outs, errors = [], []
        for key, (a, sp) in zip(raw.keys, raw.raws):
            try:
                outs.append(np.asarray(on_raw(a, sp), np.float32))
            except Exception as exc:  # noqa: BLE001 - a raw input the artifact cannot take fails the gate
                errors.append(f"{key}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                outs.append(np.full(ref.shape[1:], np.nan, np.float32))
        out = np.stack(outs).reshape(ref.shape)
        d_rec = float(np.nanmax(np.abs(out - rec))) if not errors else float("inf")
        d_keras = float(np.nanmax(np.abs(out - ref))) if not errors else float("inf")
        dec_ref, dec_out = _decisions(info.task, ref, info.threshold), _decisions(info.task, out, info.threshold)
        agree = None if dec_ref is None or errors else float(np.mean(dec_ref == dec_out))
        t = tol.get(fmt, tol["tflite-int8"])
        entry = {"raw_vs_records": d_rec, "raw_vs_keras": d_keras, "agreement": agree, "tolerance": t,
                 "passed": bool(not errors and d_rec <= t), "errors": errors[:5]}
        if not entry["passed"]:
            failed.append(fmt)
        report["exports"][fmt] = entry
    report["failed"] = failed
    report["passed"] = not failed
    return report


def _tflite_runners(path):
    from medtf.export.edge import EdgeModel

    em = EdgeModel(path)
    return (lambda a, sp: em.run(em.preprocess(a, sp)[None])[0]), (lambda x: em.run(x))


def _onnx_runners(path):
    from medtf.export.onnx import OnnxModel

    om = OnnxModel(path)
    return (lambda a, sp: om.run(om.preprocess(a, sp)[None])[0]), (lambda x: om.run(x))


def _savedmodel_runners(version_dir):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    serve = loaded.signatures["serving_default"]
    pre = loaded.signatures["predict_preprocessed"]
    wants_spacing = "spacing" in serve.structured_input_signature[1]

    def on_raw(a, sp):
        kw = {"image": tf.constant(np.asarray(a, np.float32)[None])}
        if wants_spacing:
            kw["spacing"] = tf.constant(np.asarray(sp, np.float32)[None])
        return serve(**kw)["predictions"].numpy()[0]

    def on_records(x):
        return np.concatenate([pre(x=tf.constant(x[i:i + 16]))["predictions"].numpy() for i in range(0, len(x), 16)])

    return on_raw, on_records


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table of a raw parity report."""
    if not report.get("examples"):
        return f"raw parity: {report.get('note', 'not checked')}"
    head = f"{'raw input':<18}{'max|Δ| vs own records':>24}{'max|Δ| vs keras':>18}{'agree':>8}{'tol':>9}  ok"
    lines = [f"raw parity on {report['examples']} test source file(s) ({report['skipped']} skipped)", head,
             "-" * len(head)]
    for fmt, e in report["exports"].items():
        agree = "-" if e["agreement"] is None else f"{e['agreement']:.3f}"
        lines.append(f"{fmt:<18}{e['raw_vs_records']:>24.2e}{e['raw_vs_keras']:>18.2e}{agree:>8}{e['tolerance']:>9.0e}"
                     f"  {'yes' if e['passed'] else 'NO'}")
        for err in e["errors"][:2]:
            lines.append(f"    {err}")
    return "\n".join(lines)
