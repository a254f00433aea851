"""Raw inputs for a model: files and folders → (unit, image) pairs, read the way the converter read them.

Used by everything that runs a model on raw data (``medtf predict``, ``medtf explain``, the edge runtime,
export parity on raw files): DICOM files and series (a series folder becomes one volume for a 3D model),
NIfTI, PNG/JPEG/TIFF and npz, with the header VOI applied when the model's conversion stage says so.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

from medtf.io.types import Image, ReadError, ReadOptions, SourceUnit


def site_pseudonymizer():
    """The site's pseudonymizer when a key is configured (``$MEDTF_PSEUDONYM_KEY`` or the key file), so series
    keys in predictions match the records' keys; else an ephemeral one (no key file is created)."""
    from medtf.io import deid

    if os.environ.get(deid.ENV_KEY) or os.path.isfile(os.path.expanduser(str(os.environ.get(deid.ENV_KEY_FILE) or deid.DEFAULT_KEY_FILE))):
        return deid.Pseudonymizer.default()
    return deid.Pseudonymizer(os.urandom(32))


def iter_inputs(inputs: Sequence, *, spatial_dims: int, voi: bool = False, pseudonymizer=None,
                rejected: list | None = None) -> Iterator[tuple[SourceUnit, Image]]:
    """Yield ``(unit, image)`` for every image under ``inputs``; unreadable ones go to ``rejected``.

    Args:
        inputs: files and/or folders.
        spatial_dims: the model's (2: every DICOM file is its own image; 3: the slices of a series
            are assembled into a volume, as ``tfrecord-convert --mode auto`` does).
        voi: apply the DICOM header's VOI window (the model's conversion stage has ``voi``).
        pseudonymizer: for series keys and patient pseudonyms; default :func:`site_pseudonymizer`.
        rejected: a list receiving ``(path or unit key, reason)`` for inputs that cannot be read.

    Raises:
        FileNotFoundError: an input does not exist.
    """
    from medtf.io.sources import discover, read_unit

    for p in inputs:
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p}: no such file or folder")
    pz = pseudonymizer or site_pseudonymizer()
    sink = rejected if rejected is not None else []
    units, bad = discover(list(inputs), pseudonymizer=pz, mode="auto" if spatial_dims == 3 else "slice")
    sink.extend(bad)
    options = ReadOptions(apply_voi=bool(voi))
    for unit in units:
        try:
            images = read_unit(unit, pseudonymizer=pz, options=options)
        except (ReadError, OSError, ValueError) as exc:
            sink.append((unit.paths[0] if len(unit.paths) == 1 else unit.key, str(getattr(exc, "reason", exc))))
            continue
        for image in images:
            yield unit, image
