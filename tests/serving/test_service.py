"""The real server (``medtf serve`` → uvicorn on 127.0.0.1, a free port), called over HTTP.

* TF Serving's REST API: status, metadata and ``:predict`` (row / columnar / b64 / both signatures) equal the
  SavedModel called in-process;
* DICOM in: JSON predictions equal ``medtf predict`` (``predict_inputs``) on the same DICOM files;
* DICOM out: the DICOM-SEG parses with highdicom, references every source instance and decodes to the mask
  ``medtf predict`` writes; the SR parses and holds the probability, the model's name and version;
* bad requests get their 4xx, interleaved with valid requests that keep succeeding;
* planted patient identifiers never appear in a JSON response, the log or the metrics;
* SIGTERM shuts down gracefully: a request in flight completes, the process exits 0.
"""

from __future__ import annotations

import base64
import io
import json
import pathlib
import threading

import numpy as np
import pytest

from . import _build
from .conftest import PSEUDONYM_KEY, Server

pytestmark = pytest.mark.filterwarnings("ignore")


# ------------------------------------------------------------------------------------------ helpers
def _raw(path, spatial_dims):
    """(raw array, spacing) of one input as medtf.io reads it."""
    from medtf.io.inputs import iter_inputs

    (_, image), = list(iter_inputs([str(path)], spatial_dims=spatial_dims))
    return np.asarray(image.array, np.float32), np.asarray(image.spacing, np.float32)


def _files(folder):
    return sorted(pathlib.Path(folder).rglob("*.dcm"))


def _ct_in_series_order(folder):
    """The CT slice files ordered by SimpleITK (an independent reference for the volume order)."""
    import SimpleITK as sitk

    (d,) = sorted({f.parent for f in _files(folder)})
    return [pathlib.Path(p) for p in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(d))]


def _forbidden(folder_list) -> list[str]:
    """Planted identifier values and every source UID: none may appear in responses, logs, metrics."""
    import pydicom

    out = set(_build.planted_strings())
    for folder in folder_list:
        for f in _files(folder):
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            out |= {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)}
    return sorted(out)


def _assert_clean(text: str, forbidden) -> None:
    leaked = [v for v in forbidden if v in text]
    assert not leaked, f"identifiers leaked: {leaked}"


def _dicom_post(client, model, files, accept=None, multipart_body=True):
    from medtf.serving import multipart

    headers = {}
    if accept:
        headers["Accept"] = accept
    if len(files) == 1 and not multipart_body:
        headers["Content-Type"] = "application/dicom"
        return client.post(f"/v1/models/{model}:predict", content=pathlib.Path(files[0]).read_bytes(), headers=headers)
    body, ctype = multipart.build([pathlib.Path(f).read_bytes() for f in files])
    headers["Content-Type"] = ctype
    return client.post(f"/v1/models/{model}:predict", content=body, headers=headers)


@pytest.fixture(scope="module")
def reference(artifacts, tmp_path_factory):
    """``medtf predict`` (Keras, in-process) on the same DICOM: classifier rows and the segmentation mask."""
    import SimpleITK as sitk

    from medtf.training.predict import predict_inputs

    cls = {}
    for f in _files(artifacts["cxr"]):  # one file at a time: rows keyed by the file, whatever the source key scheme
        (row,), rejected = predict_inputs(artifacts["cls"], [f], progress=False)
        assert not rejected
        cls[f] = row
    masks = tmp_path_factory.mktemp("masks")
    seg_rows, rejected = predict_inputs(artifacts["seg"], [artifacts["ct"]], masks_dir=masks, progress=False)
    assert len(seg_rows) == 1 and not rejected
    mask = sitk.GetArrayFromImage(sitk.ReadImage(seg_rows[0]["output"]))
    assert 0 < mask.mean() < 1
    return {"cls": cls, "mask": mask, "seg_row": seg_rows[0]}


