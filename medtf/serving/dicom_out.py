"""Predictions → DICOM objects that go back into the patient's study (highdicom).

* segmentation → a DICOM Segmentation (``highdicom.seg.Segmentation``, BINARY, one segment per foreground
  class) on the source grid, one frame per source slice and segment, each frame referencing its source
  SOP Instance UID;
* classification → a Comprehensive 3D SR (``highdicom.sr.Comprehensive3DSR``) holding a TID 1500
  Measurement Report: per prediction one measurement group (TID 1501) with the finding (the decided class),
  the probability of each class (or the cumulative probabilities of an ordinal model), the decision
  threshold, the model's name and version (Algorithm Identification and the device observer) and the
  source images.

Both copy the patient / study identity DICOM requires from the source datasets (highdicom does this), and
only there: nothing here logs or returns header values. Codes for classes use the private coding scheme
``99MEDTF`` (code value ``C<k>``, meaning the class name).
"""

from __future__ import annotations

import io
import warnings
from typing import Sequence

import numpy as np

CODING_SCHEME = "99MEDTF"
SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
_NOT_IMAGES = ("SEG", "SR", "KO", "PR", "RTSTRUCT", "RTPLAN", "RTDOSE", "REG", "DOC")


def _hd():
    from medtf._optional import require

    return require("highdicom", "serving")


def _code(value: str, meaning: str):
    return _hd().sr.CodedConcept(value=value, scheme_designator=CODING_SCHEME, meaning=str(meaning)[:64])


def is_image(ds) -> bool:
    """Whether a dataset is an image a model can read (not a SEG, SR, presentation state, ...)."""
    return str(getattr(ds, "Modality", "") or "") not in _NOT_IMAGES and (
        "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds or "Rows" in ds)


def source_datasets(unit) -> list:
    """The unit's source image headers (no pixel data), in the order of the image ``medtf.io`` read
    (a series sorted along its normal as ``read_dicom_series`` sorts it).

    Raises:
        ValueError: not a DICOM unit.
    """
    from medtf.io.header import SEG_SOP_CLASS, header_value, read_header, series_order

    if unit.kind not in ("dicom", "dicom_series"):
        raise ValueError(f"{unit.key}: DICOM output needs DICOM input (received a {unit.kind} file)")
    pairs = [(p, read_header(p)) for p in unit.paths]
    pairs = [(p, ds) for p, ds in pairs if str(header_value(ds, "SOPClassUID", "")) != SEG_SOP_CLASS]
    if unit.kind == "dicom_series":
        pairs = list(series_order(pairs)[0])
    return [ds for _, ds in pairs]


def _schemes():
    hd = _hd()
    return [hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=CODING_SCHEME, name="medtf model classes", responsible_organization="medtf")]


def _algorithm(model):
    hd = _hd()
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(name=model.name, version=str(model.version),
                                              family=codes.DCM.ArtificialIntelligence)


def _software() -> str:
    from medtf import __version__

    return f"medtf {__version__}"


def _class_name(model, k: int) -> str:
    return model.class_names[k] if k < len(model.class_names) else f"class {k}"


def segmentation(model, result, *, series_instance_uid: str | None = None, instance_number: int = 1):
    """A ``highdicom.seg.Segmentation`` of one unit's predicted mask (``UnitResult.mask``).

    Args:
        model: the :class:`~medtf.serving.models.ServedModel` that predicted it (name, version, classes).
        result: a segmentation :class:`~medtf.serving.engine.UnitResult` from DICOM input.
        series_instance_uid: the new series (default: a fresh UID).

    Raises:
        ValueError: not a segmentation, or the mask does not fit the source images.
    """
    hd = _hd()
    from pydicom.sr.codedict import codes

    if result.mask is None or model.task != "segmentation":
        raise ValueError(f"model {model.name!r} ({model.task}) does not segment: ask for an SR instead")
    sources = source_datasets(result.unit)
    mask = np.asarray(result.mask)
    if mask.ndim == 2:
        mask = mask[None]
    n_classes = max(2, len(model.class_names), int(mask.max(initial=0)) + 1)
    algo = _algorithm(model)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k, segment_label=_class_name(model, k)[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=_code(f"C{k}", _class_name(model, k)),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo,
            tracking_uid=hd.UID(), tracking_id=f"{model.name} v{model.version} {_class_name(model, k)}"[:64])
        for k in range(1, n_classes)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=mask.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
            series_instance_uid=series_instance_uid or hd.UID(), series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer="medtf",
            manufacturer_model_name=model.name[:64], software_versions=_software(),
            device_serial_number=f"{model.name} v{model.version}"[:64], omit_empty_frames=False,
            content_label="MEDTF", content_description=f"{model.name} v{model.version}"[:64],
            series_description=f"medtf {model.name} v{model.version}"[:64], coding_schemes=_schemes())
    return seg


def _measurements(model, p: np.ndarray, algo):
    hd = _hd()
    from pydicom.sr.codedict import codes

    p = np.asarray(p, np.float64).ravel()
    items = []

    def measure(code, meaning, value):
        items.append(hd.sr.Measurement(name=_code(code, meaning), value=float(value), unit=codes.UCUM.NoUnits,
                                       algorithm_id=algo))

    if model.task == "binary":
        k = len(p) - 1 if len(p) > 1 else 1
        measure(f"P{k}", f"Probability of {_class_name(model, k)}", p[-1])
        measure("THR", "Decision threshold", 0.5 if model.threshold is None else model.threshold)
    elif model.task == "ordinal":
        for k, v in enumerate(p):
            measure(f"G{k + 1}", f"Probability of grade >= {_class_name(model, k + 1)}", v)
    else:
        for k, v in enumerate(p):
            measure(f"P{k}", f"Probability of {_class_name(model, k)}", v)
    return items


