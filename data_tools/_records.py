"""Write a records directory from in-memory examples (for preparers the converter does not cover).

Uses the same TF-free encoder (``medtf.records.encode``) and shard naming as ``tfrecord-convert``,
and writes a manifest with the converter's keys, so ``medtf.records.load``, ``medtf.data.build_dataset``,
``medtf train`` and ``medtf evaluate`` read the result like any converted dataset.
"""

from __future__ import annotations

import collections
import json
import pathlib
import shutil
import sys
from typing import Iterable, Mapping

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without install
    sys.path.insert(0, str(REPO))

SHARED_DATA_ENV = "MEDTF_SHARED_DATA"


def shared_data_dir() -> pathlib.Path:
    """``$MEDTF_SHARED_DATA`` or ``../shared/data`` beside the checkout."""
    import os

    return pathlib.Path(os.environ.get(SHARED_DATA_ENV, REPO.parent / "shared" / "data"))


def pseudonymizer():
    """The project's keyed pseudonymizer (``medtf.io.deid``): case IDs never reach the records."""
    from medtf.io.deid import Pseudonymizer

    return Pseudonymizer.default()


def write_records(
    out,
    splits: Mapping[str, Iterable[dict]],
    *,
    image_dtype: str,
    intensity: dict,
    tool: str,
    label_names: list[str] | None = None,
    mask_names: list[str] | None = None,
    overwrite: bool = True,
    extra: dict | None = None,
) -> dict:
    """Encode examples into ``out/{split}-00000-of-00001.tfrecord`` shards and ``out/manifest.json``.

    Args:
        out: records directory (replaced when ``overwrite``).
        splits: split name → examples; each example is a dict with ``image`` (channels-last), ``spacing``,
            ``patient`` (pseudonym), ``source`` (record key), optional ``label`` (tuple of ints),
            ``mask`` (uint8, spatial shape), ``modality``, ``origin``, ``direction``.
        image_dtype: storage dtype (every image must be exactly representable).
        intensity: how the preparer stored values (e.g. ``{"kind": "raw8"}``); the manifest records an identity
            conversion stage (``"preprocessing"``) and keeps a ``"note"`` as ``preprocessing_note``.
        tool: name of the preparer (manifest ``tool.name``).
        label_names: class names, or None.
        mask_names: names of the mask values (segmentation), or None.
        overwrite: replace an existing ``out``.
        extra: more manifest keys (e.g. ``source_data``).

    Returns:
        The manifest dict.

    Raises:
        FileExistsError: ``out`` holds a manifest and ``overwrite`` is False.
        ValueError: examples with inconsistent rank/channels, or values not representable.
    """
    from medtf import __version__
    from medtf.records import encode as enc
    from medtf.preprocess import Preprocessing

    out = pathlib.Path(out)
    if (out / "manifest.json").exists() and not overwrite:
        raise FileExistsError(f"{out}: already holds a records dataset (pass overwrite=True)")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    info: dict[str, dict] = {}
    dims = chans = None
    has_mask = None
    total = 0
    all_labels = []
    for name, examples in splits.items():
        shard = f"{name}-00000-of-00001.tfrecord"
        labels = collections.Counter()
        patients = set()
        n = unlabelled = nbytes = 0
        with open(out / shard, "wb") as f:
            for ex in examples:
                img = np.asarray(ex["image"])
                d, c = img.ndim - 1, img.shape[-1]
                if dims is None:
                    dims, chans = d, c
                elif (d, c) != (dims, chans):
                    raise ValueError(f"{ex['source']}: {d}D image with {c} channel(s) in a dataset of {dims}D, "
                                     f"{chans}-channel images")
                m = ex.get("mask")
                if has_mask is None:
                    has_mask = m is not None
                rec = enc.encode_example(
                    img, spacing=ex["spacing"], patient=ex["patient"], source=ex["source"], image_dtype=image_dtype,
                    origin=ex.get("origin"), direction=ex.get("direction"), label=ex.get("label"),
                    mask=None if m is None else np.asarray(m, np.uint8), modality=ex.get("modality", ""),
                )
                framed = enc.frame_record(rec)
                f.write(framed)
                nbytes += len(framed)
                n += 1
                patients.add(ex["patient"])
                if ex.get("label") is None:
                    unlabelled += 1
                else:
                    lab = tuple(int(v) for v in ex["label"])
                    all_labels.append(lab)
                    labels[",".join(map(str, lab))] += 1
        info[name] = {"examples": n, "patients": len(patients),
                      "labels": dict(sorted(labels.items(), key=lambda kv: (len(kv[0]), kv[0]))),
                      "unlabelled": unlabelled, "shards": [shard], "bytes": nbytes}
        total += n
    manifest = {
        "schema": enc.SCHEMA_NAME,
        "schema_version": enc.SCHEMA_VERSION,
        "tool": {"name": tool, "version": __version__},
        "image_dtype": image_dtype,
        "mode": "volume" if dims == 3 else "slice",
        "spatial_dims": int(dims or 2),
        "channels": int(chans or 1),
        # the preparers store source values unchanged (any processing is the dataset authors'): identity stage
        "preprocessing": Preprocessing().to_dict(),
        **({"preprocessing_note": intensity["note"]} if intensity.get("note") else {}),
        "label_names": label_names,
        "mask_names": mask_names,
        "has_mask": bool(has_mask),
        "multilabel": False,
        "num_labels": len(label_names) if label_names else (max(max(l) for l in all_labels) + 1 if all_labels else 0),
        "split_method": "preparer",
        "splits": info,
        "counts": {"examples": total},
        "files": [],
    }
    manifest.update(extra or {})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
