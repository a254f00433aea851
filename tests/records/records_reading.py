"""Reading converted records back in tests: every record of every split, keyed by its source."""

from __future__ import annotations


def records_by_source(rec) -> dict:
    """``{source: parsed record}`` over the train, val and test splits of the records folder ``rec``."""
    from medtf.records.reader import load

    out = {}
    for split in ("train", "val", "test"):
        for e in load(rec, split).as_numpy_iterator():
            out[e["source"].decode()] = e
    return out
