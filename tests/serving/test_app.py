"""The app with a stand-in model (no TensorFlow), served by uvicorn in a thread on 127.0.0.1: the per-request
timeout (504) and a chunked upload over the limit (413), each followed by a request that succeeds."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from .conftest import free_port, http


def _slow_model():
    from medtf.preprocess import Chain, Preprocessing
    from medtf.serving.models import ServedModel

    class Slow(ServedModel):
        kind = "test"

        def run(self, x):
            if float(np.max(x)) > 100:  # a "slow" example
                time.sleep(2.0)
            return np.full((len(x), 1), 0.75, np.float32)

    return Slow(name="slow", version=3, task="binary", class_names=("no", "yes"), threshold=0.5,
                chain=Chain.of(Preprocessing(size=(4, 4))), input_shape=(4, 4, 1), path=".", output_shape=(1,))


@pytest.fixture(scope="module")
def app_server():
    import uvicorn

    from medtf.serving.app import ServeConfig, create_app

    port = free_port()
    config = ServeConfig(models=("stand-in",), port=port, timeout_s=0.5, max_upload_mb=0.05)
    app = create_app(config, [_slow_model()])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def test_timeout_and_chunked_oversize_then_the_server_keeps_serving(app_server):
    fast = {"instances": [np.ones((6, 6, 1)).tolist()]}
    with http(app_server, token=None) as c:
        r = c.post("/v1/models/slow:predict", json=fast)
        assert r.status_code == 200 and r.json() == {"predictions": [[0.75]]}
        assert c.get("/v1/models/slow").json()["model_version_status"][0]["version"] == "3"
        r = c.post("/v1/models/slow:predict", json={"instances": [np.full((6, 6, 1), 500.0).tolist()]})
        assert r.status_code == 504 and "--timeout" in r.json()["error"]
        assert c.post("/v1/models/slow:predict", json=fast).status_code == 200

        def chunks():
            for _ in range(4):
                yield b"x" * 20_000  # 80 kB, no Content-Length, over the 0.05 MB limit

        r = c.post("/v1/models/slow:predict", content=chunks(), headers={"Content-Type": "application/dicom"})
        assert r.status_code == 413 and "--max-upload-mb" in r.json()["error"]
    with http(app_server, token=None) as c:
        assert c.post("/v1/models/slow:predict", json=fast).status_code == 200
        metrics = c.get("/metrics").text
    assert 'medtf_serve_errors_total{kind="timeout"} 1.0' in metrics
    assert 'medtf_serve_errors_total{kind="too_large"} 1.0' in metrics
