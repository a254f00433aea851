"""PACS round trip over DICOMweb (dicomweb-client): WADO-RS retrieve a study → predict → STOW-RS the SEG/SR.

``predict_study(model, url, study_uid, store=True)`` retrieves every instance of a study, keeps the images
(SEG, SR, presentation states and other non-images already in the study are left out), writes them to a
private temporary folder and reads them with ``medtf.io`` exactly as the converter does (a series is one
volume for a 3D model, each image its own input for a 2D model), predicts with
:mod:`medtf.serving.engine`, builds one DICOM-SEG (segmentation) or SR (classifier) per series / image with
:mod:`medtf.serving.dicom_out` and, with ``store=True``, stores them back into the same study with STOW-RS.

Results name series and instances by keyed pseudonyms only (``series-<token>``), never by UID.
"""

from __future__ import annotations

import pathlib
import tempfile
from typing import Any


class PacsError(RuntimeError):
    """The PACS could not be reached or refused a request (HTTP 502 in the service; exit 3 in the CLI)."""


def client(url: str, *, timeout: float = 60.0, headers: dict | None = None):
    """A ``dicomweb_client.DICOMwebClient`` for ``url`` (e.g. ``http://127.0.0.1:8042/dicom-web``)."""
    from medtf._optional import require

    require("dicomweb_client", "serving")
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    web = DICOMwebClient(url=url.rstrip("/"), session=session, headers=headers, timeout=timeout)
    # dicomweb-client retries every failure 5 times with waits of 2..16 s; a service must fail fast instead
    web.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=100)
    return web


def _describe(exc: Exception) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")


def retrieve_study(web, study_uid: str, folder) -> list[pathlib.Path]:
    """WADO-RS: every image instance of the study written as a DICOM file under ``folder``.

    Raises:
        PacsError: the study cannot be retrieved (no UID in the message).
    """
    from medtf.serving.dicom_out import is_image

    try:
        datasets = web.retrieve_study(str(study_uid))
    except Exception as exc:  # noqa: BLE001 - requests / HTTP errors of every kind
        raise PacsError(f"WADO-RS retrieve of the study failed: {_describe(exc)}") from None
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        if not is_image(ds):
            continue
        path = folder / f"instance-{i:05d}.dcm"
        _write(ds, path)
        paths.append(path)
    return paths


def _write(ds, path) -> None:
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        from pydicom.dataset import FileMetaDataset

        meta = meta if meta is not None else FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
    ds.save_as(str(path), enforce_file_format=True)


def store(web, datasets) -> int:
    """STOW-RS the datasets; returns how many the PACS accepted.

    Raises:
        PacsError: the PACS refused or could not be reached.
    """
    if not datasets:
        return 0
    try:
        response = web.store_instances(datasets=list(datasets))
    except Exception as exc:  # noqa: BLE001
        raise PacsError(f"STOW-RS store failed: {_describe(exc)}") from None
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        raise PacsError(f"STOW-RS: the PACS refused {len(failed)} of {len(datasets)} object(s)")
    return len(datasets)


def predict_study(model, url: str, study_uid: str, *, store_results: bool = False, kind: str | None = None,
                  pseudonymizer=None, web=None, out_dir=None) -> dict[str, Any]:
    """Retrieve a study, predict it, build SEG/SR objects and optionally store them back.

    Args:
        model: a :class:`~medtf.serving.models.ServedModel`.
        url: the DICOMweb root (``…/dicom-web``).
        study_uid: StudyInstanceUID.
        store_results: STOW-RS the objects into the study.
        kind: "seg" or "sr" (default: by the model's task); None objects for restoration models.
        pseudonymizer: for series keys (default: the site's).
        web: an existing ``DICOMwebClient``.
        out_dir: also write the objects there as ``<instance or series key>_<seg|sr>.dcm``.

    Returns:
        ``{"results": [UnitResult], "rows": [JSON rows named by pseudonyms], "objects": [Dataset],
        "files": [paths written], "rejected": [(key, reason)], "stored": int, "study": "study-<token>"}``.

    Raises:
        PacsError: retrieve or store failed; ValueError: nothing to predict in the study.
    """
    from medtf.io.inputs import iter_inputs, site_pseudonymizer
    from medtf.serving import dicom_out, engine

    pz = pseudonymizer or site_pseudonymizer()
    web = web or client(url)
    if kind is None and model.task != "restoration":
        kind = "seg" if model.task == "segmentation" else "sr"
    with tempfile.TemporaryDirectory(prefix="medtf-dicomweb-", dir=engine.scratch_dir()) as tmp:
        paths = retrieve_study(web, study_uid, tmp)
        if not paths:
            raise ValueError("the study holds no image the model can read")
        rejected: list = []
        results = []
        for unit, image in iter_inputs([tmp], spatial_dims=model.spatial_dims, voi=model.chain.voi,
                                       pseudonymizer=pz, rejected=rejected):
            try:
                results.append(engine.predict_image(model, unit, image))
            except ValueError as exc:
                rejected.append((unit.key, str(exc)))
        rejected = [(pathlib.Path(str(k)).name if str(k).startswith(tmp) else k, r) for k, r in rejected]
        objects = dicom_out.build(model, results, kind) if kind and results else []
        ids = [engine.identify(r, pz) for r in results]
        rows = [row for r in results for row in engine.public_rows(r, pz)]
    stored = store(web, objects) if store_results else 0
    files = []
    if out_dir is not None and objects:
        out_dir = pathlib.Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, obj in zip(ids, objects):
            path = out_dir / f"{i.get('instance') or i.get('series') or i.get('source')}_{kind}.dcm"
            obj.save_as(str(path), enforce_file_format=True)
            files.append(path)
    return {"results": results, "rows": rows, "objects": objects, "files": files, "rejected": rejected,
            "stored": stored, "study": "study-" + pz.token(str(study_uid))}
