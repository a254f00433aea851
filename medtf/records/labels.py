"""Labels CSV: ``path`` (relative to the input folder) + ``label`` column, or several 0/1 label columns.

Forms:

* ``path,label`` — one class per row. Integer labels are used as they are (``label_names`` None);
  text labels are sorted and numbered 0..K-1 (``label_names`` lists them in that order).
* ``path,<name1>,<name2>,...`` — multi-label: every column other than ``path``/``split``/``label`` is
  a 0/1 label and the label is the vector of them (``label_names`` = the column names).
* an optional ``split`` column fixes the split of that row's examples.
* ``path,split`` — splits only (segmentation or restoration data whose labels are masks/targets): rows
  carry no label.

A ``path`` may name a file or a folder (the label then applies to every file below it, e.g. a
series folder); the most specific entry wins.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib

RESERVED = ("path", "split", "label", "label_name")


@dataclasses.dataclass(frozen=True)
class LabelTable:
    """Parsed labels CSV: ``entries`` maps a normalised relative path to (label tuple, split or None)."""

    entries: dict
    label_names: tuple[str, ...] | None
    multilabel: bool
    has_split: bool

    def match(self, relpath: str) -> str | None:
        """The entry (normalised CSV path) that :meth:`lookup` uses for ``relpath``, else None."""
        p = _norm(relpath)
        while True:
            if p in self.entries:
                return p
            if "/" not in p:
                return "" if "" in self.entries else None
            p = p.rsplit("/", 1)[0]

    def lookup(self, relpath: str):
        """(label, split) of the most specific entry covering ``relpath`` (a '/'-separated path), else None."""
        p = _norm(relpath)
        while True:
            if p in self.entries:
                return self.entries[p]
            if "/" not in p:
                return self.entries.get("") if "" in self.entries else None
            p = p.rsplit("/", 1)[0]


def _norm(path: str) -> str:
    p = pathlib.PurePosixPath(str(path).replace(os.sep, "/").replace("\\", "/"))
    parts = [x for x in p.parts if x not in (".", "")]
    return "/".join(parts).rstrip("/")


def read_labels(csv_path: str | os.PathLike) -> LabelTable:
    """Read a labels CSV.

    Raises:
        ValueError: no ``path`` column, no label column, duplicate paths, or a non-integer value in a
            multi-label column — the message names the file, the row and what was expected.
    """
    csv_path = pathlib.Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        if "path" not in fields:
            raise ValueError(f"{csv_path}: labels CSV needs a 'path' column. Received columns: {fields}")
        rows = []
        for row in reader:
            line = reader.line_num
            if None in row:  # more fields than the header names
                raise ValueError(f"{csv_path}: line {line}: {len(fields) + len(row[None])} fields, but the header "
                                 f"has {len(fields)} ({', '.join(fields)}); quote values that contain commas")
            if any(v is None for v in row.values()):  # fewer fields than the header
                have = sum(v is not None for v in row.values())
                raise ValueError(f"{csv_path}: line {line}: {have} field(s), but the header has {len(fields)} "
                                 f"({', '.join(fields)})")
            rows.append({(k or "").strip(): (v or "").strip() for k, v in row.items()})
    has_split = "split" in fields
    label_cols = [c for c in fields if c not in RESERVED]
    multilabel = "label" not in fields
    if multilabel and not label_cols and has_split:  # splits only: no label per row
        entries: dict = {}
        for i, row in enumerate(rows, start=2):
            if not row["split"]:
                raise ValueError(f"{csv_path}: line {i}: empty split for path {row['path']!r}")
            _add(entries, csv_path, i, row, None, has_split)
        return LabelTable(entries, None, False, has_split)
    if multilabel and not label_cols:
        raise ValueError(
            f"{csv_path}: labels CSV needs a 'label' column, one 0/1 column per label, or a 'split' column. "
            f"Received columns: {fields}"
        )
    entries: dict = {}
    if multilabel:
        names = tuple(label_cols)
        for i, row in enumerate(rows, start=2):
            vals = []
            for c in label_cols:
                try:
                    vals.append(int(float(row[c])))
                except ValueError:
                    raise ValueError(
                        f"{csv_path}: line {i}, column {c!r}: expected 0/1. Received: {row[c]!r}"
                    ) from None
            _add(entries, csv_path, i, row, tuple(vals), has_split)
        return LabelTable(entries, names, True, has_split)
    raw = [row["label"] for row in rows]
    ints = True
    for v in raw:
        try:
            int(v)
        except ValueError:
            ints = False
            break
    names = None
    mapping = None
    if ints and "label_name" in fields:  # integer labels with their names: label_names in label order
        named: dict[int, str] = {}
        for i, row in enumerate(rows, start=2):
            k, n = int(row["label"]), row.get("label_name", "")
            if n and named.setdefault(k, n) != n:
                raise ValueError(f"{csv_path}: line {i}: label {k} is named {n!r} here but {named[k]!r} earlier")
        if named and min(named) >= 0:
            names = tuple(named.get(k, str(k)) for k in range(max(named) + 1))
    if not ints:
        names = tuple(sorted({v for v in raw if v != ""}))
        mapping = {n: i for i, n in enumerate(names)}
    for i, (row, v) in enumerate(zip(rows, raw), start=2):
        if v == "":
            raise ValueError(f"{csv_path}: line {i}: empty label for path {row['path']!r}")
        _add(entries, csv_path, i, row, (int(v) if ints else mapping[v],), has_split)
    return LabelTable(entries, names, False, has_split)


def _add(entries, csv_path, line, row, label, has_split):
    key = _norm(row["path"])
    if key in entries:
        raise ValueError(f"{csv_path}: line {line}: path {row['path']!r} listed twice")
    split = row.get("split") or None if has_split else None
    entries[key] = (label, split)
