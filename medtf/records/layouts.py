"""Dataset layouts ``tfrecord-convert`` recognises besides plain folders.

nnU-Net raw datasets (``DatasetXXX_Name/``): ``dataset.json`` (``channel_names`` or ``modality``, ``labels``,
``file_ending``), ``imagesTr/CASE_0000<ending>``, ``CASE_0001<ending>`` … (one file per channel),
``labelsTr/CASE<ending>`` and optionally ``imagesTs/`` (+ ``labelsTs/``). Every case becomes one example
with its channels stacked (checked to share one grid) and its label map as the mask; ``imagesTs`` cases
are the test split, the others are split train / val by case (each case its own patient).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re

from medtf.io.types import SourceUnit


@dataclasses.dataclass
class NnUNetLayout:
    """What :func:`read_nnunet` found."""

    units: list  # SourceUnit("stack", channel files, key, rel)
    masks: dict  # unit key -> label map path (or None for unlabelled test cases)
    splits: dict  # unit key -> "test" for imagesTs cases
    rejected: list  # (path, reason)
    label_names: list | None
    label_regions: dict | None  # region-based labels: name -> [label values]


def is_nnunet(folder) -> bool:
    folder = pathlib.Path(folder)
    return folder.is_dir() and (folder / "dataset.json").is_file() and (folder / "imagesTr").is_dir()


def read_nnunet(folder, *, pseudonymizer, keep_paths: bool = False) -> NnUNetLayout:
    """Cases of an nnU-Net raw dataset folder.

    Raises:
        ValueError: an unreadable or incomplete ``dataset.json`` (the message names the key).
    """
    folder = pathlib.Path(folder)
    try:
        doc = json.loads((folder / "dataset.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder / 'dataset.json'}: not readable JSON ({exc})") from None
    channels = doc.get("channel_names") or doc.get("modality")
    ending = doc.get("file_ending", ".nii.gz")
    if not isinstance(channels, dict) or not channels:
        raise ValueError(f"{folder / 'dataset.json'}: needs 'channel_names' (or 'modality'): {{'0': 'CT', ...}}")
    n_ch = len(channels)
    labels = doc.get("labels") or {}
    names = regions = None
    if labels:
        plain = {k: v for k, v in labels.items() if isinstance(v, int) and not isinstance(v, bool)}
        region = {k: list(v) for k, v in labels.items() if isinstance(v, (list, tuple))}
        bad = {k: v for k, v in labels.items() if k not in plain and k not in region}
        if bad or any(not isinstance(i, int) or i < 0 for v in region.values() for i in v):
            raise ValueError(f"{folder / 'dataset.json'}: 'labels' values must be label integers or lists of them "
                             f"(regions). Received: {bad or region}")
        # region-based labels (nnU-Net: {"whole tumor": [1, 2, 3], ...}): a single-value region names that
        # value; values only inside larger regions are named "label V"; the regions themselves go to the
        # manifest (label_regions) and `medtf evaluate` reports a Dice per region
        single = {v[0]: k for k, v in region.items() if len(v) == 1}
        values = set(plain.values()) | {i for v in region.values() for i in v}
        if values:
            by_value = {**single, **{v: k for k, v in plain.items()}}
            names = [by_value.get(i, f"label {i}") for i in range(max(values) + 1)]
        regions = region or None
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + r"$")
    layout = NnUNetLayout([], {}, {}, [], names, regions)
    for images, labels_dir, split in (("imagesTr", "labelsTr", None), ("imagesTs", "labelsTs", "test")):
        d = folder / images
        if not d.is_dir():
            continue
        cases: dict[str, dict[int, pathlib.Path]] = {}
        for p in sorted(d.iterdir()):
            m = pattern.match(p.name)
            if not m or not p.is_file():
                layout.rejected.append((str(p), f"not an nnU-Net image file (CASE_XXXX{ending})"))
                continue
            cases.setdefault(m.group(1), {})[int(m.group(2))] = p
        for case, files in sorted(cases.items()):
            missing = [i for i in range(n_ch) if i not in files]
            if missing or len(files) != n_ch:
                for p in files.values():
                    layout.rejected.append((str(p), f"case with channels {sorted(files)}; dataset.json names {n_ch}"))
                continue
            rel = f"{images}/{case}"
            unit = SourceUnit(kind="stack", paths=tuple(str(files[i]) for i in range(n_ch)),
                              key=pseudonymizer.source(rel, keep_path=keep_paths), rel=rel)
            label = folder / labels_dir / f"{case}{ending}"
            if split is None and not label.is_file():
                for p in files.values():
                    layout.rejected.append((str(p), f"training case without {labels_dir}/<case>{ending}"))
                continue
            layout.units.append(unit)
            layout.masks[unit.key] = str(label) if label.is_file() else None
            if split:
                layout.splits[unit.key] = split
    return layout
