"""Frozen, serialisable configuration of a tf.data pipeline (TF-free: importable by the CLI and docs).

``DataConfig`` round-trips through ``to_dict``/``from_dict`` (plain lists/dicts/scalars, so YAML and
JSON both work) and is what ``medtf.data.build_dataset`` consumes.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from medtf.preprocess import Preprocessing

LABEL_MODES = ("sparse", "onehot", "binary", "multilabel", "ordinal", "mask", "image")
CLASS_BALANCE = (None, "oversample", "undersample", "weights")
POLICIES = ("none", "light", "standard", "heavy")

#: Per-example ops and the meaning of their ``magnitude`` (see ``medtf.data.augment``).
OP_MAGNITUDES = {
    "flip": "unused (each spatial axis in ``axes`` flipped with probability 0.5)",
    "rot90": "unused (k·90° in the (H, W) plane, k uniform; k ∈ {0, 2} for non-square planes)",
    "affine": "(max rotation in degrees, max relative scale change, max translation as a fraction of size)",
    "elastic": "(displacement std in pixels, control-grid spacing in pixels)",
    "brightness": "max additive shift in units of the image's standard deviation",
    "contrast": "max relative contrast change around the mean (factor in [1-m, 1+m])",
    "gamma": "max log-gamma (gamma in [exp(-m), exp(m)]) on the min-max normalised image",
    "noise": "max Gaussian noise std in units of the image's standard deviation",
    "blur": "max Gaussian blur sigma in pixels",
}
GEOMETRIC_OPS = ("flip", "rot90", "affine", "elastic")
INTENSITY_OPS = ("brightness", "contrast", "gamma", "noise", "blur")


def _did_you_mean(name: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(str(name), sorted(choices), n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


@dataclasses.dataclass(frozen=True)
class OpConfig:
    """One augmentation op: ``name`` applied with probability ``p`` and op-specific ``magnitude``.

    ``axes`` (flip only) lists the spatial axes that may flip (None: all of them).
    """

    name: str
    p: float = 0.5
    magnitude: float | tuple[float, ...] = 0.0
    axes: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.name not in OP_MAGNITUDES:
            raise ValueError(f"augmentation op must be one of {sorted(OP_MAGNITUDES)}. Received: {self.name!r}")
        if not 0.0 <= float(self.p) <= 1.0:
            raise ValueError(f"op {self.name!r}: p must be in [0, 1]. Received: {self.p}")
        object.__setattr__(self, "p", float(self.p))
        mag = self.magnitude
        mag = tuple(float(m) for m in mag) if isinstance(mag, (list, tuple)) else float(mag)
        object.__setattr__(self, "magnitude", mag)
        if self.axes is not None:
            object.__setattr__(self, "axes", tuple(int(a) for a in self.axes))

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "p": self.p, "magnitude": list(self.magnitude) if isinstance(self.magnitude, tuple) else self.magnitude}
        if self.axes is not None:
            d["axes"] = list(self.axes)
        return d


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Explicit augmentation: per-example ``ops`` in order, then batch-level mixup / cutmix.

    Attributes:
        ops: per-example ops (geometric ops move image and mask together; intensity ops touch the
            image only).
        mixup_p, mixup_alpha: probability per example of mixing with a partner, Beta(α, α) weight.
        cutmix_p, cutmix_alpha: same for cutmix (box area fraction 1-λ, labels mixed by the area).
    """

    ops: tuple[OpConfig, ...] = ()
    mixup_p: float = 0.0
    mixup_alpha: float = 0.2
    cutmix_p: float = 0.0
    cutmix_alpha: float = 1.0

    def __post_init__(self):
        ops = tuple(o if isinstance(o, OpConfig) else OpConfig(**o) for o in self.ops)
        object.__setattr__(self, "ops", ops)
        for k in ("mixup_p", "cutmix_p"):
            v = float(getattr(self, k))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{k} must be in [0, 1]. Received: {v}")
            object.__setattr__(self, k, v)
        for k in ("mixup_alpha", "cutmix_alpha"):
            v = float(getattr(self, k))
            if v <= 0:
                raise ValueError(f"{k} must be > 0. Received: {v}")
            object.__setattr__(self, k, v)

    @property
    def mixes(self) -> bool:
        return self.mixup_p > 0 or self.cutmix_p > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ops": [o.to_dict() for o in self.ops],
            "mixup_p": self.mixup_p,
            "mixup_alpha": self.mixup_alpha,
            "cutmix_p": self.cutmix_p,
            "cutmix_alpha": self.cutmix_alpha,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AugmentConfig":
        return cls(**{**d, "ops": tuple(OpConfig(**o) for o in d.get("ops", ()))})

    @classmethod
    def policy(cls, name: str) -> "AugmentConfig":
        """Named policy: "none" | "light" | "standard" | "heavy"."""
        if name not in POLICIES:
            raise ValueError(f"augmentation policy must be one of {POLICIES}. Received: {name!r}")
        return _POLICIES[name]