# ------------------------------------------------------------------------------------------ TF Serving REST
def test_tf_serving_rest_api_matches_the_savedmodel_in_process(server, artifacts):
    import tensorflow as tf

    cls = tf.saved_model.load(str(artifacts["cls_version"]))
    seg = tf.saved_model.load(str(artifacts["seg_version"]))
    files = _files(artifacts["cxr"])
    imgs = np.stack([_raw(f, 2)[0] for f in files])
    ref = cls.signatures["serving_default"](image=tf.constant(imgs))["predictions"].numpy()
    with server.client() as c:
        status = c.get("/v1/models/cls")
        assert status.status_code == 200
        assert status.json() == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                                           "status": {"error_code": "OK", "error_message": ""}}]}
        assert c.get("/v1/models/cls/versions/1").status_code == 200
        missing = c.get("/v1/models/cls/versions/2")
        assert missing.status_code == 404
        assert missing.json() == {"error": "Servable not found for request: Specific(cls, 2)"}
        md = c.get("/v1/models/seg/metadata").json()
        assert md["model_spec"] == {"name": "seg", "signature_name": "", "version": "1"}
        sigs = md["metadata"]["signature_def"]["signature_def"]
        sd = sigs["serving_default"]
        assert sd["method_name"] == "tensorflow/serving/predict"
        assert set(sd["inputs"]) == {"image", "spacing"} and sd["inputs"]["image"]["dtype"] == "DT_FLOAT"
        assert [d["size"] for d in sd["inputs"]["spacing"]["tensor_shape"]["dim"]] == ["-1", "3"]
        assert [d["size"] for d in sigs["predict_preprocessed"]["inputs"]["x"]["tensor_shape"]["dim"]] == \
            ["-1", "8", "24", "24", "1"]

        # row format, columnar (named and bare), the same numbers as the SavedModel in-process
        r = c.post("/v1/models/cls:predict", json={"instances": imgs.tolist()})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.asarray(r.json()["predictions"], np.float32), ref, rtol=0, atol=1e-6)
        for doc in ({"inputs": {"image": imgs.tolist()}}, {"inputs": imgs.tolist()}):
            out = c.post("/v1/models/cls:predict", json=doc).json()
            np.testing.assert_allclose(np.asarray(out["outputs"], np.float32), ref, rtol=0, atol=1e-6)
        # the other signature
        x = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype(np.float32)
        pre = cls.signatures["predict_preprocessed"](x=tf.constant(x))["predictions"].numpy()
        out = c.post("/v1/models/cls:predict", json={"signature_name": "predict_preprocessed", "instances": x.tolist()})
        np.testing.assert_allclose(np.asarray(out.json()["predictions"], np.float32), pre, rtol=0, atol=1e-6)
        # {"b64": DICOM file bytes} = the file read as the converter reads it
        b64 = [{"b64": base64.b64encode(f.read_bytes()).decode()} for f in files]
        out = c.post("/v1/models/cls:predict", json={"instances": b64})
        np.testing.assert_allclose(np.asarray(out.json()["predictions"], np.float32), ref, rtol=0, atol=1e-6)

        # a 3D model with image + spacing (the chain resamples in the graph)
        vol, sp = _raw(artifacts["ct"], 3)
        ref3 = seg.signatures["serving_default"](image=tf.constant(vol[None]), spacing=tf.constant(sp[None]))
        ref3 = ref3["predictions"].numpy()
        out = c.post("/v1/models/seg:predict", json={"instances": [{"image": vol.tolist(), "spacing": sp.tolist()}]})
        assert out.status_code == 200, out.text
        np.testing.assert_allclose(np.asarray(out.json()["predictions"], np.float32), ref3, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------ DICOM in, JSON out
def test_dicom_json_predictions_equal_medtf_predict(server, artifacts, reference):
    import pydicom

    from medtf.io.deid import Pseudonymizer

    pz = Pseudonymizer(PSEUDONYM_KEY)
    cxr = artifacts["cxr"]
    with server.client() as c:
        for f in _files(cxr):
            r = _dicom_post(c, "cls", [f], multipart_body=False)
            assert r.status_code == 200, r.text
            doc = r.json()
            assert doc["model"] == {"name": "cls", "version": "1"} and doc["task"] == "binary"
            (got,) = doc["predictions"]
            want = reference["cls"][f]
            assert abs(got["probability"] - want["probability"]) <= 1e-6
            assert (got["prediction"], got["label"], got["threshold"]) == (want["prediction"], want["label"],
                                                                           want["threshold"])
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            assert got["instance"] == "instance-" + pz.token(str(ds.SOPInstanceUID))
            assert got["series"] == "series-" + pz.token(str(ds.SeriesInstanceUID))
        # all of them in one STOW-style multipart request
        r = _dicom_post(c, "cls", _files(cxr))
        got = sorted(p["probability"] for p in r.json()["predictions"])
        want = sorted(w["probability"] for w in reference["cls"].values())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert sorted({p["label"] for p in r.json()["predictions"]}) == ["normal", "opacity"]
        # a CT series → one volume for the 3D model
        r = _dicom_post(c, "seg", _files(artifacts["ct"]))
        assert r.status_code == 200, r.text
        (got,) = r.json()["predictions"]
        mask = reference["mask"]
        assert got["shape"] == list(mask.shape) and got["instances"] == len(_files(artifacts["ct"]))
        assert got["labels_present"] == reference["seg_row"]["labels_present"]
        assert got["voxels"] == {"background": int((mask == 0).sum()), "bright": int((mask == 1).sum())}


# ------------------------------------------------------------------------------------------ DICOM out
def test_dicom_seg_and_sr_out(server, artifacts, reference):
    import highdicom as hd
    import pydicom

    from medtf.serving import multipart

    ct = _ct_in_series_order(artifacts["ct"])
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct]
    with server.client() as c:
        r = _dicom_post(c, "seg", ct, accept="application/dicom")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/dicom"
        seg = hd.seg.segread(io.BytesIO(r.content))
        uids = [str(s.SOPInstanceUID) for s in sources]
        assert {u for _, _, u in seg.get_source_image_uids()} == set(uids)
        labels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
        np.testing.assert_array_equal(np.asarray(labels), reference["mask"])
        # the identity DICOM requires is in the SEG, copied from the source
        assert str(seg.PatientID) == _build.PLANTED["PatientID"]
        assert str(seg.StudyInstanceUID) == str(sources[0].StudyInstanceUID)
        assert str(seg.SeriesInstanceUID) != str(sources[0].SeriesInstanceUID)
        algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        assert (str(algo.AlgorithmName), str(algo.AlgorithmVersion)) == ("seg", "1")

        # classifier → SR, one per instance; several instances → multipart/related
        files = _files(artifacts["cxr"])
        r = _dicom_post(c, "cls", files, accept='multipart/related; type="application/dicom"')
        assert r.status_code == 200, r.text
        parts = multipart.split(r.content, r.headers["content-type"])
        assert len(parts) == len(files)
        by_instance = {}
        for _, payload in parts:
            sr = hd.sr.srread(io.BytesIO(payload))
            (group,) = sr.content.get_image_measurement_groups()
            (prob, thr) = group.get_measurements()
            assert "Probability of opacity" in prob.name.meaning and "threshold" in thr.name.meaning
            ref_uid = str(group.source_images[0].referenced_sop_instance_uid)
            by_instance[ref_uid] = (float(prob.value), str(group.finding_type.meaning), float(thr.value))
            assert str(sr.PatientID) == _build.PLANTED["PatientID"]
            text = str(sr)
            assert "cls" in text and "Algorithm Version" in text
        for f in files:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            want = reference["cls"][f]
            p, label, thr = by_instance[str(ds.SOPInstanceUID)]
            assert abs(p - want["probability"]) <= 1e-6 and label == want["label"]
            assert abs(thr - want["threshold"]) <= 1e-6


