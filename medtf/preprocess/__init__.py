"""The one definition of every value transform between a raw pixel and the model's input.

Ground floor (imports nothing else from medtf): window presets and their parser, the spec
(:class:`Preprocessing`, one stage; :class:`Chain`, the stages from RAW input), the NumPy reference
(:mod:`medtf.preprocess.numpy_ops`), the grid maps (:mod:`medtf.preprocess.grid`) and the TensorFlow
twin (:mod:`medtf.preprocess.tf_ops`, imported explicitly: importing ``medtf.preprocess`` never imports
TensorFlow, so the edge runtime can use it).

The contract (docs/data.md, "The preprocessing contract")::

    raw DICOM / NIfTI / PNG ─► reader (MONOCHROME1, Modality LUT, header VOI)      medtf.io + numpy_ops
        ─► conversion stage (spacing → window → size)    tfrecord-convert, stored in manifest.json
        ─► training stage (intensity → channels → size)  tf.data, stored with the model
        ─► model

Every way of running a model (``medtf predict``, ``medtf edge predict``, the SavedModel's
``serving_default``, export calibration and parity) applies the whole :class:`Chain`.
"""

from medtf.preprocess.grid import AxisMap, chain_map, shift_origin, stage_map, stage_spacing, to_source_grid
from medtf.preprocess.numpy_ops import (
    apply,
    apply_chain,
    apply_intensity,
    crop_or_pad,
    invert_monochrome1,
    map_channels,
    modality_lut,
    resample,
    resize,
    voi_window,
    window,
)
from medtf.preprocess.presets import WINDOW_PRESETS, parse_window, parse_windows
from medtf.preprocess.spec import INTENSITY_KINDS, INTERPOLATIONS, PAD_KINDS, RESIZE_KINDS, Chain, Preprocessing

__all__ = [
    "AxisMap", "Chain", "INTENSITY_KINDS", "INTERPOLATIONS", "PAD_KINDS", "Preprocessing", "RESIZE_KINDS",
    "WINDOW_PRESETS", "apply", "apply_chain", "apply_intensity", "chain_map", "crop_or_pad", "invert_monochrome1",
    "map_channels", "modality_lut", "parse_window", "parse_windows", "resample", "resize", "shift_origin",
    "stage_map", "stage_spacing", "to_source_grid", "voi_window", "window",
]
