"""Sharding and atomic writes: shards ``{split}-{i:05d}-of-{n:05d}.tfrecord`` and ``manifest.json``.

Every file is written to a temporary name in the same folder, fsync'ed and moved into place with
``os.replace``, so a reader (or a crash) sees either the old file or the complete new one. The
manifest is written last: a directory holds a complete dataset exactly when it has a manifest.
No TensorFlow here; records arrive already framed (see :mod:`medtf.records.encode`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import re
from collections import OrderedDict
from typing import Callable, Iterable, Sequence

SHARD_RE = re.compile(r"^(?P<split>[A-Za-z_][A-Za-z0-9_]*)-(?P<i>\d{5})-of-(?P<n>\d{5})\.tfrecord$")
MANIFEST = "manifest.json"


def shard_name(split: str, i: int, n: int) -> str:
    """``{split}-{i:05d}-of-{n:05d}.tfrecord``."""
    return f"{split}-{i:05d}-of-{n:05d}.tfrecord"


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so renames inside it are durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: bytes | str, *, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` through a temp file + fsync + ``os.replace``."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


def dumps_json(obj) -> str:
    """Canonical JSON (sorted keys, 1-space indent, trailing newline) so equal content is equal bytes."""
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def order_key(seed: int, key: str) -> tuple[str, str]:
    """Seeded, input-order-independent position of a record inside its split."""
    return hashlib.sha256(f"{seed}\x01{key}".encode()).hexdigest(), key


def plan_shards(sizes: Sequence[int], target_bytes: int) -> list[list[int]]:
    """Group consecutive records (by index) into shards of about ``target_bytes`` each.

    Returns:
        A list of shards, each a list of record indices; at least one shard (possibly empty).
    """
    total = sum(sizes)
    n = max(1, min(len(sizes), math.ceil(total / max(1, target_bytes)))) if sizes else 1
    shards: list[list[int]] = [[] for _ in range(n)]
    start = 0
    for i, s in enumerate(sizes):
        mid = start + s / 2
        shards[min(n - 1, int(mid * n / total) if total else 0)].append(i)
        start += s
    return shards


class _Reader:
    """pread() from many cache files with a small pool of open descriptors."""

    def __init__(self, limit: int = 64):
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._limit = limit

    def read(self, path: str, offset: int, length: int) -> bytes:
        fd = self._fds.pop(path, None)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            while len(self._fds) >= self._limit:
                os.close(self._fds.popitem(last=False)[1])
        self._fds[path] = fd
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise OSError(f"{path}: short read ({len(data)} of {length} bytes at {offset})")
        return data

    def close(self):
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def write_shard(
    directory: str | os.PathLike,
    name: str,
    records: Sequence[tuple[str, int, int]],
    progress: Callable[[int], None] | None = None,
    reader: "_Reader | None" = None,
) -> str:
    """Write one shard atomically (temp file, fsync, rename, directory fsync) from framed records held in
    cache files. Safe to run on several machines at once for different shards of one shared folder.

    Args:
        directory: output folder.
        name: shard file name (:func:`shard_name`).
        records: (cache file, offset, length) of each framed record, in output order.
        progress: called with 1 after each record.
        reader: an open reader to reuse (one is opened and closed otherwise).

    Returns:
        ``name``.
    """
    import uuid

    directory = pathlib.Path(directory)
    own = reader is None
    reader = _Reader() if own else reader
    tmp = directory / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            for rec in records:
                f.write(reader.read(*rec))
                if progress:
                    progress(1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
    finally:
        tmp.unlink(missing_ok=True)
        if own:
            reader.close()
    fsync_dir(directory)
    return name


def write_shards(
    directory: str | os.PathLike,
    split: str,
    records: Sequence[tuple[str, int, int]],
    target_bytes: int,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Write one split's shards atomically from framed records held in cache files.

    Args:
        directory: output folder.
        split: split name.
        records: (cache file, offset, length) of each framed record, in output order.
        target_bytes: approximate shard size.
        progress: called with the number of records written after each record.

    Returns:
        The shard file names, in order.
    """
    groups = plan_shards([r[2] for r in records], target_bytes)
    reader = _Reader()
    try:
        return [write_shard(directory, shard_name(split, i, len(groups)), [records[j] for j in group],
                            progress=progress, reader=reader) for i, group in enumerate(groups)]
    finally:
        reader.close()


def remove_stale(directory: str | os.PathLike, keep: Iterable[str]) -> list[str]:
    """Delete shard files and leftover temp files in ``directory`` that are not in ``keep``."""
    directory = pathlib.Path(directory)
    keep = set(keep)
    removed = []
    for p in directory.iterdir():
        if p.is_file() and p.name not in keep and (SHARD_RE.match(p.name) or (p.name.startswith(".") and ".tmp-" in p.name)):
            p.unlink()
            removed.append(p.name)
    return removed


def write_manifest(directory: str | os.PathLike, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (call last)."""
    write_atomic(pathlib.Path(directory) / MANIFEST, dumps_json(manifest))
