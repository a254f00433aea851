"""Patient-grouped, label-stratified, seeded split assignment (pure Python, no TensorFlow).

A patient never spans two splits. Patients are grouped into strata by their (most frequent) label;
inside a stratum they are visited in a seeded hash order and each goes to the split that is furthest
below its target share of that stratum's examples. The result depends only on the examples'
(patient, label) pairs, the ratios and the seed — never on input order or worker scheduling.
"""

from __future__ import annotations

import collections
import hashlib
import math
from typing import Iterable, Sequence

DEFAULT_SPLIT = (("train", 0.7), ("val", 0.15), ("test", 0.15))
_DEFAULT_NAMES = {1: ("train",), 2: ("train", "val"), 3: ("train", "val", "test")}


def parse_split(value: str | None) -> tuple[tuple[str, float], ...] | str:
    """Parse ``--split``.

    Accepted forms: ``"0.7,0.15,0.15"`` (train,val,test; two values: train,val), ``"train=0.8,test=0.2"``,
    or ``"input"`` (use splits given by the sources: npz splits or the labels CSV ``split`` column).
    None gives the default 0.7/0.15/0.15 (or the input's splits when it has them, decided by the converter).

    Returns:
        ``"input"``, or a tuple of (name, fraction) summing to 1.

    Raises:
        ValueError: malformed value, negative fractions, or fractions not summing to 1.
    """
    if value is None or value == "auto":
        return "auto"
    if value == "input":
        return "input"
    parts = [p.strip() for p in value.split(",") if p.strip()]
    named: list[tuple[str, float]] = []
    try:
        if all("=" in p for p in parts):
            for p in parts:
                k, v = p.split("=", 1)
                named.append((k.strip(), float(v)))
        elif not any("=" in p for p in parts) and len(parts) in _DEFAULT_NAMES:
            named = list(zip(_DEFAULT_NAMES[len(parts)], (float(p) for p in parts)))
        else:
            raise ValueError
    except ValueError:
        raise ValueError(
            "--split must be fractions like '0.7,0.15,0.15', named like 'train=0.8,test=0.2', or 'input'. "
            f"Received: {value!r}"
        ) from None
    names = [n for n, _ in named]
    if len(set(names)) != len(names) or any(not n.isidentifier() for n in names):
        raise ValueError(f"--split names must be distinct identifiers. Received: {value!r}")
    if any(f < 0 or not math.isfinite(f) for _, f in named):
        raise ValueError(f"--split fractions must be >= 0. Received: {value!r}")
    total = sum(f for _, f in named)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"--split fractions must sum to 1. Received: {value!r} (sum {total:g})")
    return tuple(named)


def _order_key(seed: int, patient: str) -> str:
    return hashlib.sha256(f"{seed}\x00{patient}".encode()).hexdigest()


def _stratum(labels: Iterable) -> tuple:
    counts = collections.Counter(tuple(lab) if lab is not None else () for lab in labels)
    # most frequent label of the patient; ties broken by the label's value for determinism
    return max(sorted(counts), key=lambda lab: counts[lab])


def assign_splits(
    examples: Sequence[tuple[str, tuple[int, ...] | None]],
    ratios: Sequence[tuple[str, float]],
    seed: int,
) -> dict[str, str]:
    """Assign every patient to a split.

    Args:
        examples: one (patient, label) pair per example (label a tuple of ints or None).
        ratios: (split name, fraction) pairs, fractions summing to 1.
        seed: changes the order patients are dealt in.

    Returns:
        ``{patient: split name}`` covering every patient in ``examples``.
    """
    names = [n for n, _ in ratios]
    fracs = [float(f) for _, f in ratios]
    by_patient: dict[str, list] = collections.defaultdict(list)
    for patient, label in examples:
        by_patient[patient].append(label)
    strata: dict[tuple, list[str]] = collections.defaultdict(list)
    for patient, labels in by_patient.items():
        strata[_stratum(labels)].append(patient)
    out: dict[str, str] = {}
    # global running totals keep small strata from all landing in the first split
    global_counts = [0] * len(names)
    for stratum in sorted(strata, key=repr):
        patients = sorted(strata[stratum], key=lambda p: (_order_key(seed, p), p))
        # big patients first so the greedy fill stays close to the ratios
        patients.sort(key=lambda p: -len(by_patient[p]))
        counts = [0] * len(names)
        done = 0
        for p in patients:
            n = len(by_patient[p])
            done += n
            g_total = sum(global_counts) + n

            def deficit(i):
                return (fracs[i] * done - counts[i], fracs[i] * g_total - global_counts[i], -i)

            choices = [i for i in range(len(names)) if fracs[i] > 0]
            best = max(choices, key=deficit)
            counts[best] += n
            global_counts[best] += n
            out[p] = names[best]
    return out
