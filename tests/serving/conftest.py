"""Fixtures for the service tests: artifacts built once (shared by xdist workers through a file lock), the real
server (``medtf serve`` in a subprocess, uvicorn on 127.0.0.1 and a free port) and a real Orthanc with its
DICOMweb plugin (skipped with a reason when Orthanc is not installed — but under CI, ``CI=true``, a missing
Orthanc fails the test instead)."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from . import _build

TOKEN = "test-token-4b1d7e0c9a"
PSEUDONYM_KEY = "00112233445566778899aabbccddeeff"
REPO = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(base_url: str, token: str | None = TOKEN, timeout: float = 60.0):
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=timeout, trust_env=False)


def wait_ready(url: str, proc, log: pathlib.Path, seconds: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"the server did not become ready in {seconds} s:\n{log.read_text()[-3000:]}")


class Server:
    """A ``medtf serve`` subprocess."""

    def __init__(self, args, workdir: pathlib.Path, token: str | None = TOKEN):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"serve-{self.port}.log"
        self.token = token
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "medtf.cli.main", "serve", *map(str, args), "--port", str(self.port)]
        if token:
            tf = workdir / f"token-{self.port}"
            tf.write_text(token + "\n")
            cmd += ["--token-file", str(tf)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MEDTF_PSEUDONYM_KEY=PSEUDONYM_KEY, PYTHONUNBUFFERED="1",
                   CUDA_VISIBLE_DEVICES="")
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
        try:
            wait_ready(self.url, self.proc, self.log)
        except BaseException:
            self.stop()
            raise

    def client(self, token: str | None | bool = True, timeout: float = 60.0):
        return http(self.url, self.token if token is True else (token or None), timeout)

    def log_text(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()
        return self.proc.returncode


# --------------------------------------------------------------------------------------------- artifacts
@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """{"cxr", "ct", "cls", "seg", "cls_version", "seg_version"}: phantoms with planted identifiers, two runs
    and their SavedModels — built once per session, shared between xdist workers."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "medtf-serving-artifacts"
    root.mkdir(parents=True, exist_ok=True)
    paths = {"cxr": root / "cxr" / "dicom", "ct": root / "ct" / "dicom", "cls": root / "runs" / "cls",
             "seg": root / "runs" / "seg"}
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (root / "done").exists():
                for sub in ("cxr", "ct", "runs"):
                    shutil.rmtree(root / sub, ignore_errors=True)
                _build.cxr(root / "cxr")
                _build.ct(root / "ct")
                _build.classifier_run(paths["cls"])
                _build.set_threshold_between(paths["cls"], [paths["cxr"]])
                _build.segmenter_run(paths["seg"])
                _build.export(paths["cls"])
                _build.export(paths["seg"])
                (root / "done").write_text("ok")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    paths["cls_version"] = paths["cls"] / "export" / "savedmodel" / "cls" / "1"
    paths["seg_version"] = paths["seg"] / "export" / "savedmodel" / "seg" / "1"
    return paths


# --------------------------------------------------------------------------------------------- Orthanc
def _dicomweb_plugin() -> str | None:
    env = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    if env:
        return env
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=20).stdout
        hits = [line for line in out.splitlines() if "DicomWeb" in line and ".so" in line]
        if hits:
            return sorted(hits, key=len)[0]
    hits = (glob.glob("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*")
            + glob.glob("/usr/lib/orthanc/libOrthancDicomWeb.so*"))
    return hits[0] if hits else None


def orthanc_or_skip():
    """(binary, plugin) or skip (fail under CI)."""
    binary = shutil.which("Orthanc")
    plugin = _dicomweb_plugin()
    if binary and plugin:
        return binary, plugin
    reason = ("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb); "
              f"Orthanc binary: {binary}, DICOMweb plugin: {plugin}")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


class Orthanc:
    def __init__(self, workdir: pathlib.Path):
        import httpx

        binary, plugin = orthanc_or_skip()
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = self.url + "/dicom-web"
        config = {
            "Name": "medtf-test", "StorageDirectory": str(workdir / "db"), "IndexDirectory": str(workdir / "db"),
            "HttpPort": self.port, "DicomServerEnabled": False, "DicomPort": free_port(),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        cfg = workdir / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=2))
        self.log = workdir / "orthanc.log"
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen([binary, str(cfg)], stdout=self._fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"Orthanc exited with {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/plugins", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            self.stop()
            raise AssertionError(f"Orthanc did not start:\n{self.log.read_text()[-2000:]}")
        plugins = httpx.get(self.url + "/plugins", trust_env=False).json()
        if "dicom-web" not in plugins:
            self.stop()
            raise AssertionError(f"Orthanc started without its DICOMweb plugin ({plugins}); plugin path {plugin}")

    def rest(self):
        import httpx

        return httpx.Client(base_url=self.url, timeout=60, trust_env=False)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


def _orthanc_installed() -> bool:
    return bool(shutil.which("Orthanc") and _dicomweb_plugin())


@pytest.fixture(scope="session")
def orthanc_if_installed(tmp_path_factory):
    """A running Orthanc, or None where it is not installed."""
    if not _orthanc_installed():
        yield None
        return
    o = Orthanc(tmp_path_factory.mktemp("orthanc"))
    yield o
    o.stop()


@pytest.fixture(scope="session")
def orthanc(orthanc_if_installed):
    """A running Orthanc with its DICOMweb plugin; skips (fails under CI) where it is not installed."""
    if orthanc_if_installed is None:
        orthanc_or_skip()
    return orthanc_if_installed


@pytest.fixture(scope="session")
def server(artifacts, orthanc_if_installed, tmp_path_factory):
    """``medtf serve`` of both runs with a token, a 1 MB upload limit and, where Orthanc runs, ``--dicomweb``."""
    extra = ["--dicomweb", orthanc_if_installed.dicomweb] if orthanc_if_installed is not None else []
    s = Server([artifacts["cls"], artifacts["seg"], "--max-upload-mb", "1", "--timeout", "60", *extra],
               tmp_path_factory.mktemp("server"))
    yield s
    s.stop()