_POLICIES = {
    "none": AugmentConfig(),
    "light": AugmentConfig(
        ops=(
            OpConfig("flip", 0.5, axes=(-1,)),
            OpConfig("affine", 0.3, (10.0, 0.05, 0.05)),
            OpConfig("brightness", 0.3, 0.1),
            OpConfig("contrast", 0.3, 0.1),
        )
    ),
    "standard": AugmentConfig(
        ops=(
            OpConfig("flip", 0.5),
            OpConfig("affine", 0.5, (15.0, 0.1, 0.1)),
            OpConfig("brightness", 0.3, 0.2),
            OpConfig("contrast", 0.3, 0.2),
            OpConfig("gamma", 0.3, 0.3),
            OpConfig("noise", 0.2, 0.1),
            OpConfig("blur", 0.1, 1.0),
        )
    ),
    "heavy": AugmentConfig(
        ops=(
            OpConfig("flip", 0.5),
            OpConfig("rot90", 0.5),
            OpConfig("affine", 0.7, (30.0, 0.2, 0.15)),
            OpConfig("elastic", 0.3, (4.0, 32.0)),
            OpConfig("brightness", 0.5, 0.3),
            OpConfig("contrast", 0.5, 0.3),
            OpConfig("gamma", 0.5, 0.5),
            OpConfig("noise", 0.3, 0.2),
            OpConfig("blur", 0.2, 1.5),
        )
    ),
}


