"""The preprocessing spec: how raw pixels (modality values) become model input, as data.

A :class:`Preprocessing` is one stage; a :class:`Chain` is the stages a model needs from RAW input — the
conversion stage (what ``tfrecord-convert`` did: resample, window, resize, recorded in the manifest)
followed by the training stage (``data.preprocessing`` of the training config). ``model.json``, the
``.tflite`` metadata and the SavedModel's ``medtf.json`` store the chain; every way of running a model
applies it (``medtf.preprocess.numpy_ops`` — the reference — or ``medtf.preprocess.tf_ops``).

Order inside one stage: resample to ``spacing`` → intensity → channels → size.
Pure Python: no NumPy, TensorFlow or pydicom at import.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from medtf.preprocess.presets import parse_window

INTENSITY_KINDS = ("none", "window", "zscore", "range", "scale")
RESIZE_KINDS = ("resize", "crop_or_pad")
INTERPOLATIONS = ("linear", "nearest")
PAD_KINDS = ("zero", "min")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """One preprocessing stage.

    Attributes:
        voi: the reader applies the DICOM header's VOI window / LUT ([0, 1]; MONOCHROME1 shown inverted)
            before anything else (``tfrecord-convert --voi``). Readers act on it; array functions ignore it.
        spacing: resample to this spacing (mm, array axis order: (row, col) or (slice, row, col); one
            value for every axis) with ``interpolation``; the first voxel keeps its position and voxels
            past the input's extent take the image minimum (SimpleITK ``ResampleImageFilter`` rules).
            None keeps the input spacing.
        interpolation: "linear" or "nearest", for ``spacing`` and for ``resize``.
        intensity: "none" | "window" (each (width, level) in ``windows`` → one channel in [0, 1],
            pydicom's linear VOI function; colour is averaged first) | "zscore" (``mean``/``std``, or per
            image when None) | "range" (clip to ``value_range`` then scale to [0, 1]) | "scale" (divide
            by ``scale``).
        windows: (width, level) pairs for "window" (preset names are accepted and resolved).
        mean, std: fixed statistics for "zscore"; None means per-image statistics.
        value_range: (min, max) for "range".
        scale: divisor for "scale" (255 for 8-bit images).
        size: spatial output size ((H, W) or (D, H, W)); None keeps the size.
        resize: "resize" (half-pixel-centre interpolation, ``tf.image.resize`` without antialiasing) or
            "crop_or_pad" (centre crop / pad, ``tf.image.resize_with_crop_or_pad``'s rule).
        pad: fill for "crop_or_pad": "zero" or "min" (the image minimum, for raw modality values).
        channels: channels the model expects; 1 channel is repeated to match, several are averaged to
            1 when ``channels == 1``. None keeps the channels.
    """

    intensity: str = "none"
    windows: tuple[tuple[float, float], ...] = ()
    mean: float | None = None
    std: float | None = None
    value_range: tuple[float, float] | None = None
    scale: float = 1.0
    size: tuple[int, ...] | None = None
    resize: str = "resize"
    channels: int | None = None
    spacing: tuple[float, ...] | None = None
    interpolation: str = "linear"
    pad: str = "zero"
    voi: bool = False

    def __post_init__(self):
        def bad(key, expected, received):
            raise ValueError(f"preprocessing.{key} must be {expected}. Received: {received!r}")

        for key in ("size", "spacing", "value_range"):
            v = getattr(self, key)
            if v is not None and not isinstance(v, (int, float, list, tuple)):
                bad(key, "a number or a list of numbers", v)
        try:
            for key in ("mean", "std", "scale"):
                if getattr(self, key) is not None:
                    float(getattr(self, key))
        except (TypeError, ValueError):
            bad(key, "a number", getattr(self, key))

        if self.intensity not in INTENSITY_KINDS:
            bad("intensity", f"one of {INTENSITY_KINDS}", self.intensity)
        if self.resize not in RESIZE_KINDS:
            bad("resize", f"one of {RESIZE_KINDS}", self.resize)
        if self.interpolation not in INTERPOLATIONS:
            bad("interpolation", f"one of {INTERPOLATIONS}", self.interpolation)
        if self.pad not in PAD_KINDS:
            bad("pad", f"one of {PAD_KINDS}", self.pad)
        try:
            windows = tuple(parse_window(w) for w in (self.windows or ()))
        except ValueError as exc:
            raise ValueError(f"preprocessing.windows: {exc}") from None
        object.__setattr__(self, "windows", windows)
        if self.intensity == "window" and not windows:
            raise ValueError("preprocessing.intensity='window' needs at least one (width, level) in `windows`")
        if self.intensity != "window" and windows:
            raise ValueError(f"preprocessing.windows {list(windows)} given with intensity={self.intensity!r}; "
                             "use intensity='window'")
        if self.intensity == "range":
            if self.value_range is None or len(tuple(self.value_range)) != 2:
                bad("value_range", "(min, max) for intensity='range'", self.value_range)
        if self.value_range is not None:
            lo, hi = (float(v) for v in self.value_range)
            if not hi > lo:
                bad("value_range", "(min, max) with max > min", self.value_range)
            object.__setattr__(self, "value_range", (lo, hi))
        for key in ("mean", "std"):
            v = getattr(self, key)
            if v is not None:
                object.__setattr__(self, key, float(v))
        if self.std is not None and not self.std > 0:
            bad("std", "> 0", self.std)
        object.__setattr__(self, "scale", float(self.scale))
        if not self.scale > 0:
            bad("scale", "> 0", self.scale)
        if self.size is not None:
            size = tuple(int(s) for s in _seq(self.size))
            if not size or min(size) < 1 or len(size) > 3:
                bad("size", "1 to 3 positive integers", self.size)
            object.__setattr__(self, "size", size)
        if self.spacing is not None:
            sp = tuple(float(s) for s in _seq(self.spacing))
            if not sp or len(sp) > 3 or any(not math.isfinite(s) or s <= 0 for s in sp):
                bad("spacing", "1 to 3 positive mm values", self.spacing)
            object.__setattr__(self, "spacing", sp)
        if self.channels is not None:
            if int(self.channels) < 1:
                bad("channels", ">= 1", self.channels)
            object.__setattr__(self, "channels", int(self.channels))
        object.__setattr__(self, "voi", bool(self.voi))

    # ------------------------------------------------------------------------------ properties
    @property
    def output_channels(self) -> int | None:
        """Channels this stage outputs (None: as many as it receives)."""
        if self.channels is not None:
            return self.channels
        if self.intensity == "window":
            return len(self.windows)
        return None

    @property
    def is_identity(self) -> bool:
        return self == Preprocessing()

    @property
    def changes_geometry(self) -> bool:
        return self.spacing is not None or self.size is not None

    def describe(self) -> str:
        """One line for messages: ``"window 1500/-600 + 350/50, resize to 48x48"``."""
        parts = []
        if self.voi:
            parts.append("header VOI")
        if self.spacing is not None:
            parts.append(f"resample to {'x'.join(f'{s:g}' for s in self.spacing)} mm ({self.interpolation})")
        if self.intensity == "window":
            parts.append("window " + " + ".join(f"{w:g}/{l:g}" for w, l in self.windows))
        elif self.intensity == "zscore":
            parts.append("z-score" + ("" if self.mean is None else f" ({self.mean:g}, {self.std:g})"))
        elif self.intensity == "range":
            parts.append(f"range {self.value_range[0]:g}..{self.value_range[1]:g}")
        elif self.intensity == "scale":
            parts.append(f"divide by {self.scale:g}")
        if self.channels is not None:
            parts.append(f"{self.channels} channel(s)")
        if self.size is not None:
            parts.append(f"{self.resize.replace('_', ' ')} to {'x'.join(map(str, self.size))}")
        return ", ".join(parts) or "none"

    # ------------------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["windows"] = [list(w) for w in self.windows]
        for k in ("value_range", "size", "spacing"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, *, where: str = "preprocessing") -> "Preprocessing":
        """Inverse of :meth:`to_dict`; missing keys take their defaults (older documents).

        Raises:
            ValueError: unknown keys (named with ``where``) or invalid values.
        """
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], sorted(known), n=2)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ValueError(f"unknown config key {where + '.' + unknown[0]!r}{hint}; expected one of {sorted(known)}")
        d["windows"] = tuple(tuple(w) if not isinstance(w, str) else w for w in d.get("windows") or ())
        for k in ("value_range", "size", "spacing"):
            if d.get(k) is not None:
                d[k] = tuple(_seq(d[k]))
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _seq(v):
    return (v,) if isinstance(v, (int, float)) else tuple(v)


@dataclasses.dataclass(frozen=True)
class Chain:
    """The stages from RAW input to the model input, applied in order.

    ``steps[0]`` is normally the conversion stage (from the records' manifest), ``steps[-1]`` the
    training stage. Identity stages are kept (they document that a stage is known to do nothing).
    """

    steps: tuple[Preprocessing, ...] = ()

    def __post_init__(self):
        steps = tuple(s if isinstance(s, Preprocessing) else Preprocessing.from_dict(s) for s in self.steps)
        for i, s in enumerate(steps[1:], start=1):
            if s.voi:
                raise ValueError(f"preprocessing stage {i}: voi (header VOI) can only be the first stage's")
        object.__setattr__(self, "steps", steps)

    @property
    def voi(self) -> bool:
        return bool(self.steps) and self.steps[0].voi

    @property
    def output_channels(self) -> int | None:
        out = None
        for s in self.steps:
            out = s.output_channels or out
        return out

    def describe(self) -> str:
        return " → ".join(s.describe() for s in self.steps) or "none"

    def to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.steps]

    @classmethod
    def from_list(cls, items) -> "Chain":
        return cls(tuple(Preprocessing.from_dict(d, where=f"preprocessing_chain[{i}]") for i, d in enumerate(items or ())))

    @classmethod
    def of(cls, *steps: Preprocessing | None) -> "Chain":
        return cls(tuple(s for s in steps if s is not None))
