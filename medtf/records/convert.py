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

:mod:`medtf.records.beam` runs the same steps, through the same functions (``plan_conversion``,
``convert_to_cache``, ``decide_dataset``, ``accept_reencoded``, ``layout_dataset``, ``write_planned_shard``,
``finish_dataset``), as an Apache Beam job; only where a unit or a shard runs differs.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
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
from medtf.io.sources import walk_inputs
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
        masks: a folder of masks (PNG, TIFF, NIfTI, DICOM) paired with the inputs by key (see ``pair``):
            each image gets the mask whose key equals its own, on the same grid.
        empty_slices: with ``mode="slice"``, volumes are cut into 2D slices (each keeps its mask slice); a
            fraction in [0, 1] keeps every slice with foreground and that (seeded) fraction of the empty
            ones; None keeps every slice.
        pair: regular expression whose first group, applied to a file name, is its pairing key (default:
            the file name without its extension).
        mask_map: (value, label) pairs applied to mask values (``--mask-map 255=1,128=2``); a mask whose
            only values are {0, 255} is read as {0, 1} without it.
        keep_paths: name sources by their relative paths (UIDs in them still replaced) instead of keyed
            pseudonyms, and write the input folders into the manifest — only for data known to be anonymous.
        roi: RT Structure Set ROIs to rasterise (``--roi NAME``, repeatable; exact names, case-insensitive), in
            label order 1..K; empty: every ROI in ROI Number order (:mod:`medtf.io.rtstruct`).
        targets: a folder of restoration targets (full-dose, high-resolution) paired with the inputs by key
            (see ``pair``); each is stored with its input (:mod:`medtf.records.targets`). Excludes ``masks``.
        target_scale: with ``targets``, the expected scale k (one value, or one per spatial axis); None accepts
            any integer multiple of the input grid.
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
    keep_paths: bool = False
    masks: str | None = None
    empty_slices: float | None = None
    pair: str | None = None
    mask_map: tuple[tuple[int, int], ...] = ()
    roi: tuple[str, ...] = ()
    tile: tuple[int, ...] | None = None
    targets: str | None = None
    target_scale: tuple[int, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(str(p) for p in self.inputs))
        object.__setattr__(self, "mask_map", tuple((int(a), int(b)) for a, b in self.mask_map))
        object.__setattr__(self, "roi", (self.roi,) if isinstance(self.roi, str) else tuple(self.roi))
        if any(not isinstance(r, str) or not r.strip() for r in self.roi):
            raise ConvertError(f"--roi needs ROI names. Received: {list(self.roi)}")
        if len({r.strip().lower() for r in self.roi}) != len(self.roi):
            raise ConvertError(f"--roi names a ROI twice (names are case-insensitive). Received: {list(self.roi)}")
        if self.masks is not None and not os.path.isdir(self.masks):
            raise ConvertError(f"--masks {self.masks}: no such folder")
        if self.pair is not None:
            import re

            try:
                re.compile(self.pair)
            except re.error as exc:
                raise ConvertError(f"--pair {self.pair!r}: not a regular expression ({exc})") from None
        if self.targets is not None and self.masks is not None:
            raise ConvertError("--targets and --masks cannot be combined: a record stores either a mask "
                               "(segmentation) or a restoration target")
        if self.targets is not None and not os.path.isdir(self.targets):
            raise ConvertError(f"--targets {self.targets}: no such folder")
        if self.target_scale is not None:
            object.__setattr__(self, "target_scale", tuple(int(k) for k in self.target_scale))
            if not self.target_scale or min(self.target_scale) < 1 or not self.targets:
                raise ConvertError(f"--target-scale needs --targets DIR and integers >= 1. Received: "
                                   f"{list(self.target_scale)}")
        if self.mask_map and not self.masks:
            raise ConvertError("--mask-map needs --masks DIR")
        if self.pair and not (self.masks or self.targets):
            raise ConvertError("--pair needs --masks DIR or --targets DIR")
        if self.tile is not None:
            object.__setattr__(self, "tile", tuple(int(v) for v in self.tile))
            if len(self.tile) not in (1, 2) or min(self.tile) < 1:
                raise ConvertError(f"--tile needs one or two positive sizes (N or H,W). Received: {list(self.tile)}")
            if len(self.tile) == 1:
                object.__setattr__(self, "tile", self.tile * 2)
            if self.targets is not None:
                raise ConvertError("--tile cannot be combined with --targets (train restoration models on random "
                                   "patches instead: data.patch in the training config)")
        if self.empty_slices is not None and not 0.0 <= float(self.empty_slices) <= 1.0:
            raise ConvertError(f"--empty-slices must be a fraction in [0, 1]. Received: {self.empty_slices}")
        if self.empty_slices is not None and self.mode != "slice":
            raise ConvertError("--empty-slices needs --mode slice")
        if any(not 0 <= b <= 255 for _, b in self.mask_map):
            raise ConvertError(f"--mask-map labels must be in 0..255. Received: {list(self.mask_map)}")
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
            "labels": None if self.labels is None else _file_sha256(self.labels),
            "shard_mb": self.shard_mb,
            "read_options": {k: v for k, v in self.read_options},
            **({"keep_paths": True} if self.keep_paths else {}),
            **({"masks": {"pair": self.pair, "mask_map": [list(m) for m in self.mask_map]}} if self.masks else {}),
            **({"targets": {"pair": self.pair, "scale": None if self.target_scale is None else list(self.target_scale)}}
               if self.targets else {}),
            **({"empty_slices": self.empty_slices} if self.empty_slices is not None else {}),
            **({"roi": list(self.roi)} if self.roi else {}),
            **({"tile": list(self.tile)} if self.tile else {}),
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
    target_scale: tuple[int, ...] | None = None  # k per spatial axis of the paired target (``--targets``)


