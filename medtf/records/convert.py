"""The converter: sources → patient-grouped, sharded TFRecords + ``manifest.json``.

Pipeline (no TensorFlow anywhere, so workers start fast and never fork after a TF import):

1. ``medtf.io.discover`` groups the inputs into source units (a file, a DICOM series, an npz);
   files it cannot use are rejected with a reason.
2. Each unit goes through :func:`convert_unit` — the pure "one source → examples" function (read,
   process, encode) — in ``workers`` processes. Each process appends the unit's framed records to its
   journal ``OUTPUT/.work/journal-*.tfr`` and then one JSON line (key, patient, label, split hint,
   dtype, offsets) to ``journal-*.jsonl``; a unit with a complete line (and intact frames) is done,
   which is what ``--resume`` re-uses. Rejections (unreadable, malformed, ...) are journalled too.
3. With every example's (patient, label) known, :func:`medtf.records.split.assign_splits` assigns
   patients to splits (or the inputs' own splits are used).
4. Shards are concatenations of cached frames in a seeded order, written atomically; then
   ``manifest.json``, last. ``OUTPUT/.work`` is removed at the end (``keep_work`` keeps it).

The result depends only on the inputs and options (never on worker count or scheduling), so one
worker, two workers, and a run killed and resumed all give byte-identical shards and manifest.
Timings go to ``convert_stats.json``, not the manifest.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import pathlib
import shutil
import sys
import time
import traceback
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from medtf import __version__
from medtf.io import Pseudonymizer, ReadError, ReadOptions, discover, iter_npz, read_unit
from medtf.records import encode as _enc
from medtf.records import writer as _w
from medtf.records.labels import LabelTable, read_labels
from medtf.records.process import ProcessError, ProcessOptions, join_dtypes, process_image
from medtf.records.split import DEFAULT_SPLIT, assign_splits, parse_split

MODES = ("auto", "slice", "volume")
EXIT_OK, EXIT_SOME_REJECTED, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
WORK = ".work"
STATS = "convert_stats.json"


class ConvertError(Exception):
    """The conversion cannot run (bad options, output folder in the way); maps to exit code 2."""


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """Options of one conversion (``tfrecord-convert``'s flags).

    Attributes:
        inputs: files and/or folders to convert.
        output: output folder.
        labels: labels CSV (``path`` relative to the input folder + ``label`` or 0/1 label columns).
        mode: "auto" (a series of single-frame slices → one volume, else one example per image),
            "slice" or "volume".
        process: intensity / window / spacing / size options (:class:`ProcessOptions`).
        split: "auto" (the inputs' splits when every source has one, else 0.7/0.15/0.15), "input",
            or fractions (see :func:`medtf.records.split.parse_split`).
        seed: seed for the patient split and the record order within shards.
        workers: worker processes (1 = in this process).
        resume: re-use the completed units of an interrupted run in ``OUTPUT/.work``.
        overwrite: replace an existing dataset in ``output``.
        key_file: pseudonym key file (default: ``$MEDTF_PSEUDONYM_KEY`` or ``~/.config/medtf/pseudonym.key``).
        shard_mb: approximate shard size in MB.
        read_options: extra keyword arguments for ``medtf.io.ReadOptions`` (e.g. ``{"voi": True}``).
        progress: show a progress bar on stderr.
        keep_work: keep ``OUTPUT/.work`` after success.
    """

    inputs: tuple[str, ...]
    output: str
    labels: str | None = None
    mode: str = "auto"
    process: ProcessOptions = ProcessOptions()
    split: str = "auto"
    seed: int = 0
    workers: int = 1
    resume: bool = False
    overwrite: bool = False
    key_file: str | None = None
    shard_mb: float = 256.0
    read_options: tuple[tuple[str, object], ...] = ()
    progress: bool = True
    keep_work: bool = False

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(str(p) for p in self.inputs))
        if isinstance(self.read_options, dict):
            object.__setattr__(self, "read_options", tuple(sorted(self.read_options.items())))
        if not self.inputs:
            raise ConvertError("no INPUT given: name at least one file or folder")
        if self.mode not in MODES:
            raise ConvertError(f"--mode must be one of {MODES}. Received: {self.mode!r}")
        if self.workers < 1:
            raise ConvertError(f"--workers must be >= 1. Received: {self.workers}")
        if not self.shard_mb > 0:
            raise ConvertError(f"--shard-mb must be > 0. Received: {self.shard_mb}")
        try:
            parse_split(self.split)
        except ValueError as exc:
            raise ConvertError(str(exc)) from None

    def options_dict(self) -> dict:
        """Options that determine the output (recorded in the manifest; no paths, no worker count)."""
        split = parse_split(self.split)
        return {
            "mode": self.mode,
            "process": self.process.to_dict(),
            "split": split if isinstance(split, str) else [[n, f] for n, f in split],
            "seed": self.seed,
            "labels": None if self.labels is None else pathlib.Path(self.labels).name,
            "shard_mb": self.shard_mb,
            "read_options": {k: v for k, v in self.read_options},
        }


class Example(NamedTuple):
    """One encoded example as :func:`convert_unit` returns it (what a Beam pipeline would carry)."""

    key: str  # record key = the ``source`` value the reader returns
    split: str | None  # split fixed by the source (npz split, CSV split column), else None
    patient: str  # keyed pseudonym
    label: tuple[int, ...] | None
    payload: bytes  # serialized tf.train.Example
    dtype: str  # storage dtype of the image
    spatial_dims: int
    channels: int


@dataclasses.dataclass(frozen=True)
class UnitTask:
    """A unit plus what the labels CSV says about it."""

    unit: object  # medtf.io.SourceUnit
    label: tuple[int, ...] | None = None
    split: str | None = None


# --------------------------------------------------------------------------------- pure function


def _read_options(config: ConvertConfig):
    opts = dict(config.read_options)
    if config.mode == "slice":
        opts.setdefault("frames", "each")  # one example per frame of a multi-frame object
    return ReadOptions(**opts)


def iter_convert_unit(unit, config: ConvertConfig, pseudonymizer, *, label=None, split=None,
                      image_dtype: str | None = None) -> Iterator[Example]:
    """Read, process and encode one source unit, yielding its examples one at a time.

    Raises:
        medtf.io.ReadError: the source cannot be read (reason has no PHI).
        ProcessError: the processing options do not fit the image.
    """
    options = config.process if image_dtype is None else dataclasses.replace(config.process, image_dtype=image_dtype)
    if unit.kind == "npz":  # stream the rows instead of materialising thousands of Images
        images = iter_npz(unit.paths[0], pseudonymizer=pseudonymizer, file_key=unit.key,
                          options=_read_options(config))
        single = False
    else:
        images = read_unit(unit, pseudonymizer=pseudonymizer, options=_read_options(config))
        if not images:
            raise ProcessError("the source holds no image")
        single = len(images) == 1
    seen = set()
    for image in images:
        img = process_image(image, options, voi=bool(dict(config.read_options).get("apply_voi")))
        if single:
            key = unit.key
        else:  # "#<index>", or "#<split>/<index>" for sources that carry splits (npz rows count per split)
            key = f"{unit.key}#{image.split}/{image.index}" if image.split else f"{unit.key}#{image.index}"
        if key in seen:
            raise ProcessError(f"the reader returned two images with index {image.index}")
        seen.add(key)
        lab = tuple(int(v) for v in np.atleast_1d(img.label)) if img.label is not None else label
        dtype = img.array.dtype.name
        payload = _enc.encode_example(
            img.array,
            spacing=img.spacing,
            patient=img.patient,
            source=key,
            image_dtype=dtype,
            origin=img.origin,
            direction=img.direction,
            label=lab,
            mask=img.mask,
            modality=img.modality or "",
        )
        yield Example(key, img.split or split, img.patient, lab, payload, dtype, img.spatial_dims, int(img.array.shape[-1]))


def convert_unit(unit, config: ConvertConfig, pseudonymizer, *, label=None, split=None,
                 image_dtype: str | None = None) -> list[Example]:
    """The pure unit of work, "one source → examples": what a Beam ``FlatMap`` runs unchanged.

    Args:
        unit: a ``medtf.io.SourceUnit``.
        config: conversion options (``config.process`` and ``config.read_options`` are used).
        pseudonymizer: ``medtf.io.Pseudonymizer``.
        label: label from the labels CSV (a reader's own label, e.g. npz, takes precedence).
        split: split from the labels CSV (a reader's own split takes precedence).
        image_dtype: force the storage dtype (the dataset's), else the narrowest exact one.

    Returns:
        The unit's :class:`Example` s, in the reader's order.

    Raises:
        medtf.io.ReadError, ProcessError: the unit is rejected (the caller records the reason).
    """
    return list(iter_convert_unit(unit, config, pseudonymizer, label=label, split=split, image_dtype=image_dtype))


# ------------------------------------------------------------------------------------ workers


def _unit_id(key: str, fingerprint: str, dtype: str | None) -> str:
    return hashlib.sha256(f"{fingerprint}\x00{dtype}\x00{key}".encode()).hexdigest()[:40]


def _safe_reason(exc: BaseException) -> str:
    if isinstance(exc, ReadError):
        return exc.reason
    if isinstance(exc, ProcessError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory while decoding (image too large)"
    # Unknown exceptions may quote header values: keep only the type (traceback with MEDTF_DEBUG=1).
    return f"internal error ({type(exc).__name__}) while converting; rerun with MEDTF_DEBUG=1 for details"


_STATE: dict = {}


def _init_worker(config: ConvertConfig, work: str, fingerprint: str, secret: bytes | None):
    if secret is not None:
        _STATE["pseudonymizer"] = Pseudonymizer(secret)
    _STATE.update(config=config, work=work, fingerprint=fingerprint)
    _STATE.pop("journal", None)


def _run_task(args) -> dict:
    task, dtype = args
    return _convert_to_cache(task, dtype, _STATE["config"], _STATE["pseudonymizer"], _STATE["work"],
                             _STATE["fingerprint"])


class _Journal:
    """Append-only cache of one process: framed records in ``<name>.tfr``, one JSON line per finished unit
    in ``<name>.jsonl`` (written after the unit's frames). A process killed at any point leaves complete
    lines for complete units only; a torn last line is ignored on resume."""

    def __init__(self, work: str):
        import uuid

        name = f"journal-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.data_name = f"{name}.tfr"
        self.data = open(os.path.join(work, self.data_name), "ab", buffering=0)
        self.meta = open(os.path.join(work, f"{name}.jsonl"), "ab", buffering=0)
        self.offset = 0

    def write_frames(self, frames: list[bytes]) -> int:
        start = self.offset
        buf = b"".join(frames)
        view = memoryview(buf)
        while view:
            n = self.data.write(view)
            view = view[n:]
        self.offset += len(buf)
        return start

    def commit(self, meta: dict) -> None:
        self.meta.write((json.dumps(meta, sort_keys=True) + "\n").encode())


def _close_journal() -> None:
    j = _STATE.pop("journal", None)
    if j is not None and _STATE.get("journal_pid") == os.getpid():
        j.data.close()
        j.meta.close()


def _journal(work: str) -> _Journal:
    j = _STATE.get("journal")
    if j is None or _STATE.get("journal_pid") != os.getpid() or _STATE.get("journal_work") != work:
        j = _STATE["journal"] = _Journal(work)
        _STATE["journal_pid"], _STATE["journal_work"] = os.getpid(), work
    return j


def _convert_to_cache(task: UnitTask, dtype, config, pseudonymizer, work: str, fingerprint: str) -> dict:
    """Convert one unit into this process's journal; return (and commit) its metadata."""
    uid = _unit_id(task.unit.key, fingerprint, dtype)
    journal = _journal(work)
    meta: dict = {"uid": uid, "key": task.unit.key, "examples": []}
    try:
        frames, exs = [], []
        size, unit_start = 0, None
        for ex in iter_convert_unit(task.unit, config, pseudonymizer, label=task.label, split=task.split,
                                    image_dtype=dtype):
            frame = _enc.frame_record(ex.payload)
            exs.append({"key": ex.key, "split": ex.split, "patient": ex.patient,
                        "label": None if ex.label is None else list(ex.label), "dtype": ex.dtype,
                        "spatial_dims": ex.spatial_dims, "channels": ex.channels,
                        "offset": size, "length": len(frame)})  # relative to the unit's first byte
            frames.append(frame)
            size += len(frame)
            if sum(len(f) for f in frames) > 64 << 20:  # stream big units (npz, many frames) in pieces
                start = journal.write_frames(frames)
                unit_start = start if unit_start is None else unit_start
                frames = []
        start = journal.write_frames(frames)
        unit_start = start if unit_start is None else unit_start
        for e in exs:  # the unit's bytes are contiguous in this process's journal
            e["offset"] += unit_start
        meta["examples"] = exs
        meta["data"] = journal.data_name
    except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded rejection
        if os.environ.get("MEDTF_DEBUG"):
            traceback.print_exc()
        meta = {"uid": uid, "key": task.unit.key, "rejected": _safe_reason(exc)}
    journal.commit(meta)
    return meta


def _load_journals(work: str) -> dict[str, dict]:
    """Completed units recorded in ``work``'s journals ({uid: meta}); frames are CRC-checked."""
    done: dict[str, dict] = {}
    for name in sorted(os.listdir(work)):
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(work, name), "rb") as f:
            lines = f.read().split(b"\n")
        for line in lines:
            try:
                meta = json.loads(line)
            except ValueError:
                continue  # torn last line of a killed process
            if meta.get("rejected"):
                done[meta["uid"]] = meta
                continue
            data = os.path.join(work, meta.get("data", ""))
            try:
                with open(data, "rb") as f:
                    for e in meta["examples"]:
                        f.seek(e["offset"])
                        buf = f.read(e["length"])
                        if len(list(_enc.iter_frames(buf))) != 1:
                            raise ValueError("bad frame")
            except (OSError, ValueError, KeyError):
                continue
            done[meta["uid"]] = meta
    return done


# --------------------------------------------------------------------------------- orchestration


@dataclasses.dataclass
class ConvertResult:
    """What :func:`convert` did: ``exit_code`` (0 all converted, 1 some rejected, 3 nothing converted),
    the manifest it wrote, and timings."""

    exit_code: int
    manifest: dict
    output: str
    stats: dict


def _relpath(path: str, roots: Sequence[pathlib.Path]) -> str:
    p = pathlib.Path(path).resolve()
    for root in roots:
        if root.is_dir():
            try:
                return p.relative_to(root).as_posix()
            except ValueError:
                continue
        elif p == root:
            return p.name
    return p.name


def _prepare_output(config: ConvertConfig) -> pathlib.Path:
    out = pathlib.Path(config.output)
    if out.exists() and not out.is_dir():
        raise ConvertError(f"--output {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    ours = [p for p in out.iterdir() if p.name in (_w.MANIFEST, WORK, STATS) or _w.SHARD_RE.match(p.name)]
    if ours and not (config.resume or config.overwrite):
        raise ConvertError(
            f"--output {out}: already holds records ({', '.join(sorted(p.name for p in ours)[:3])}, ...); "
            "pass --resume to finish an interrupted run or --overwrite to replace it"
        )
    # a manifest exists only for a complete dataset: drop the old one before changing anything
    (out / _w.MANIFEST).unlink(missing_ok=True)
    if config.overwrite and not config.resume:
        shutil.rmtree(out / WORK, ignore_errors=True)
        _w.remove_stale(out, ())
        (out / STATS).unlink(missing_ok=True)
    elif not config.resume:
        shutil.rmtree(out / WORK, ignore_errors=True)
    (out / WORK).mkdir(parents=True, exist_ok=True)
    return out


def _pseudonymizer(config: ConvertConfig):
    if config.key_file:
        try:
            return Pseudonymizer.from_key_file(config.key_file)
        except (FileNotFoundError, ValueError) as exc:
            raise ConvertError(f"--key-file: {exc}") from None
    return Pseudonymizer.default()


def _label_for(unit, table: LabelTable | None, roots) -> tuple[tuple | None, str | None, str | None]:
    """(label, split, rejection reason) for a unit from the labels CSV."""
    if table is None or unit.kind == "npz":
        return None, None, None
    found = {table.lookup(_relpath(p, roots)) for p in unit.paths}
    if None in found:
        return None, None, "not listed in the labels CSV"
    if len(found) > 1:
        return None, None, "files of this unit have different labels/splits in the labels CSV"
    label, split = found.pop()
    return label, split, None


def _fingerprint(config: ConvertConfig, pseudonymizer) -> str:
    ident = {"options": config.options_dict(), "key": pseudonymizer.token("medtf.records/key-id"),
             "version": __version__, "schema": _enc.SCHEMA_VERSION}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _run_units(tasks: list[tuple[UnitTask, str | None]], config, pseudonymizer, work: str, fingerprint: str,
               desc: str) -> dict[str, dict]:
    """Convert units to the cache, in-process or in a pool; returns {unit key: meta}."""
    from tqdm.auto import tqdm

    results: dict[str, dict] = {}
    _close_journal()
    if config.resume:  # units finished by an interrupted run
        done = _load_journals(work)
        todo = []
        for task, dtype in tasks:
            meta = done.get(_unit_id(task.unit.key, fingerprint, dtype))
            if meta is not None and meta.get("key") == task.unit.key:
                results[task.unit.key] = meta
            else:
                todo.append((task, dtype))
        tasks = todo
    bar = tqdm(total=len(tasks), desc=desc, unit="src", disable=not config.progress, file=sys.stderr,
               dynamic_ncols=True)
    try:
        if config.workers == 1 or len(tasks) <= 1:
            for task, dtype in tasks:
                results[task.unit.key] = _convert_to_cache(task, dtype, config, pseudonymizer, work, fingerprint)
                bar.update(1)
        else:
            # fork is safe (and fast) while TensorFlow is not loaded; otherwise start clean processes.
            method = "fork" if "tensorflow" not in sys.modules and sys.platform != "win32" else "spawn"
            ctx = multiprocessing.get_context(method)
            if method == "fork":
                _STATE["pseudonymizer"] = pseudonymizer
                initargs = (config, work, fingerprint, None)
            else:  # the secret travels through the pool's pipe, never to disk
                initargs = (config, work, fingerprint, pseudonymizer._secret)
            with ctx.Pool(min(config.workers, len(tasks)), initializer=_init_worker, initargs=initargs) as pool:
                for meta in pool.imap_unordered(_run_task, tasks, chunksize=1):
                    results[meta["key"]] = meta
                    bar.update(1)
    finally:
        bar.close()
    return results


def _label_key(label) -> str:
    return ",".join(str(v) for v in label)


def convert(config: ConvertConfig) -> ConvertResult:
    """Run a conversion (see the module docstring).

    Args:
        config: options.

    Returns:
        :class:`ConvertResult`; ``exit_code`` 0 when every input converted, 1 when some were rejected,
        3 when nothing converted.

    Raises:
        ConvertError: unusable options or output folder (exit code 2).
    """
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    for p in config.inputs:
        if not os.path.exists(p):
            raise ConvertError(f"INPUT {p}: no such file or folder")
    table = None
    if config.labels:
        try:
            table = read_labels(config.labels)
        except (OSError, ValueError) as exc:
            raise ConvertError(f"--labels: {exc}") from None
    split_policy = parse_split(config.split)
    try:
        _read_options(config)
    except (TypeError, ValueError) as exc:
        raise ConvertError(f"read options: {exc}") from None
    pseudonymizer = _pseudonymizer(config)
    out = _prepare_output(config)
    work = str(out / WORK)
    fingerprint = _fingerprint(config, pseudonymizer)
    roots = [pathlib.Path(p).resolve() for p in config.inputs]

    # 1. discover
    units, rejected = discover(list(config.inputs), pseudonymizer=pseudonymizer, mode=config.mode)
    units = sorted(units, key=lambda u: u.key)
    timings["discover_s"] = time.perf_counter() - t0
    files: dict[str, dict] = {}
    for path, reason in rejected:
        files[_relpath(path, roots)] = {"outcome": "rejected", "reason": reason}
    tasks: list[tuple[UnitTask, str | None]] = []
    unit_paths: dict[str, list[str]] = {}
    unit_reject: dict[str, str] = {}
    for unit in units:
        unit_paths[unit.key] = sorted(_relpath(p, roots) for p in unit.paths)
        label, split, reason = _label_for(unit, table, roots)
        if reason:
            unit_reject[unit.key] = reason
            continue
        tasks.append((UnitTask(unit, label, split), None))

    # 2. convert every unit to the cache
    t1 = time.perf_counter()
    metas = _run_units(tasks, config, pseudonymizer, work, fingerprint, "convert")
    timings["convert_s"] = time.perf_counter() - t1
    for key, meta in metas.items():
        if meta.get("rejected"):
            unit_reject[key] = meta["rejected"]

    # dataset-wide properties, decided from the full set (independent of order)
    ok = [k for k in sorted(metas) if k not in unit_reject]
    dims = collections.Counter(e["spatial_dims"] for k in ok for e in metas[k]["examples"])
    spatial_dims = 3 if config.mode == "volume" else (2 if config.mode == "slice" else (max(dims) if dims else 2))
    for k in ok:
        if any(e["spatial_dims"] != spatial_dims for e in metas[k]["examples"]):
            unit_reject[k] = (f"{metas[k]['examples'][0]['spatial_dims']}D image in a dataset of {spatial_dims}D "
                              "examples (convert it separately or choose --mode)")
    ok = [k for k in ok if k not in unit_reject]
    chans = collections.Counter(e["channels"] for k in ok for e in metas[k]["examples"])
    channels = max(sorted(chans), key=lambda c: chans[c]) if chans else 1
    for k in ok:
        got = {e["channels"] for e in metas[k]["examples"]}
        if got != {channels}:
            unit_reject[k] = f"{sorted(got)} channel(s) in a dataset of {channels}-channel images"
    ok = [k for k in ok if k not in unit_reject]
    image_dtype = join_dtypes(e["dtype"] for k in ok for e in metas[k]["examples"])
    redo = [(t, image_dtype) for t, _ in tasks if t.unit.key in ok
            and any(e["dtype"] != image_dtype for e in metas[t.unit.key]["examples"])]
    if redo:  # re-encode the few units whose natural dtype is narrower than the dataset's
        t2 = time.perf_counter()
        metas.update(_run_units(redo, config, pseudonymizer, work, fingerprint, f"re-encode as {image_dtype}"))
        timings["reencode_s"] = time.perf_counter() - t2
        for t, _ in redo:
            m = metas[t.unit.key]
            if m.get("rejected") or any(e["dtype"] != image_dtype for e in m["examples"]):
                unit_reject[t.unit.key] = m.get("rejected") or f"could not store as {image_dtype}"
        ok = [k for k in ok if k not in unit_reject]

    # 3. splits
    examples = [(k, e) for k in ok for e in metas[k]["examples"]]
    hinted = [e for _, e in examples if e["split"]]
    if split_policy == "input" or (split_policy == "auto" and examples and len(hinted) == len(examples)):
        for k in ok:
            if any(not e["split"] for e in metas[k]["examples"]):
                unit_reject[k] = "no split given by the input (npz split or labels CSV split column) with --split input"
        ok = [k for k in ok if k not in unit_reject]
        examples = [(k, e) for k in ok for e in metas[k]["examples"]]
        split_of = {e["key"]: e["split"] for _, e in examples}
        order = ["train", "val", "test"]
        names = sorted(set(split_of.values()), key=lambda s: (order.index(s) if s in order else 3, s))
        split_desc = "input"
    else:
        ratios = DEFAULT_SPLIT if split_policy in ("auto", "input") else split_policy
        fixed = {}
        for _, e in examples:
            if e["split"]:
                fixed.setdefault(e["patient"], e["split"])
        free = [(e["patient"], tuple(e["label"]) if e["label"] is not None else None)
                for _, e in examples if e["patient"] not in fixed]
        by_patient = assign_splits(free, ratios, config.seed)
        by_patient.update(fixed)
        split_of = {e["key"]: by_patient[e["patient"]] for _, e in examples}
        names = [n for n, _ in ratios] + sorted({s for s in fixed.values()} - {n for n, _ in ratios})
        split_desc = [[n, f] for n, f in ratios]

    # 4. shards, in a seeded order inside each split
    t3 = time.perf_counter()
    from tqdm.auto import tqdm

    keep = []
    splits_info: dict[str, dict] = {}
    bar = tqdm(total=len(examples), desc="write shards", unit="rec", disable=not config.progress,
               file=sys.stderr, dynamic_ncols=True)
    target = int(config.shard_mb * 1e6)
    try:
        for name in names:
            members = sorted(((k, e) for k, e in examples if split_of[e["key"]] == name),
                             key=lambda ke: _w.order_key(config.seed, ke[1]["key"]))
            recs = [(os.path.join(work, metas[k]["data"]), e["offset"], e["length"]) for k, e in members]
            shards = _w.write_shards(out, name, recs, target, progress=bar.update)
            keep += shards
            labels = collections.Counter()
            unlabelled = 0
            for _, e in members:
                if e["label"] is None:
                    unlabelled += 1
                elif table is not None and table.multilabel:
                    labels.update(str(i) for i, v in enumerate(e["label"]) if v)
                else:
                    labels[_label_key(e["label"])] += 1
            splits_info[name] = {
                "examples": len(members),
                "patients": len({e["patient"] for _, e in members}),
                "labels": dict(sorted(labels.items(), key=lambda kv: (len(kv[0]), kv[0]))),
                "unlabelled": unlabelled,
                "shards": shards,
                "bytes": sum(r[2] for r in recs),
            }
    finally:
        bar.close()
    _close_journal()
    _w.remove_stale(out, keep)
    timings["write_s"] = time.perf_counter() - t3

    # 5. manifest (last)
    for key in sorted(unit_paths):
        if key in unit_reject:
            for p in unit_paths[key]:
                files[p] = {"outcome": "rejected", "reason": unit_reject[key], "unit": key}
            continue
        exs = metas[key]["examples"]
        per_split = collections.Counter(split_of[e["key"]] for e in exs)
        entry: dict = {"outcome": "converted", "unit": key, "records": len(exs)}
        if len(per_split) == 1:
            entry["split"] = next(iter(per_split))
        else:
            entry["splits"] = dict(sorted(per_split.items()))
        if len(exs) == 1:
            entry["key"] = exs[0]["key"]
        elif len(exs) <= 64:
            entry["keys"] = [e["key"] for e in exs]
        else:
            entry["key_pattern"] = f"{key}#<split>/<index>" if any(e["split"] for e in exs) else f"{key}#<index>"
        for p in unit_paths[key]:
            files[p] = dict(entry)
    n_rej = sum(1 for f in files.values() if f["outcome"] == "rejected")
    label_names = None
    if table is not None and table.label_names is not None:
        label_names = list(table.label_names)
    conversion = config.process.to_preprocessing(bool(dict(config.read_options).get("apply_voi")))
    all_labels = [tuple(e["label"]) for _, e in examples if e["label"] is not None]
    manifest = {
        "schema": _enc.SCHEMA_NAME,
        "schema_version": _enc.SCHEMA_VERSION,
        "tool": {"name": "medtf tfrecord-convert", "version": __version__},
        "image_dtype": image_dtype,
        "mode": "volume" if spatial_dims == 3 else "slice",
        "spatial_dims": spatial_dims,
        "channels": channels,
        "preprocessing": conversion.to_dict(),
        "input_roots": [str(r) for r in roots],
        "label_names": label_names,
        "multilabel": bool(table is not None and table.multilabel),
        "num_labels": (len(label_names) if label_names else (max(max(l) for l in all_labels) + 1 if all_labels else 0)),
        "split_method": split_desc,
        "options": config.options_dict(),
        "splits": splits_info,
        "counts": {
            "files": len(files),
            "converted_files": len(files) - n_rej,
            "rejected_files": n_rej,
            "units": len(unit_paths),
            "examples": len(examples),
        },
        "files": [dict(path=p, **files[p]) for p in sorted(files)],
    }
    _w.write_manifest(out, manifest)
    timings["total_s"] = time.perf_counter() - t0
    stats = {"timings": {k: round(v, 4) for k, v in timings.items()}, "workers": config.workers,
             "units": len(units), "examples": len(examples)}
    _w.write_atomic(out / STATS, _w.dumps_json(stats))
    if not config.keep_work:
        shutil.rmtree(out / WORK, ignore_errors=True)
    code = EXIT_FAILED if not examples else (EXIT_SOME_REJECTED if n_rej else EXIT_OK)
    return ConvertResult(code, manifest, str(out), stats)


def format_summary(manifest: dict) -> str:
    """End-of-run table: per split examples / patients / labels, then rejections by reason."""
    rows = [("split", "examples", "patients", "shards", "labels")]
    for name, s in manifest["splits"].items():
        labels = " ".join(f"{k}:{v}" for k, v in s["labels"].items()) or "-"
        rows.append((name, str(s["examples"]), str(s["patients"]), str(len(s["shards"])), labels))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    c = manifest["counts"]
    lines.append(f"files: {c['files']} ({c['converted_files']} converted, {c['rejected_files']} rejected); "
                 f"examples: {c['examples']}; image dtype {manifest['image_dtype']}, mode {manifest['mode']}")
    reasons = collections.Counter(f["reason"] for f in manifest["files"] if f["outcome"] == "rejected")
    for reason, n in reasons.most_common(10):
        lines.append(f"  rejected {n:>5}  {reason}")
    if len(reasons) > 10:
        lines.append(f"  ... {len(reasons) - 10} more reasons in manifest.json")
    return "\n".join(lines)