@dataclasses.dataclass(frozen=True)
class PatchConfig:
    """Random 3D (or 2D) patches relative to the mask (MONAI RandCropByPosNegLabel semantics).

    Attributes:
        size: patch spatial size.
        pos_ratio: probability that a patch is centred on a random foreground voxel (else background).
        samples_per_volume: patches drawn from each volume per pass.
    """

    size: tuple[int, ...]
    pos_ratio: float = 0.5
    samples_per_volume: int = 1

    def __post_init__(self):
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        if not self.size or min(self.size) < 1:
            raise ValueError(f"patch size must be positive integers. Received: {self.size}")
        if not 0.0 <= float(self.pos_ratio) <= 1.0:
            raise ValueError(f"patch pos_ratio must be in [0, 1]. Received: {self.pos_ratio}")
        object.__setattr__(self, "pos_ratio", float(self.pos_ratio))
        if int(self.samples_per_volume) < 1:
            raise ValueError(f"samples_per_volume must be >= 1. Received: {self.samples_per_volume}")

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "pos_ratio": self.pos_ratio, "samples_per_volume": int(self.samples_per_volume)}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How records become ``(x, y[, w])`` batches.

    Attributes:
        batch_size: examples per batch.
        preprocessing: deterministic inference preprocessing (travels with the model).
        augment: policy name ("none"|"light"|"standard"|"heavy") or an ``AugmentConfig``; training only.
        label_mode: "sparse" (int32 class) | "onehot" | "binary" (float32 (1,)) | "multilabel"
            (records hold a multi-hot vector) | "ordinal" (``num_classes - 1`` cumulative targets
            ``[k > 0, k > 1, ...]``) | "mask" (y is the mask: one-hot float32 when ``mask_onehot``,
            else int32 (..., 1); float32 binary (..., 1) when ``num_classes == 1``) | "image"
            (restoration: y is the geometrically augmented clean image; x is y degraded by the
            intensity ops — also at evaluation, with fixed seeds, so validation pairs are stable).
        num_classes: classes; None reads ``len(manifest["label_names"])``.
        mask_onehot: one-hot masks for label_mode "mask".
        class_balance: None | "oversample" (``sample_from_datasets`` to ``class_targets``, epoch of
            the split's size) | "undersample" (``rejection_resample``) | "weights" (sample weights
            from the manifest's counts, sklearn's "balanced" rule). Training only.
        class_targets: target class proportions (None: uniform).
        patch: random patch sampling (``PatchConfig``) or None.
        cache: None | "memory" | a file path prefix; caches the parsed, preprocessed examples.
        shuffle_buffer: shuffle buffer (training).
        deterministic: keep element order deterministic (same seed → same batches).
        repeat: repeat forever (training).
        drop_remainder: drop the last partial batch.
    """

    batch_size: int = 32
    preprocessing: Preprocessing = dataclasses.field(default_factory=Preprocessing)
    augment: str | AugmentConfig = "none"
    label_mode: str = "sparse"
    num_classes: int | None = None
    mask_onehot: bool = True
    class_balance: str | None = None
    class_targets: tuple[float, ...] | None = None
    patch: PatchConfig | None = None
    cache: str | None = None
    shuffle_buffer: int = 1024
    deterministic: bool = True
    repeat: bool = False
    drop_remainder: bool = False

    def __post_init__(self):
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1. Received: {self.batch_size}")
        if isinstance(self.preprocessing, dict):
            object.__setattr__(self, "preprocessing", Preprocessing.from_dict(self.preprocessing))
        if not isinstance(self.preprocessing, Preprocessing):
            raise TypeError(f"preprocessing must be a Preprocessing or dict. Received: {type(self.preprocessing).__name__}")
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig.from_dict(self.augment))
        elif isinstance(self.augment, str):
            if self.augment not in POLICIES:
                raise ValueError(f"augment must be one of {POLICIES} or an AugmentConfig. Received: {self.augment!r}")
        elif not isinstance(self.augment, AugmentConfig):
            raise TypeError(f"augment must be a policy name or AugmentConfig. Received: {type(self.augment).__name__}")
        if self.label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}. Received: {self.label_mode!r}")
        if self.class_balance not in CLASS_BALANCE:
            raise ValueError(f"class_balance must be one of {CLASS_BALANCE}. Received: {self.class_balance!r}")
        if self.class_balance is not None and self.label_mode in ("multilabel", "mask", "image"):
            raise ValueError(
                f"class_balance={self.class_balance!r} needs one class per example; label_mode "
                f"{self.label_mode!r} has none"
            )
        if self.class_targets is not None:
            t = tuple(float(v) for v in self.class_targets)
            if min(t) < 0 or sum(t) <= 0:
                raise ValueError(f"class_targets must be non-negative with a positive sum. Received: {t}")
            object.__setattr__(self, "class_targets", t)
        if isinstance(self.patch, dict):
            object.__setattr__(self, "patch", PatchConfig(**self.patch))
        if self.num_classes is not None and int(self.num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1. Received: {self.num_classes}")
        if self.augment_config.mixes and self.label_mode in ("sparse", "ordinal", "image"):
            raise ValueError(
                f"mixup/cutmix mix labels, which label_mode {self.label_mode!r} cannot represent; "
                "use 'onehot', 'binary', 'multilabel' or 'mask' (one-hot)"
            )
        if self.augment_config.mixes and self.label_mode == "mask" and not self.mask_onehot:
            raise ValueError("mixup/cutmix on masks need mask_onehot=True")

    @property
    def augment_config(self) -> AugmentConfig:
        """The explicit ``AugmentConfig`` (policy names resolved)."""
        return AugmentConfig.policy(self.augment) if isinstance(self.augment, str) else self.augment

    def replace(self, **changes) -> "DataConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": int(self.batch_size),
            "preprocessing": self.preprocessing.to_dict(),
            "augment": self.augment if isinstance(self.augment, str) else self.augment.to_dict(),
            "label_mode": self.label_mode,
            "num_classes": self.num_classes,
            "mask_onehot": bool(self.mask_onehot),
            "class_balance": self.class_balance,
            "class_targets": None if self.class_targets is None else list(self.class_targets),
            "patch": None if self.patch is None else self.patch.to_dict(),
            "cache": self.cache,
            "shuffle_buffer": int(self.shuffle_buffer),
            "deterministic": bool(self.deterministic),
            "repeat": bool(self.repeat),
            "drop_remainder": bool(self.drop_remainder),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataConfig":
        """Inverse of ``to_dict``; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config key {'data.' + unknown[0]!r}"
                             f"{_did_you_mean(unknown[0], known)}; expected one of {sorted(known)}")
        d = dict(d)
        if isinstance(d.get("preprocessing"), dict):
            d["preprocessing"] = Preprocessing.from_dict(d["preprocessing"], where="data.preprocessing")
        if d.get("class_targets") is not None:
            d["class_targets"] = tuple(d["class_targets"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DataConfig":
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "DataConfig":
        """Parse YAML; a document with a top-level ``data:`` section (a run's config.yaml) uses it."""
        import yaml

        d = yaml.safe_load(text) or {}
        if isinstance(d, dict) and isinstance(d.get("data"), dict):
            d = d["data"]
        if not isinstance(d, dict):
            raise ValueError(f"DataConfig YAML must be a mapping. Received: {type(d).__name__}")
        return cls.from_dict(d)