@dataclasses.dataclass(frozen=True)
class UnitTask:
    """A unit plus what the labels CSV says about it."""

    unit: object  # medtf.io.SourceUnit
    label: tuple[int, ...] | None = None
    split: str | None = None
    mask: str | None = None  # the paired mask file (``--masks``)
    target: str | None = None  # the paired restoration target (``--targets``)

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file the task reads (its content stamp keys ``--resume``)."""
        return tuple(self.unit.paths) + ((self.mask,) if self.mask else ()) + ((self.target,) if self.target else ())


# --------------------------------------------------------------------------------- pure function


def _read_options(config: ConvertConfig):
    opts = dict(config.read_options)
    if config.mode == "slice":
        opts.setdefault("frames", "each")  # one example per frame of a multi-frame object
    if config.roi:
        opts["rois"] = tuple(config.roi)
    return ReadOptions(**opts)


def iter_convert_unit(unit, config: ConvertConfig, pseudonymizer, *, label=None, split=None,
                      image_dtype: str | None = None, mask: str | None = None,
                      target: str | None = None) -> Iterator[Example]:
    """Read, process and encode one source unit, yielding its examples one at a time.

    Raises:
        medtf.io.ReadError: the source cannot be read (reason has no PHI).
        ProcessError: the processing options do not fit the image.
    """
    options = config.process if image_dtype is None else dataclasses.replace(config.process, image_dtype=image_dtype)
    if unit.kind == "npz":  # stream the rows instead of materialising thousands of Images
        images = iter_npz(unit.paths[0], pseudonymizer=pseudonymizer, file_key=unit.rel or unit.key,
                          options=_read_options(config))
        single = False
    else:
        images = read_unit(unit, pseudonymizer=pseudonymizer, options=_read_options(config))
        if not images:
            raise ProcessError("the source holds no image")
        single = len(images) == 1
        if mask is not None:
            if not single:
                raise ProcessError("a paired mask needs a source holding one image")
            images = [attach_mask(images[0], mask, config, pseudonymizer)]
        if target is not None:  # paired restoration target (medtf.records.targets)
            if not single:
                raise ProcessError("a paired target needs a source holding one image")
            from medtf.records.targets import read_target

            paired = read_target(images[0], target, pseudonymizer, dict(config.read_options), config.target_scale)
        if config.mode == "slice" and any(im.spatial_dims == 3 for im in images):
            images = list(slices_of(images, unit.key, config, split=split))
            single = False
    seen = set()
    for image in images:
        img = process_image(image, options, voi=bool(dict(config.read_options).get("apply_voi")))
        tgt = None
        if target is not None:
            from medtf.records.targets import with_target

            img, tgt = with_target(image, img, paired, options, voi=bool(dict(config.read_options).get("apply_voi")))
        key = record_key(unit.key, image, single)
        if key in seen:
            raise ProcessError(f"the reader returned two images with index {image.index}")
        seen.add(key)
        lab = tuple(int(v) for v in np.atleast_1d(img.label)) if img.label is not None else label
        dtype = img.array.dtype.name
        pieces = [(key, img)]
        if config.tile and (img.split or split) not in ("val", "test"):
            pieces = tiles_of(img, key, config.tile)
        for piece_key, piece in pieces:
            payload = _enc.encode_example(
                piece.array,
                spacing=piece.spacing,
                patient=piece.patient,
                source=piece_key,
                image_dtype=dtype,
                origin=piece.origin,
                direction=piece.direction,
                label=lab,
                mask=piece.mask,
                modality=piece.modality or "",
                target=tgt,
            )
            yield Example(piece_key, img.split or split, img.patient, lab, payload, dtype, img.spatial_dims,
                          int(img.array.shape[-1]), None if tgt is None else paired[1][-img.spatial_dims:])


def tiles_of(image, key: str, tile: tuple[int, int]) -> list:
    """Non-overlapping ``tile`` crops of a processed 2D image, row by row, each with its mask crop and its own
    origin, keyed ``KEY@<row>,<col>``; the last rows/columns that do not fill a whole tile are left out.

    Raises:
        ProcessError: a volume, or an image smaller than one tile.
    """
    from medtf.preprocess import shift_origin

    if image.spatial_dims != 2:
        raise ProcessError("--tile cuts 2D images; cut volumes into slices first (--mode slice)")
    (h, w), (th, tw) = image.array.shape[:2], tile
    if h < th or w < tw:
        raise ProcessError(f"image {h}x{w} is smaller than one --tile {th}x{tw}")
    mask = None if image.mask is None else np.asarray(image.mask)
    return [(f"{key}@{r},{c}", dataclasses.replace(
        image, array=image.array[r:r + th, c:c + tw], mask=None if mask is None else mask[r:r + th, c:c + tw],
        origin=shift_origin(image.origin, image.direction, image.spacing, (float(r), float(c)))))
            for r in range(0, h - th + 1, th) for c in range(0, w - tw + 1, tw)]


def record_key(unit_key: str, image, single: bool) -> str:
    """A record's ``source``: the unit key for a unit of one image, else ``"#<index>"`` — ``"#<split>/<index>"``
    for sources that carry splits (npz rows count per split) — appended."""
    if single:
        return unit_key
    return f"{unit_key}#{image.split}/{image.index}" if image.split else f"{unit_key}#{image.index}"


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


def _unit_id(key: str, fingerprint: str, dtype: str | None, stamp: str = "") -> str:
    return hashlib.sha256(f"{fingerprint}\x00{dtype}\x00{key}\x00{stamp}".encode()).hexdigest()[:40]


def _file_sha256(path) -> str | None:
    """sha256 of a file's content (the labels CSV enters the resume fingerprint by content, not name)."""
    try:
        return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def content_stamp(paths) -> str:
    """What identifies the content of a unit's files for ``--resume``: size, modification time and a hash of
    the first and last 64 KiB of each file. A file rewritten between runs gets a new stamp, so its unit is
    converted again instead of keeping its old pixels."""
    parts = []
    for p in sorted(paths):
        try:
            st = os.stat(p)
            with open(p, "rb") as fh:
                head = fh.read(65536)
                if st.st_size > 131072:
                    fh.seek(-65536, os.SEEK_END)
                tail = fh.read(65536)
            parts.append(f"{st.st_size}:{st.st_mtime_ns}:{hashlib.blake2b(head + tail, digest_size=8).hexdigest()}")
        except OSError:
            parts.append("unreadable")
    return ";".join(parts)


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
    return convert_to_cache(task, dtype, _STATE["config"], _STATE["pseudonymizer"], _STATE["work"],
                             _STATE["fingerprint"])


