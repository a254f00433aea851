"""The PACS round trip against a real Orthanc with its DICOMweb plugin (started here on 127.0.0.1, a free port).

``medtf predict --dicomweb URL --study UID --store`` and the service's ``:predict_study`` retrieve a study over
WADO-RS, predict it and store the DICOM-SEG / SR back with STOW-RS. Orthanc's own REST API must then list the
new SEG / SR in the same study, the SEG must decode to the model's mask and the SR must hold the probability.
Skips with a reason where Orthanc is not installed; fails instead under CI (``CI=true``).
"""

from __future__ import annotations

import io
import pathlib

import numpy as np
import pytest

from . import _build
from .test_service import _assert_clean, _ct_in_series_order, _files, _forbidden

pytestmark = pytest.mark.filterwarnings("ignore")


def _upload(orthanc, folders):
    import pydicom

    from medtf.serving import dicomweb

    web = dicomweb.client(orthanc.dicomweb)
    studies = {}
    for folder in folders:
        dss = [pydicom.dcmread(f) for f in _files(folder)]
        assert dicomweb.store(web, dss) == len(dss)
        studies[str(folder)] = sorted({str(ds.StudyInstanceUID) for ds in dss})
    return studies


def _series_in_study(orthanc, study_uid, modality):
    """Orthanc's REST API: the instances of ``modality`` in the study, as DICOM bytes."""
    with orthanc.rest() as rest:
        found = rest.post("/tools/find", json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid},
                                               "Expand": True})
        assert found.status_code == 200, found.text
        out = []
        for series in found.json():
            if series["MainDicomTags"].get("Modality") == modality:
                for inst in series["Instances"]:
                    out.append(rest.get(f"/instances/{inst}/file").content)
        return out


def test_orthanc_round_trip(orthanc, server, artifacts, tmp_path):
    import highdicom as hd
    import pydicom

    from medtf.cli.main import main as medtf_main
    from medtf.training.predict import predict_inputs

    studies = _upload(orthanc, [artifacts["ct"], artifacts["cxr"]])
    (ct_study,) = studies[str(artifacts["ct"])]
    cxr_studies = studies[str(artifacts["cxr"])]
    forbidden = _forbidden([artifacts["ct"], artifacts["cxr"]])

    # offline: medtf predict --dicomweb --study --store
    out = tmp_path / "pacs.json"
    code = medtf_main(["predict", str(artifacts["seg"]), "--dicomweb", orthanc.dicomweb, "--study", ct_study,
                       "--store", "--out", str(out)])
    assert code == 0
    _assert_clean(out.read_text(), forbidden)
    (seg_bytes,) = _series_in_study(orthanc, ct_study, "SEG")
    seg = hd.seg.segread(io.BytesIO(seg_bytes))
    assert str(seg.StudyInstanceUID) == ct_study
    ct = _ct_in_series_order(artifacts["ct"])
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in ct]
    labels = np.asarray(seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True))
    import SimpleITK as sitk

    rows, _ = predict_inputs(artifacts["seg"], [artifacts["ct"]], masks_dir=tmp_path / "masks", progress=False)
    np.testing.assert_array_equal(labels, sitk.GetArrayFromImage(sitk.ReadImage(rows[0]["output"])))

    # the service: :predict_study on a chest X-ray study stores an SR
    study = cxr_studies[0]
    with server.client() as c:
        r = c.post("/v1/models/cls:predict_study", json={"study": study, "store": True})
        assert r.status_code == 200, r.text
        doc = r.json()
        _assert_clean(r.text, forbidden)
        assert doc["stored"] == 1 and [o["modality"] for o in doc["objects"]] == ["SR"]
        (pred,) = doc["predictions"]
        (sr_bytes,) = _series_in_study(orthanc, study, "SR")
        sr = hd.sr.srread(io.BytesIO(sr_bytes))
        (group,) = sr.content.get_image_measurement_groups()
        assert abs(float(group.get_measurements()[0].value) - pred["probability"]) <= 1e-6
        assert str(sr.StudyInstanceUID) == study

        # the CT study now also holds the SEG: it is left out, the series is predicted again
        r = c.post("/v1/models/seg:predict_study", json={"study": ct_study, "store": False})
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 1 and r.json()["stored"] == 0
        # a study the PACS does not have, and a malformed UID
        r = c.post("/v1/models/seg:predict_study", json={"study": "1.2.3.4.5.6.7", "store": False})
        assert r.status_code == 502 and "WADO-RS" in r.json()["error"]
        r = c.post("/v1/models/seg:predict_study", json={"study": "not-a-uid"})
        assert r.status_code == 400
    _assert_clean(server.log_text(), forbidden)