# ------------------------------------------------------------------------------------------ bad requests
def test_bad_requests_get_their_4xx_and_the_server_keeps_serving(server, artifacts, tmp_path):
    from medtf.serving import multipart

    cxr = _files(artifacts["cxr"])
    good_bytes = cxr[0].read_bytes()
    forbidden = _forbidden([artifacts["cxr"]])

    def good(c):
        r = c.post("/v1/models/cls:predict", content=good_bytes, headers={"Content-Type": "application/dicom"})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["label"] in ("normal", "opacity")

    dcm = {"Content-Type": "application/dicom"}
    junk_part, ctype = multipart.build([b"not dicom at all" * 20])
    cases = [
        ("junk body", dict(content=np.random.default_rng(1).bytes(4000), headers=dcm), 400, "not a DICOM instance"),
        ("truncated DICOM", dict(content=good_bytes[: len(good_bytes) // 3], headers=dcm), 400, "part 1"),
        ("junk multipart part", dict(content=junk_part, headers={"Content-Type": ctype}), 400, "not a DICOM"),
        ("wrong part type", dict(content=junk_part, headers={"Content-Type": ctype.replace(
            'type="application/dicom"', 'type="image/png"')}), 415, "application/dicom"),
        ("oversize upload", dict(content=b"\0" * 1_600_000, headers=dcm), 413, "--max-upload-mb"),
        ("unfit: 2D image for the 3D model", dict(content=good_bytes, headers=dcm, url="seg"), 422, "3D model"),
        ("unknown model", dict(content=good_bytes, headers=dcm, url="nope"), 404, "Servable not found"),
        ("bad JSON", dict(content=b"{not json"), 400, "JSON Parse error"),
        ("both keys", dict(json={"instances": [1], "inputs": [1]}), 400, "Not both"),
        ("wrong shape", dict(json={"instances": [[1.0, 2.0]]}), 400, "shape"),
        ("DICOM out for a tensor request", dict(json={"instances": [[[1.0]]]},
                                                headers={"Accept": "application/dicom"}), 406, "DICOM input"),
        ("wrong token", dict(content=good_bytes, headers=dcm, token="not-the-token"), 401, "bearer token"),
        ("no token", dict(content=good_bytes, headers=dcm, token=None), 401, "bearer token"),
    ]
    for what, kw, status, message in cases:
        token = kw.pop("token", True)
        model = kw.pop("url", "cls")
        with server.client(token=token) as c:
            r = c.post(f"/v1/models/{model}:predict", **kw)
        assert r.status_code == status, (what, r.status_code, r.text)
        err = r.json()["error"]
        assert message in err and "\n" not in err and len(err) < 400, (what, err)
        _assert_clean(r.text, forbidden)
        with server.client() as c:
            good(c)
    assert server.proc.poll() is None


# ------------------------------------------------------------------------------------------ privacy
def test_no_patient_identifier_in_responses_logs_or_metrics(server, artifacts):
    from medtf.serving import multipart

    forbidden = _forbidden([artifacts["cxr"], artifacts["ct"]])
    texts = []
    with server.client() as c:
        texts.append(_dicom_post(c, "cls", _files(artifacts["cxr"])).text)
        texts.append(_dicom_post(c, "seg", _files(artifacts["ct"])).text)
        f = _files(artifacts["cxr"])[1]
        b64 = {"instances": [{"b64": base64.b64encode(f.read_bytes()).decode()}]}
        texts.append(c.post("/v1/models/cls:predict", json=b64).text)
        bad, ctype = multipart.build([f.read_bytes()[:5000], f.read_bytes()])
        texts.append(c.post("/v1/models/cls:predict", content=bad, headers={"Content-Type": ctype}).text)
        texts.append(_dicom_post(c, "seg", _files(artifacts["cxr"])[:1]).text)
        metrics = c.get("/metrics")
        assert metrics.status_code == 200
        texts.append(metrics.text)
    assert 'medtf_serve_requests_total{code="200",model="cls",route="predict"}' in metrics.text
    assert 'medtf_serve_errors_total{kind="unfit"}' in metrics.text
    assert "medtf_serve_request_duration_seconds_bucket" in metrics.text
    log = server.log_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    requests = [e for e in events if e.get("event") == "request"]
    assert requests and any(str(s).startswith("series-") for e in requests for s in e.get("series", []))
    for text in texts + [log]:
        _assert_clean(text, forbidden)


# ------------------------------------------------------------------------------------------ operations
def test_health_readiness_and_graceful_shutdown(artifacts, tmp_path):
    """A second server (no token, loopback): /healthz, /readyz, then SIGTERM while an upload is in flight —
    the request completes, readiness goes away and the process exits 0 with a 'shutdown' log line."""
    import httpx

    s = Server([artifacts["seg_version"].parent, "--name", "lungs"], tmp_path, token=None)
    try:
        with s.client() as c:
            assert c.get("/healthz").json() == {"status": "ok"}
            assert c.get("/readyz").json() == {"status": "ready", "models": {"lungs": "1"}}
            assert c.get("/v1/models/lungs").status_code == 200
        from medtf.serving import multipart

        body, ctype = multipart.build([f.read_bytes() for f in _files(artifacts["ct"])])
        half = len(body) // 2
        sent_signal = threading.Event()
        result = {}

        def slow_body():
            yield body[:half]
            assert sent_signal.wait(30)
            yield body[half:]

        def upload():
            with httpx.Client(base_url=s.url, timeout=60, trust_env=False) as c:
                result["r"] = c.post("/v1/models/lungs:predict", content=slow_body(), headers={"Content-Type": ctype})

        t = threading.Thread(target=upload)
        t.start()
        import time

        time.sleep(1.0)  # the first half is on its way
        s.proc.send_signal(__import__("signal").SIGTERM)
        sent_signal.set()
        t.join(60)
        assert result["r"].status_code == 200, result["r"].text
        assert result["r"].json()["predictions"][0]["labels_present"] == [0, 1]
        assert s.proc.wait(60) == 0
    finally:
        code = s.stop()
    assert code == 0
    events = [json.loads(line) for line in s.log_text().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "shutdown" for e in events)
    assert not any(e.get("event") == "warning" for e in events)  # loopback without a token: no warning
