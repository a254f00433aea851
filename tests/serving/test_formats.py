"""TF Serving's REST JSON format and multipart/related bodies (pure functions, no server)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from medtf.serving import multipart
from medtf.serving.models import Signature, TensorInfo
from medtf.serving.tfserving import RequestError, format_response, model_status, parse_request

ONE = {"serving_default": Signature({"image": TensorInfo("float32", (None, None, None, 1))},
                                    {"predictions": TensorInfo("float32", (None, 1))}),
       "predict_preprocessed": Signature({"x": TensorInfo("float32", (None, 4, 4, 1))},
                                         {"predictions": TensorInfo("float32", (None, 1))})}
TWO = {"serving_default": Signature({"image": TensorInfo("float32", (None, None, None, 1)),
                                     "spacing": TensorInfo("float32", (None, 2))},
                                    {"predictions": TensorInfo("float32", (None, 1))})}


def _body(doc) -> bytes:
    return json.dumps(doc).encode()


def test_row_and_columnar_requests_give_the_same_batch():
    imgs = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4, 1)
    sig, batches, rows = parse_request(_body({"instances": imgs.tolist()}), ONE)
    assert (sig, rows) == ("serving_default", True)
    np.testing.assert_array_equal(batches[0]["image"], imgs)
    for doc in ({"inputs": imgs.tolist()}, {"inputs": {"image": imgs.tolist()}},
                {"instances": [{"image": a.tolist()} for a in imgs]}):
        _, b, r = parse_request(_body(doc), ONE)
        np.testing.assert_array_equal(b[0]["image"], imgs)
        assert r == ("instances" in doc)
    _, b, _ = parse_request(_body({"instances": [{"image": imgs[0].tolist(), "spacing": [1, 2]}]}), TWO)
    np.testing.assert_array_equal(b[0]["spacing"], [[1, 2]])
    doc = {"signature_name": "predict_preprocessed", "instances": np.zeros((3, 4, 4, 1)).tolist()}
    sig, b, _ = parse_request(_body(doc), ONE)
    assert sig == "predict_preprocessed" and b[0]["x"].shape == (3, 4, 4, 1)


@pytest.mark.parametrize("doc, message", [
    ({"instances": [[[1.0]]], "inputs": [[[1.0]]]}, "Not both 'instances' and 'inputs'"),
    ({"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key"),
    ({"signature_name": "nope", "instances": [1]}, 'Serving signature name: "nope" not found'),
    ({"instances": [[1.0, 2.0]]}, "Failed to process element: 0"),
    ({"instances": [[[[1.0]], [[1.0], [2.0]]]]}, "rectangular"),
    ({"instances": [np.zeros((2, 2, 1)).tolist(), np.zeros((3, 3, 1)).tolist()]}, "cannot be batched"),
    ({"inputs": {"image": [[[[1.0]]]], "extra": 1}}, "alias not found"),
    ({"instances": [{"image": np.zeros((2, 2, 1)).tolist()}]}, "Missing input(s) ['spacing']"),
    ({"instances": [{"b64": "!!!notbase64"}]}, "Unable to base64 decode"),
    ({"inputs": {"b64": "AAAA"}}, "row format"),
])
def test_malformed_requests_are_refused_with_tf_serving_messages(doc, message):
    sigs = TWO if "spacing" in message else ONE
    with pytest.raises(RequestError, match=None) as info:
        parse_request(_body(doc), sigs, read_file=lambda b: (np.zeros((2, 2, 1), np.float32), (1.0, 1.0)))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_json_and_b64_files():
    with pytest.raises(RequestError, match="JSON Parse error"):
        parse_request(b"{not json", ONE)
    seen = []

    def read_file(data):
        seen.append(data)
        return np.full((2, 3, 1), len(data), np.float32), (0.5, 0.5)

    payload = {"b64": base64.b64encode(b"fake dicom bytes").decode()}
    _, batches, rows = parse_request(_body({"instances": [payload, {"image": payload}]}), TWO, read_file=read_file)
    assert rows and seen == [b"fake dicom bytes"] * 2
    np.testing.assert_array_equal(batches[0]["spacing"], [[0.5, 0.5]] * 2)  # spacing from the file
    assert batches[0]["image"].shape == (2, 2, 3, 1)


def test_responses_are_written_as_tf_serving_writes_them():
    p = np.array([[0.25], [0.75]], np.float32)
    assert format_response({"predictions": p}, True) == {"predictions": [[0.25], [0.75]]}
    assert format_response({"predictions": p}, False) == {"outputs": [[0.25], [0.75]]}
    two = {"a": p, "b": np.array([1, 2])}
    assert format_response(two, True) == {"predictions": [{"a": [0.25], "b": 1}, {"a": [0.75], "b": 2}]}
    assert format_response(two, False) == {"outputs": {"a": [[0.25], [0.75]], "b": [1, 2]}}
    assert model_status(3) == {"model_version_status": [{"version": "3", "state": "AVAILABLE",
                                                          "status": {"error_code": "OK", "error_message": ""}}]}


def test_multipart_related_round_trip():
    payloads = [b"\x00DICM\r\n--not-a-boundary\r\n" * 3, b"", bytes(range(256))]
    body, ctype = multipart.build(payloads)
    assert ctype.startswith('multipart/related; type="application/dicom"; boundary=')
    parts = multipart.split(body, ctype)
    assert [p for _, p in parts] == payloads
    assert all(h["content-type"] == "application/dicom" for h, _ in parts)
    mt, params = multipart.media_type(ctype)
    assert mt == "multipart/related" and params["type"] == "application/dicom"
    with pytest.raises(multipart.MultipartError, match="boundary"):
        multipart.split(body, "multipart/related")
    with pytest.raises(multipart.MultipartError, match="truncated"):
        multipart.split(body[: len(body) // 2], ctype)