class Journal:
    """Append-only cache of one process: framed records in ``<name>.tfr``, one JSON line per finished unit
    in ``<name>.jsonl`` (written after the unit's frames). A process killed at any point leaves complete
    lines for complete units only; a torn last line is ignored on resume. One writer at a time: the local
    workers keep one per process, the Beam workers one per ``DoFn`` instance."""

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

    def close(self, sync: bool = False) -> None:
        """Close both files (``sync``: fsync them first, e.g. at the end of a Beam bundle)."""
        for f in (self.data, self.meta):
            if sync:
                os.fsync(f.fileno())
            f.close()


def _close_journal() -> None:
    j = _STATE.pop("journal", None)
    if j is not None and _STATE.get("journal_pid") == os.getpid():
        j.close()


def _journal(work: str) -> Journal:
    j = _STATE.get("journal")
    if j is None or _STATE.get("journal_pid") != os.getpid() or _STATE.get("journal_work") != work:
        j = _STATE["journal"] = Journal(work)
        _STATE["journal_pid"], _STATE["journal_work"] = os.getpid(), work
    return j


def convert_to_cache(task: UnitTask, dtype, config, pseudonymizer, work: str, fingerprint: str,
                     journal: Journal | None = None) -> dict:
    """Convert one unit into a journal (default: this process's); return (and commit) its metadata.

    Every failure of the unit becomes a ``{"rejected": reason}`` meta (reason free of header values),
    never an exception: the caller records it in the manifest.
    """
    uid = _unit_id(task.unit.key, fingerprint, dtype, content_stamp(task.paths))
    journal = _journal(work) if journal is None else journal
    meta: dict = {"uid": uid, "key": task.unit.key, "examples": []}
    try:
        frames, exs = [], []
        size, unit_start = 0, None
        for ex in iter_convert_unit(task.unit, config, pseudonymizer, label=task.label, split=task.split,
                                    mask=task.mask, target=task.target,
                                    image_dtype=dtype):
            frame = _enc.frame_record(ex.payload)
            exs.append({"key": ex.key, "split": ex.split, "patient": ex.patient,
                        "label": None if ex.label is None else list(ex.label), "dtype": ex.dtype,
                        "spatial_dims": ex.spatial_dims, "channels": ex.channels,
                        **({"target_scale": list(ex.target_scale)} if ex.target_scale is not None else {}),
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


def load_journals(work: str) -> dict[str, dict]:
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
    """The path relative to its input root, under the name the user gave (symlinks not resolved; names
    that are not UTF-8 carry ``\\xNN`` escapes)."""
    from medtf.io.sources import safe_name

    p = pathlib.Path(os.path.abspath(path))
    for root in roots:
        for r in (pathlib.Path(os.path.abspath(root)), pathlib.Path(root).resolve()):
            if r.is_dir():
                try:
                    return safe_name(p.relative_to(r).as_posix())
                except ValueError:
                    continue
            elif p == r:
                return safe_name(p.name)
    return safe_name(p.name)


def _prepare_output(config: ConvertConfig) -> pathlib.Path:
    out = pathlib.Path(config.output)
    if out.exists() and not out.is_dir():
        raise ConvertError(f"--output {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    _lock(out)
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


OPTIONS_FILE = "options.json"
LOCK = ".lock"


def _lock(out: pathlib.Path) -> None:
    """One writer at a time: ``OUTPUT/.lock`` holds the writer's pid (a lock left by a dead process is taken
    over; the same process may convert into the same folder again). Released when the process ends.

    Raises:
        ConvertError: another live process holds the lock.
    """
    import atexit

    path = out / LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid == os.getpid():
                return
            if pid > 0:
                try:
                    os.kill(pid, 0)
                    alive = True
                except ProcessLookupError:
                    alive = False
                except PermissionError:
                    alive = True
                if alive:
                    raise ConvertError(f"--output {out}: another tfrecord-convert (pid {pid}) is writing here; wait "
                                       f"for it to finish (or remove {path} if that process is gone)") from None
            path.unlink(missing_ok=True)  # stale: its writer is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        atexit.register(_unlock, str(path), os.getpid())
        return


def release_lock(path: str) -> None:
    """Release ``OUTPUT/.lock`` if this process holds it."""
    _unlock(path, os.getpid())


def _unlock(path: str, pid: int) -> None:
    try:
        if int(pathlib.Path(path).read_text().strip() or 0) == pid:
            os.unlink(path)
    except (OSError, ValueError):
        pass


def _check_resume(config: ConvertConfig, work: str) -> None:
    """``--resume`` only continues the same job: the options and the labels CSV's content must be the ones
    the interrupted run used (recorded in ``.work/options.json``); a changed input file is simply
    converted again (see :func:`content_stamp`).

    Raises:
        ConvertError: ``--resume`` after an option or the labels CSV changed (the message names it).
    """
    path = pathlib.Path(work) / OPTIONS_FILE
    now = config.options_dict()
    if config.resume and path.exists():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = None
        if isinstance(before, dict) and before != now:
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            what = ["the labels CSV's content" if k == "labels" else f"option {k!r}" for k in changed]
            raise ConvertError(f"--resume: {', '.join(what)} changed since the interrupted run; its results would "
                               "be stale — rerun with --overwrite")
    _w.write_atomic(path, _w.dumps_json(now))


def _pseudonymizer(config: ConvertConfig):
    if config.key_file:
        try:
            return Pseudonymizer.from_key_file(config.key_file)
        except (FileNotFoundError, ValueError) as exc:
            raise ConvertError(f"--key-file: {exc}") from None
    return Pseudonymizer.default()


def slices_of(images, unit_key: str, config: ConvertConfig, split: str | None = None):
    """2D slices of the volumes among ``images`` (axis 0), each with its mask slice and its own origin; with
    ``config.empty_slices``, slices without foreground are kept with that seeded probability, except in a
    source whose split is already ``test`` (nnU-Net ``imagesTs``, a CSV split column): test volumes keep
    every slice, so their predictions re-stack into whole volumes."""
    from medtf.preprocess import shift_origin

    for image in images:
        if image.spatial_dims != 3:
            yield image
            continue
        for k in range(image.array.shape[0]):
            m = None if image.mask is None else np.asarray(image.mask)[k]
            if config.empty_slices is not None and split != "test" and m is not None and not m.any():
                h = hashlib.sha256(f"{config.seed}\x00{unit_key}\x00{k}".encode()).digest()
                if int.from_bytes(h[:8], "big") / 2**64 >= config.empty_slices:
                    continue
            yield dataclasses.replace(
                image, array=image.array[k], mask=m, spacing=tuple(image.spacing)[1:], index=k,
                origin=shift_origin(image.origin, image.direction, image.spacing, (float(k), 0.0, 0.0)))


MASK_EXTENSIONS = (".nii.gz", ".nii", ".png", ".tif", ".tiff", ".dcm", ".jpg", ".jpeg", ".gif", ".nrrd", ".nhdr",
                   ".mha", ".mhd")


def pair_key(filename: str, pattern: str | None) -> str | None:
    """The pairing key of a file name: the first group of ``pattern`` (None when it does not match), else the
    name without its extension."""
    import re

    if pattern:
        m = re.search(pattern, filename)
        return (m.group(1) if m.groups() else m.group(0)) if m else None
    lower = filename.lower()
    ext = next((e for e in MASK_EXTENSIONS if lower.endswith(e)), pathlib.PurePosixPath(filename).suffix.lower())
    return filename[: len(filename) - len(ext)] if ext else filename


def index_masks(folder, pattern: str | None, what: str = "mask") -> tuple[dict[str, str], list[tuple[str, str]]]:
    """({key: mask path}, rejected) for every file under ``folder``; two masks with one key are both rejected.
    ``what`` names the files in the reasons ("mask", "target")."""
    pairs, rejected = walk_inputs([folder])
    from medtf.io.itk import data_files_of, is_itk_header

    data_files = {p for ps in data_files_of([p for p, _ in pairs if is_itk_header(p)], [p for p, _ in pairs]).values()
                  for p in ps}  # a detached .nhdr/.mhd header's data file is read with its header
    pairs = [(p, rel) for p, rel in pairs if str(p) not in data_files]
    by_key: dict[str, list[str]] = {}
    for path, rel in pairs:
        key = pair_key(pathlib.PurePosixPath(rel).name, pattern)
        if key is None:
            rejected.append((str(path), f"{what} whose name does not match --pair"))
            continue
        by_key.setdefault(key, []).append(str(path))
    out = {}
    for key, paths in by_key.items():
        if len(paths) > 1:
            rejected += [(p, f"two {what}s with the same key") for p in paths]
        else:
            out[key] = paths[0]
    return out, rejected


def attach_mask(image, mask_path: str, config: ConvertConfig, pseudonymizer):
    """The image with its paired mask read (``medtf.io``), checked to share its grid and mapped to labels.

    Raises:
        ProcessError: unreadable mask, several channels, a grid that differs from the image's, or values that
            do not fit the label map.
    """
    from medtf.io import ReadOptions, SourceUnit, classify

    kind, reason = classify(mask_path)
    if kind is None or kind in ("npz",):
        raise ProcessError(f"paired mask unreadable ({reason or 'unsupported type'})")
    try:
        (m,) = read_unit(SourceUnit(kind=kind, paths=(mask_path,), key="mask", rel="mask"),
                         pseudonymizer=pseudonymizer, options=ReadOptions())
    except ReadError as exc:
        raise ProcessError(f"paired mask unreadable ({exc.reason})") from None
    except ValueError:
        raise ProcessError("paired mask holds several images") from None
    arr = np.asarray(m.array)
    if arr.shape[-1] != 1:
        raise ProcessError(f"paired mask has {arr.shape[-1]} channels; a label map has one")
    arr = arr[..., 0]
    sd = image.array.ndim - 1
    if tuple(arr.shape) != tuple(image.array.shape[:sd]):
        raise ProcessError(f"mask grid {tuple(arr.shape)} differs from the image grid {tuple(image.array.shape[:sd])}")
    if m.spacing is not None and image.spacing is not None and sd == len(m.spacing) and not np.allclose(
            m.spacing, image.spacing, rtol=1e-3, atol=1e-4) and kind not in ("image",):
        raise ProcessError(f"mask spacing {tuple(round(float(v), 4) for v in m.spacing)} differs from the image's "
                           f"{tuple(round(float(v), 4) for v in image.spacing)}")
    values = np.unique(arr)
    if config.mask_map:
        lut = dict(config.mask_map)
        unknown = [v for v in values if v != 0 and int(v) not in lut]
        if unknown:
            raise ProcessError(f"mask values {[int(v) for v in unknown[:5]]} are not in --mask-map")
        out = np.zeros(arr.shape, np.uint8)
        for v, label in lut.items():
            out[arr == v] = label
        arr = out
    elif set(values.tolist()) <= {0, 255}:
        arr = (arr > 0).astype(np.uint8)
    if arr.min() < 0 or arr.max() > 255 or not np.array_equal(arr, np.round(arr)):
        raise ProcessError("mask values are not integer labels in 0..255 (use --mask-map)")
    return dataclasses.replace(image, mask=arr.astype(np.uint8))


def _unmatched_rows(table: LabelTable | None, units, roots, pseudonymizer, keep_paths: bool) -> tuple:
    """Labels CSV rows that no input file uses (named by the same pseudonyms as the inputs)."""
    if table is None:
        return ()
    used = {table.match(_relpath(p, roots)) for u in units for p in u.paths}
    return tuple(pseudonymizer.source(k, keep_path=keep_paths) for k in sorted(set(table.entries) - used))


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


STORAGE_DTYPES = ("uint8", "int16", "uint16", "int32", "float32")


def resume_lookup(done: dict[str, dict], key: str, fingerprint: str, dtype: str | None, paths=()) -> dict | None:
    """The meta an interrupted run journalled for unit ``key`` stored as ``dtype`` (None: natural dtype), if its
    files (``paths``) still have the content they had then."""
    meta = done.get(_unit_id(key, fingerprint, dtype, content_stamp(paths)))
    return meta if meta is not None and meta.get("key") == key else None


def _run_units(tasks: list[tuple[UnitTask, str | None]], config, pseudonymizer, work: str, fingerprint: str,
               desc: str) -> dict[str, dict]:
    """Convert units to the cache, in-process or in a pool; returns {unit key: meta}."""
    from tqdm.auto import tqdm

    results: dict[str, dict] = {}
    _close_journal()
    if config.resume:  # units finished by an interrupted run
        done = load_journals(work)
        todo = []
        for task, dtype in tasks:
            meta = resume_lookup(done, task.unit.key, fingerprint, dtype, task.paths)
            if meta is not None:
                results[task.unit.key] = meta
            else:
                todo.append((task, dtype))
        tasks = todo
    bar = tqdm(total=len(tasks), desc=desc, unit="src", disable=not config.progress, file=sys.stderr,
               dynamic_ncols=True)
    try:
        if config.workers == 1 or len(tasks) <= 1:
            for task, dtype in tasks:
                results[task.unit.key] = convert_to_cache(task, dtype, config, pseudonymizer, work, fingerprint)
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


# ------------------------------------------------------------------- steps shared with the Beam runner
# convert() below and medtf.records.beam run the same functions in the same order:
#   plan_conversion (discovery, labels CSV, resume set-up)  → every unit through convert_to_cache
#   → decide_dataset (spatial dims, channels, dtype)          → re-encode decision.redo with the dataset dtype
#   → accept_reencoded → layout_dataset (patient-grouped splits, shard plan, manifest)
#   → write_planned_shard for each shard → finish_dataset (stale shards out, manifest last).
# Only where a unit or a shard runs differs (a local process pool or Beam workers).


@dataclasses.dataclass
class ConversionPlan:
    """Everything decided before any unit is converted (no secret in it: safe to pickle to workers).

    Attributes:
        config: the conversion options.
        out, work: output folder and its work folder (``OUTPUT/.work``).
        fingerprint: hash of the options, the key's id token, the tool and schema versions (journal ids).
        roots: the inputs, resolved.
        files: files rejected by discovery ({relative path: manifest entry}).
        unit_paths: {unit key: its files' relative paths}.
        unit_reject: units rejected before conversion ({unit key: reason}, e.g. not in the labels CSV).
        tasks: the units to convert, sorted by key.
        units: number of units discovery found.
        multilabel, label_names: from the labels CSV (or an nnU-Net ``dataset.json``).
        label_regions: region-based labels of an nnU-Net ``dataset.json`` ({region name: [label values]}).
        split_policy: :func:`medtf.records.split.parse_split` of ``config.split``.
        discover_s: seconds spent planning.
        labels_unmatched: labels CSV rows that match no input (their pseudonymous names), for the manifest.
    """

    config: ConvertConfig
    out: str
    work: str
    fingerprint: str
    roots: tuple[str, ...]
    files: dict
    unit_paths: dict
    unit_reject: dict
    tasks: list
    units: int
    multilabel: bool
    label_names: list | None
    split_policy: object
    discover_s: float = 0.0
    labels_unmatched: tuple = ()
    label_regions: dict | None = None


@dataclasses.dataclass
class DatasetFacts:
    """Dataset-wide storage decisions, taken from every converted unit (independent of order)."""

    spatial_dims: int
    channels: int
    image_dtype: str
    redo: list  # keys of units whose natural dtype is narrower than ``image_dtype``: re-encode them


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """One output shard: its name, the framed records (cache file, offset, length) in order, and a digest
    of what it must hold (options, dtype, record keys and sizes) that lets a rerun skip a finished shard."""

    name: str
    records: tuple
    digest: str

    @property
    def size(self) -> int:
        return sum(r[2] for r in self.records)


@dataclasses.dataclass
class DatasetLayout:
    """Splits, shards and the manifest, decided before a byte of a shard is written."""

    manifest: dict
    shards: list  # ShardSpec, in writing order
    examples: int


def plan_conversion(config: ConvertConfig) -> tuple[ConversionPlan, object]:
    """Check the options, prepare the output folder and discover the units (step 1).

    Returns:
        (plan, pseudonymizer); the pseudonymizer stays with the caller (it holds the secret).

    Raises:
        ConvertError: missing inputs, unreadable labels CSV or key file, bad read options, output in the way.
    """
    t0 = time.perf_counter()
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
    roots = [pathlib.Path(os.path.abspath(p)) for p in config.inputs]  # as given: symlinks not resolved

    _check_resume(config, work)
    from medtf.records.layouts import is_nnunet, read_nnunet

    nnunet = None
    if len(config.inputs) == 1 and is_nnunet(config.inputs[0]):
        if config.masks:
            raise ConvertError("--masks: an nnU-Net dataset folder brings its own labelsTr/labelsTs")
        try:
            nnunet = read_nnunet(config.inputs[0], pseudonymizer=pseudonymizer, keep_paths=config.keep_paths)
        except ValueError as exc:
            raise ConvertError(str(exc)) from None
        units, rejected = list(nnunet.units), list(nnunet.rejected)
        if config.split == "auto":  # imagesTs is the test split; validation is drawn from imagesTr by case
            split_policy = [("train", 0.8), ("val", 0.2)]
    else:
        units, rejected = discover(list(config.inputs), pseudonymizer=pseudonymizer, mode=config.mode,
                                   keep_paths=config.keep_paths, annotated_volumes=True)
    units = sorted(units, key=lambda u: u.key)
    from medtf.io.rtstruct import structure_label_names

    rt_names, rt_reject = structure_label_names(units, config.roi)  # RT Structure Sets: one label list

    def name(path) -> str:  # what the manifest calls an input file: never its path unless --keep-paths
        return pseudonymizer.source(_relpath(path, roots), keep_path=config.keep_paths)

    files: dict[str, dict] = {}
    for path, reason in rejected:
        files[name(path)] = {"outcome": "rejected", "reason": reason}
    tasks: list[UnitTask] = []
    unit_paths: dict[str, list[str]] = {}
    unit_reject: dict[str, str] = {}
    # --masks or --targets (exclusive): one pairing by key, rejections named in both directions
    what = "mask" if config.masks else "target" if config.targets else None
    pair_dir = config.masks or config.targets
    pair_root = [pathlib.Path(os.path.abspath(pair_dir))] if pair_dir else []
    prefix = "targets/" if what == "target" else ""

    def pair_name(path) -> str:  # a paired file's manifest name ("targets/<path>" for targets), pseudonymised
        return pseudonymizer.source(f"{prefix}{_relpath(path, pair_root)}", keep_path=config.keep_paths)

    pairs_of, used_pairs = {}, set()
    if pair_dir:
        if what == "target" and nnunet is not None:
            raise ConvertError("--targets: an nnU-Net dataset folder holds segmentation data, not restoration pairs")
        pairs_of, pair_rejects = index_masks(pair_dir, config.pair, what=what)
        for path, reason in pair_rejects:
            files[pair_name(path)] = {"outcome": "rejected", "reason": reason}
    for unit in units:
        unit_paths[unit.key] = sorted(name(p) for p in unit.paths)
        label, split, reason = _label_for(unit, table, roots)
        reason = reason or rt_reject.get(unit.key)
        if reason:
            unit_reject[unit.key] = reason
            continue
        if nnunet is not None:
            mask = nnunet.masks.get(unit.key)
            if mask:
                unit_paths[unit.key] = unit_paths[unit.key] + [name(mask)]
            tasks.append(UnitTask(unit, label, nnunet.splits.get(unit.key), mask=mask))
            continue
        if pair_dir:
            found = pairs_of.get(pair_key(pathlib.PurePosixPath(unit.rel or unit.key).name, config.pair))
            if unit.kind == "dicom_series" or found is None:
                unit_reject[unit.key] = f"no {what} with the same key in --{what}s"
                continue
            used_pairs.add(found)
            unit_paths[unit.key] = unit_paths[unit.key] + [pair_name(found)]  # the paired file beside its image
            tasks.append(UnitTask(unit, label, split, **{what: found}))
            continue
        tasks.append(UnitTask(unit, label, split))
    for path in sorted(set(pairs_of.values()) - used_pairs):
        files[pair_name(path)] = {"outcome": "rejected", "reason": f"{what} without an image (no input has its key)"}
    plan = ConversionPlan(
        config=config, out=str(out), work=work, fingerprint=fingerprint, roots=tuple(str(r) for r in roots),
        files=files, unit_paths=unit_paths, unit_reject=unit_reject, tasks=tasks, units=len(units),
        multilabel=bool(table is not None and table.multilabel),
        label_names=(nnunet.label_names if nnunet is not None else
                     list(table.label_names) if table is not None and table.label_names is not None else rt_names),
        label_regions=nnunet.label_regions if nnunet is not None else None,
        split_policy=split_policy, discover_s=time.perf_counter() - t0,
        labels_unmatched=_unmatched_rows(table, units, roots, pseudonymizer, config.keep_paths))
    return plan, pseudonymizer


def decide_dataset(mode: str, metas: dict[str, dict], reject: dict[str, str]) -> DatasetFacts:
    """Spatial dims, channels and storage dtype of the dataset from every unit's meta (step 2).

    Units that do not fit (a 2D image among volumes, another channel count) are added to ``reject``.
    """
    for key, meta in metas.items():
        if meta.get("rejected"):
            reject[key] = meta["rejected"]
    ok = [k for k in sorted(metas) if k not in reject]
    dims = collections.Counter(e["spatial_dims"] for k in ok for e in metas[k]["examples"])
    spatial_dims = 3 if mode == "volume" else (2 if mode == "slice" else (max(dims) if dims else 2))
    for k in ok:
        if any(e["spatial_dims"] != spatial_dims for e in metas[k]["examples"]):
            reject[k] = (f"{metas[k]['examples'][0]['spatial_dims']}D image in a dataset of {spatial_dims}D "
                         "examples (convert it separately or choose --mode)")
    ok = [k for k in ok if k not in reject]
    chans = collections.Counter(e["channels"] for k in ok for e in metas[k]["examples"])
    channels = max(sorted(chans), key=lambda c: chans[c]) if chans else 1
    for k in ok:
        got = {e["channels"] for e in metas[k]["examples"]}
        if got != {channels}:
            reject[k] = f"{sorted(got)} channel(s) in a dataset of {channels}-channel images"
    ok = [k for k in ok if k not in reject]
    image_dtype = join_dtypes(e["dtype"] for k in ok for e in metas[k]["examples"])
    redo = [k for k in ok if any(e["dtype"] != image_dtype for e in metas[k]["examples"])]
    return DatasetFacts(spatial_dims, channels, image_dtype, redo)


def accept_reencoded(facts: DatasetFacts, metas: dict[str, dict], reject: dict[str, str],
                     redone: dict[str, dict]) -> None:
    """Take the re-encoded units' metas (``facts.redo``) into ``metas``; reject those that failed."""
    metas.update(redone)
    for k in facts.redo:
        m = metas[k]
        if m.get("rejected") or any(e["dtype"] != facts.image_dtype for e in m["examples"]):
            reject[k] = m.get("rejected") or f"could not store as {facts.image_dtype}"


def _shard_digest(plan: ConversionPlan, image_dtype: str, name: str, members, metas: dict) -> str:
    """Identity of a planned shard: its records and the content of their sources (the units' journal ids hold
    each source file's content stamp), so a rewritten input never leaves an old shard in place."""
    h = hashlib.sha256(f"{plan.fingerprint}\x00{image_dtype}\x00{name}".encode())
    for k, e in members:
        h.update(f"\x00{e['key']}\x01{e['length']}\x02{metas[k].get('uid', '')}".encode())
    return h.hexdigest()


def layout_dataset(plan: ConversionPlan, metas: dict[str, dict], reject: dict[str, str],
                   facts: DatasetFacts) -> DatasetLayout:
    """Patient-grouped splits (step 3), the shard plan in a seeded order (step 4) and the manifest (step 5)."""
    config = plan.config
    split_policy = plan.split_policy
    ok = [k for k in sorted(metas) if k not in reject]
    examples = [(k, e) for k in ok for e in metas[k]["examples"]]
    hinted = [e for _, e in examples if e["split"]]
    if split_policy == "input" or (split_policy == "auto" and examples and len(hinted) == len(examples)):
        for k in ok:
            if any(not e["split"] for e in metas[k]["examples"]):
                reject[k] = "no split given by the input (npz split or labels CSV split column) with --split input"
        ok = [k for k in ok if k not in reject]
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

    target = int(config.shard_mb * 1e6)
    specs: list[ShardSpec] = []
    splits_info: dict[str, dict] = {}
    for name in names:
        members = sorted(((k, e) for k, e in examples if split_of[e["key"]] == name),
                         key=lambda ke: _w.order_key(config.seed, ke[1]["key"]))
        recs = [(os.path.join(plan.work, metas[k]["data"]), e["offset"], e["length"]) for k, e in members]
        groups = _w.plan_shards([r[2] for r in recs], target)
        shards = []
        for i, group in enumerate(groups):
            shard = _w.shard_name(name, i, len(groups))
            specs.append(ShardSpec(shard, tuple(recs[j] for j in group),
                                   _shard_digest(plan, facts.image_dtype, shard, [members[j] for j in group], metas)))
            shards.append(shard)
        labels = collections.Counter()
        unlabelled = 0
        for _, e in members:
            if e["label"] is None:
                unlabelled += 1
            elif plan.multilabel:
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

    files = dict(plan.files)
    for key in sorted(plan.unit_paths):
        if key in reject:
            for p in plan.unit_paths[key]:
                files[p] = {"outcome": "rejected", "reason": reject[key], "unit": key}
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
        for p in plan.unit_paths[key]:
            files[p] = dict(entry)
    n_rej = sum(1 for f in files.values() if f["outcome"] == "rejected")
    label_names = plan.label_names
    conversion = config.process.to_preprocessing(bool(dict(config.read_options).get("apply_voi")))
    all_labels = [tuple(e["label"]) for _, e in examples if e["label"] is not None]
    manifest = {
        "schema": _enc.SCHEMA_NAME,
        "schema_version": _enc.SCHEMA_VERSION,
        "tool": {"name": "medtf tfrecord-convert", "version": __version__},
        "image_dtype": facts.image_dtype,
        "mode": "volume" if facts.spatial_dims == 3 else "slice",
        "spatial_dims": facts.spatial_dims,
        "channels": facts.channels,
        **(_targets_manifest(examples) if config.targets else {}),
        "preprocessing": conversion.to_dict(),
        **({"input_roots": list(plan.roots)} if config.keep_paths else {}),
        "label_names": label_names,
        **({"label_regions": plan.label_regions} if plan.label_regions else {}),
        "multilabel": plan.multilabel,
        "num_labels": (len(label_names) if label_names else (max(max(l) for l in all_labels) + 1 if all_labels else 0)),
        **({"labels_unmatched": {"count": len(plan.labels_unmatched), "first": list(plan.labels_unmatched[:5])}}
           if plan.labels_unmatched else {}),
        "split_method": split_desc,
        "options": config.options_dict(),
        "splits": splits_info,
        "counts": {
            "files": len(files),
            "converted_files": len(files) - n_rej,
            "rejected_files": n_rej,
            "units": len(plan.unit_paths),
            "examples": len(examples),
        },
        "files": [dict(path=p, **files[p]) for p in sorted(files)],
    }
    return DatasetLayout(manifest, specs, len(examples))


def _targets_manifest(examples) -> dict:
    """``targets`` (examples with a target, their scales k) and ``target_scale`` (k per spatial axis when every
    example has the same, else None: then k = target_shape / image_shape per record)."""
    scales = collections.Counter(",".join(str(v) for v in e["target_scale"]) for _, e in examples if e.get("target_scale"))
    uniform = [int(v) for v in next(iter(scales)).split(",")] if len(scales) == 1 else None
    return {"targets": {"examples": sum(scales.values()), "scales": dict(sorted(scales.items()))},
            "target_scale": uniform}


def write_planned_shard(out: str, work: str, spec: ShardSpec, progress=None) -> str:
    """Write one planned shard into ``out`` atomically, unless a previous run of the same job already did (its
    marker in ``work/shards`` holds the same digest and the file has the planned size). Returns its name."""
    path = pathlib.Path(out) / spec.name
    marker = pathlib.Path(work) / "shards" / f"{spec.name}.digest"
    try:
        if marker.read_text() == spec.digest and path.stat().st_size == spec.size:
            if progress:
                progress(len(spec.records))
            return spec.name
    except OSError:
        pass
    _w.write_shard(out, spec.name, spec.records, progress=progress)
    marker.parent.mkdir(parents=True, exist_ok=True)
    _w.write_atomic(marker, spec.digest, sync_dir=False)
    return spec.name


def finish_dataset(plan: ConversionPlan, layout: DatasetLayout) -> None:
    """Remove shards no longer planned, then write ``manifest.json`` (last: the dataset is complete); remember
    the input folders on this machine only (``medtf.records.local``) for raw-input parity."""
    from medtf.records.local import remember_inputs

    _w.remove_stale(plan.out, [s.name for s in layout.shards])
    _w.write_manifest(plan.out, layout.manifest)
    remember_inputs(plan.out, plan.roots)


def exit_code(manifest: dict) -> int:
    """3 when nothing converted, 1 when some inputs were rejected, else 0."""
    c = manifest["counts"]
    return EXIT_FAILED if not c["examples"] else (EXIT_SOME_REJECTED if c["rejected_files"] else EXIT_OK)


def write_stats(plan: ConversionPlan, examples: int, timings: dict, **extra) -> dict:
    """``convert_stats.json`` (timings stay out of the manifest, so reruns give identical manifests)."""
    stats = {"timings": {k: round(v, 4) for k, v in timings.items()}, "workers": plan.config.workers,
             "units": plan.units, "examples": examples, **extra}
    _w.write_atomic(pathlib.Path(plan.out) / STATS, _w.dumps_json(stats))
    return stats


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
    # 1. discover
    plan, pseudonymizer = plan_conversion(config)
    timings: dict[str, float] = {"discover_s": time.perf_counter() - t0}

    # 2. convert every unit to the cache, decide the dataset-wide properties, re-encode where needed
    t1 = time.perf_counter()
    metas = _run_units([(t, None) for t in plan.tasks], config, pseudonymizer, plan.work, plan.fingerprint,
                       "convert")
    timings["convert_s"] = time.perf_counter() - t1
    reject = dict(plan.unit_reject)
    facts = decide_dataset(config.mode, metas, reject)
    if facts.redo:  # re-encode the few units whose natural dtype is narrower than the dataset's
        t2 = time.perf_counter()
        by_key = {t.unit.key: t for t in plan.tasks}
        redone = _run_units([(by_key[k], facts.image_dtype) for k in facts.redo], config, pseudonymizer,
                            plan.work, plan.fingerprint, f"re-encode as {facts.image_dtype}")
        accept_reencoded(facts, metas, reject, redone)
        timings["reencode_s"] = time.perf_counter() - t2

    # 3.-5. splits, shards in a seeded order inside each split, manifest (last)
    layout = layout_dataset(plan, metas, reject, facts)
    t3 = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=layout.examples, desc="write shards", unit="rec", disable=not config.progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for spec in layout.shards:
            write_planned_shard(plan.out, plan.work, spec, progress=bar.update)
    finally:
        bar.close()
    _close_journal()
    finish_dataset(plan, layout)
    timings["write_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    stats = write_stats(plan, layout.examples, timings)
    if not config.keep_work:
        shutil.rmtree(pathlib.Path(plan.out) / WORK, ignore_errors=True)
    _unlock(str(pathlib.Path(plan.out) / LOCK), os.getpid())
    return ConvertResult(exit_code(layout.manifest), layout.manifest, plan.out, stats)


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
    un = manifest.get("labels_unmatched")
    if un:
        lines.append(f"labels CSV: {un['count']} row(s) match no input (first: {', '.join(un['first'])}; "
                     "tfrecord-convert --lookup maps names to paths)")
    return "\n".join(lines)