def structured_report(model, result, *, series_instance_uid: str | None = None, instance_number: int = 1):
    """A ``highdicom.sr.Comprehensive3DSR`` with the classifier's findings for one unit.

    Raises:
        ValueError: not a classifier.
    """
    hd = _hd()
    from pydicom.sr.codedict import codes

    if model.dense or not result.outputs:
        raise ValueError(f"model {model.name!r} ({model.task}) is not a classifier: ask for a SEG instead")
    sources = source_datasets(result.unit)
    algo = hd.sr.AlgorithmIdentification(name=model.name[:64], version=str(model.version))
    uid = hd.UID()
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uid, name=model.name[:64], manufacturer_name="medtf",
            model_name=f"{model.name} v{model.version}"[:64]))
    groups = []
    for row, p, k in zip(result.rows, result.outputs, result.slices):
        if k is not None and len(sources) == 1:
            refs = [hd.sr.SourceImageForMeasurementGroup.from_source_image(sources[0],
                                                                           referenced_frame_numbers=[k + 1])]
        elif k is not None:
            refs = [hd.sr.SourceImageForMeasurementGroup.from_source_image(sources[k])]
        else:
            refs = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in sources]
        pred = row.get("prediction")
        finding = (_code(f"C{pred}", _class_name(model, int(pred))) if isinstance(pred, (int, np.integer))
                   else _code("MULTI", row.get("label") or "none"))
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(),
                                                         identifier=f"{model.name} v{model.version}"[:64]),
            algorithm_id=algo, finding_type=finding, source_images=refs,
            measurements=_measurements(model, p, algo)))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure"),
        imaging_measurements=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = hd.sr.Comprehensive3DSR(
            evidence=sources, content=report, series_instance_uid=series_instance_uid or hd.UID(),
            series_number=SR_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=instance_number,
            manufacturer="medtf",
            is_complete=True, series_description=f"medtf {model.name} v{model.version}"[:64],
            coding_schemes=_schemes())
    return sr


def build(model, results: Sequence, kind: str) -> list:
    """One SEG (``kind="seg"``) or SR (``kind="sr"``) per unit result; every object of one call shares a
    new series per study.

    Raises:
        ValueError: the kind does not fit the model's task, or the input is not DICOM.
    """
    hd = _hd()
    if kind not in ("seg", "sr"):
        raise ValueError(f"kind must be 'seg' or 'sr'. Received: {kind!r}")
    series: dict[str, str] = {}
    counts: dict[str, int] = {}
    out = []
    for r in results:
        study = str(getattr(source_datasets(r.unit)[0], "StudyInstanceUID", "") or "")
        uid = series.setdefault(study, hd.UID())
        counts[uid] = counts.get(uid, 0) + 1
        make = segmentation if kind == "seg" else structured_report
        obj = make(model, r, series_instance_uid=uid, instance_number=counts[uid])
        out.append(obj)
    return out


def to_bytes(ds) -> bytes:
    """A dataset as a DICOM Part 10 file."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_files(model, inputs, out_dir, kind: str, *, pseudonymizer=None, overlap: float = 0.5
                ) -> tuple[list[dict], list[tuple[str, str]]]:
    """``medtf predict --format seg|sr``: predict files / folders and write one SEG or SR per image or series.

    Args:
        model: a :class:`~medtf.serving.models.ServedModel` (``KerasRunModel`` for a run folder).
        inputs: DICOM files and folders (a series folder is one volume for a 3D model).
        out_dir: where ``<source>_<seg|sr>.dcm`` go.
        kind: "seg" (segmentation models) or "sr" (classifiers).

    Returns:
        (rows, rejected): the ``medtf predict`` rows with ``output`` (the DICOM file), and
        ``[(input, reason)]`` — non-DICOM inputs are rejected here.

    Raises:
        ValueError: ``kind`` does not fit the model's task.
    """
    import pathlib

    from medtf.serving import engine

    if kind == "seg" and model.task != "segmentation":
        raise ValueError(f"--format seg needs a segmentation model; {model.name!r} is a {model.task} model (use sr)")
    if kind == "sr" and model.task in ("segmentation", "restoration"):
        raise ValueError(f"--format sr needs a classifier; {model.name!r} is a {model.task} model"
                         + (" (use seg)" if model.task == "segmentation" else ""))
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rejected: list = []
    rows = []
    for r in engine.predict_paths(model, inputs, pseudonymizer=pseudonymizer, rejected=rejected, overlap=overlap):
        try:
            obj = build(model, [r], kind)[0]
        except ValueError as exc:
            rejected.append((r.unit.key, str(exc).splitlines()[0]))
            continue
        stem = r.unit.key.replace("/", "__")
        if stem.lower().endswith(".dcm"):
            stem = stem[:-4]
        path = out_dir / f"{stem}_{kind}.dcm"
        obj.save_as(str(path), enforce_file_format=True)
        rows += [{**row, "output": str(path)} for row in r.rows]
    return rows, rejected
