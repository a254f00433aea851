"""The HTTP service behind ``medtf serve`` (FastAPI): TF Serving's REST API, DICOM in, DICOM-SEG / SR out.

Routes (``{name}`` is a served model; ``/versions/{version}`` may follow it, as in TF Serving):

=============================================== ===========================================================
``GET  /v1/models/{name}``                      TF Serving model status (``model_version_status``)
``GET  /v1/models/{name}/metadata``             TF Serving metadata (the SignatureDefs)
``POST /v1/models/{name}:predict``              JSON (``instances`` / ``inputs``, ``signature_name``,
                                                ``{"b64": ...}``) → ``predictions`` / ``outputs``;
                                                ``application/dicom`` or ``multipart/related;
                                                type="application/dicom"`` (STOW-RS style) → JSON
                                                predictions, or with ``Accept: application/dicom`` a
                                                DICOM-SEG (segmentation) / SR (classifier)
``POST /v1/models/{name}:predict_study``        with ``--dicomweb``: ``{"study": UID, "store": bool}`` →
                                                WADO-RS retrieve, predict, STOW-RS the SEG/SR back
``GET  /healthz``, ``/readyz``, ``/metrics``    liveness, readiness, Prometheus
=============================================== ===========================================================

Failures are ``{"error": "<one line>"}`` with the status TF Serving would use (400 malformed, 404 unknown
model) and, for what TF Serving does not have: 401 missing / wrong bearer token, 413 upload over
``--max-upload-mb`` (refused from ``Content-Length`` before the body is read), 415 a multipart body whose
parts are not ``application/dicom`` (any other body is read as JSON, as TF Serving does), 406 an ``Accept``
the model cannot produce, 422 DICOM that does not fit the model, 502 the PACS failed, 504 over
``--timeout``. Messages never quote header values; inputs are named by part number or by
pseudonymous keys.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at definition
import dataclasses
import functools
import hmac
import json
import logging
import pathlib
import re
import tempfile
import time
import uuid
from typing import Sequence

import numpy as np

from medtf.serving import logs

LOOPBACK = ("127.0.0.1", "::1", "localhost")
_MODEL_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                         r"(?P<rest>/metadata|:predict|:predict_study|:[^/]*)?$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What ``medtf serve`` was asked for (JSON round trip: workers rebuild the app from it).

    Attributes:
        models: run folders, SavedModel folders or ``.tflite`` files.
        names: model names, one per model (empty: each model's own name).
        host, port: where to listen.
        token_file: file holding the bearer token (None: no authentication).
        max_upload_mb: largest request body accepted.
        timeout_s: per-request limit.
        workers: uvicorn worker processes.
        dicomweb: DICOMweb root of the PACS for ``:predict_study`` (None: route disabled).
        threads: interpreter threads for ``.tflite`` models.
        log_level: "debug" | "info" | "warning".
    """

    models: tuple[str, ...]
    names: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8501
    token_file: str | None = None
    max_upload_mb: float = 256.0
    timeout_s: float = 120.0
    workers: int = 1
    dicomweb: str | None = None
    threads: int = 2
    log_level: str = "info"

    def __post_init__(self):
        object.__setattr__(self, "models", tuple(str(m) for m in self.models))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if not self.models:
            raise ValueError("at least one model is needed")
        if self.names and len(self.names) != len(self.models):
            raise ValueError(f"--name must be given once per model ({len(self.models)}). Received: {len(self.names)}")
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"--port must be in 1..65535. Received: {self.port}")
        if not self.max_upload_mb > 0:
            raise ValueError(f"--max-upload-mb must be > 0. Received: {self.max_upload_mb}")
        if not self.timeout_s > 0:
            raise ValueError(f"--timeout must be > 0. Received: {self.timeout_s}")
        if int(self.workers) < 1:
            raise ValueError(f"--workers must be >= 1. Received: {self.workers}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        return cls(**json.loads(text))


class ServeError(Exception):
    """A request that fails with ``status`` and a one-line ``message``; ``kind`` labels the error metric."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = int(status), kind, " ".join(str(message).split())


def read_token(path) -> str:
    """The bearer token in ``path`` (surrounding whitespace stripped).

    Raises:
        FileNotFoundError: no such file; ValueError: the file is empty.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--token-file {path}: no such file")
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"--token-file {path}: the file is empty")
    return token


def load_models(config: ServeConfig) -> list:
    """Load every model of the config (:func:`medtf.serving.models.load`).

    Raises:
        FileNotFoundError, ModelError: a path that is not a servable model; ValueError: two models with
            one name.
    """
    from medtf.serving.models import load

    names = config.names or (None,) * len(config.models)
    models = [load(p, n, threads=config.threads) for p, n in zip(config.models, names)]
    seen: dict[str, str] = {}
    for p, m in zip(config.models, models):
        if m.name in seen:
            raise ValueError(f"two models are named {m.name!r} ({seen[m.name]} and {p}); set names with --name")
        seen[m.name] = p
    return models


# ----------------------------------------------------------------------------------------------
# the service state
# ----------------------------------------------------------------------------------------------
class Service:
    """What the routes share: models, config, token, pseudonymizer and metrics."""

    def __init__(self, config: ServeConfig, models: Sequence):
        from medtf.io.inputs import site_pseudonymizer
        from medtf.serving.metrics import Metrics

        self.config = config
        self.models = {m.name: m for m in models}
        self.token = read_token(config.token_file) if config.token_file else None
        self.limit = int(config.max_upload_mb * 1024 * 1024)
        self.pz = site_pseudonymizer()
        self.metrics = Metrics()
        for m in models:
            self.metrics.model_info.labels(m.name, str(m.version), m.task, m.kind).set(1)
        self.ready = True

    # ------------------------------------------------------------------ lookups
    def model(self, name: str, version: str | None = None):
        m = self.models.get(name)
        if m is None:
            raise ServeError(404, "unknown_model", f"Servable not found for request: Latest({name})"
                             if version is None else f"Servable not found for request: Specific({name}, {version})")
        if version is not None and str(version) != str(m.version):
            raise ServeError(404, "unknown_model", f"Servable not found for request: Specific({name}, {version})")
        return m

    def labels_of(self, path: str) -> tuple[str, str]:
        """(route template, model label) for metrics and logs."""
        if path in ("/healthz", "/readyz", "/metrics"):
            return path.strip("/"), "-"
        m = _MODEL_PATH.match(path)
        if not m:
            return "other", "-"
        rest = m.group("rest") or ""
        route = {"": "status", "/metadata": "metadata", ":predict": "predict",
                 ":predict_study": "predict_study"}.get(rest, "other")
        name = m.group("name")
        return route, name if name in self.models else "unknown"

    # ------------------------------------------------------------------ helpers
    async def in_thread(self, fn, *args):
        """Run blocking work in a worker thread under the per-request timeout."""
        import anyio

        try:
            with anyio.fail_after(self.config.timeout_s):
                return await anyio.to_thread.run_sync(functools.partial(fn, *args), abandon_on_cancel=True)
        except TimeoutError:
            raise ServeError(504, "timeout", f"the request took longer than {self.config.timeout_s:g} s "
                                             "(--timeout)") from None

    async def body(self, request) -> bytes:
        """The request body, refused with 413 as soon as it passes ``--max-upload-mb``."""
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > self.limit:
                raise ServeError(413, "too_large", f"request body over the limit of {self.config.max_upload_mb:g} MB "
                                                   "(--max-upload-mb)")
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ tensors (TF Serving JSON)
    def read_file(self, model, data: bytes):
        """A ``{"b64": ...}`` file → (raw array, spacing): exactly one image read by ``medtf.io``."""
        from medtf.io.inputs import iter_inputs
        from medtf.serving.engine import scratch_dir
        from medtf.serving.tfserving import RequestError

        with tempfile.TemporaryDirectory(prefix="medtf-serve-", dir=scratch_dir()) as tmp:
            path = pathlib.Path(tmp) / "instance"
            path.write_bytes(data)
            rejected: list = []
            items = list(iter_inputs([str(path)], spatial_dims=model.spatial_dims, voi=model.chain.voi,
                                     pseudonymizer=self.pz, rejected=rejected))
        if not items:
            reason = rejected[0][1] if rejected else "no readable image"
            raise RequestError(f"b64 image: {reason}")
        if len(items) > 1:
            raise RequestError(f"b64 image: the file holds {len(items)} images; send one per instance")
        _, image = items[0]
        arr = np.asarray(image.array, np.float32)
        if arr.ndim - 1 != model.spatial_dims:
            raise RequestError(f"b64 image: a {arr.ndim - 1}D image for a {model.spatial_dims}D model")
        return arr, tuple(float(s) for s in image.spacing)

    def predict_tensors(self, model, body: bytes) -> dict:
        from medtf.serving.tfserving import RequestError, format_response, parse_request

        try:
            sig, batches, rows = parse_request(body, model.signatures(),
                                               read_file=functools.partial(self.read_file, model))
        except RequestError as exc:
            raise ServeError(400, "bad_request", str(exc)) from None
        outs = []
        for batch in batches:
            try:
                outs.append(model.call(sig, batch))
            except (ValueError, KeyError) as exc:
                raise ServeError(400, "bad_request", _first_line(exc)) from None
            except Exception as exc:  # noqa: BLE001 - TF's InvalidArgumentError and friends
                if type(exc).__name__ in ("InvalidArgumentError", "UnimplementedError"):
                    msg = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
                    raise ServeError(400, "bad_request", msg) from None
                raise
        merged = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
        self.metrics.predictions.labels(model.name).inc(len(next(iter(merged.values()))))
        return format_response(merged, rows)

    # ------------------------------------------------------------------ DICOM
    def predict_dicom(self, model, parts: list[bytes], dicom_out: str | None, log: dict):
        """DICOM instances → (JSON document, [DICOM objects] or None)."""
        from medtf.io.inputs import iter_inputs
        from medtf.io.sources import classify
        from medtf.serving import dicom_out as out_mod
        from medtf.serving import engine

        if not parts:
            raise ServeError(400, "bad_request", "no DICOM instance in the request")
        with tempfile.TemporaryDirectory(prefix="medtf-serve-", dir=engine.scratch_dir()) as tmp:
            names = {}
            for i, data in enumerate(parts, 1):
                path = pathlib.Path(tmp) / f"part-{i:04d}"
                path.write_bytes(data)
                names[str(path)] = f"part {i}"
                kind, reason = classify(path)
                if kind != "dicom":
                    what = reason if kind is None else f"a {kind} file"
                    raise ServeError(400, "not_dicom", f"part {i}: not a DICOM instance ({what})")

            rejected: list = []
            results, unfit = [], []
            for unit, image in iter_inputs([tmp], spatial_dims=model.spatial_dims, voi=model.chain.voi,
                                           pseudonymizer=self.pz, rejected=rejected):
                try:
                    results.append(engine.predict_image(model, unit, image))
                except ValueError as exc:
                    unit_name = names.get(unit.paths[0], unit.key) if len(unit.paths) == 1 else unit.key
                    unfit.append(f"{unit_name}: {exc}")
            if rejected:
                where, reason = rejected[0]
                raise ServeError(400, "bad_dicom", f"{names.get(str(where), where)}: {reason}")
            if unfit:
                raise ServeError(422, "unfit", f"does not fit model {model.name!r}: {unfit[0]}")
            if not results:
                raise ServeError(400, "bad_request", "no image in the request")
            rows = [r for res in results for r in engine.public_rows(res, self.pz)]
            log.update(images=len(rows), series=sorted({r.get("series", "") for r in rows}))
            self.metrics.predictions.labels(model.name).inc(len(rows))
            doc = {"model": {"name": model.name, "version": str(model.version)}, "task": model.task,
                   "predictions": rows}
            if not dicom_out:
                return doc, None
            if model.task == "restoration":
                raise ServeError(406, "not_acceptable", f"model {model.name!r} restores images; it has no DICOM-SEG "
                                                       "or SR output (ask for application/json)")
            kind = "seg" if model.task == "segmentation" else "sr"
            try:
                objects = out_mod.build(model, results, kind)
                payloads = [out_mod.to_bytes(o) for o in objects]
            except ValueError as exc:
                from medtf.io.deid import scrub

                raise ServeError(422, "unfit", f"cannot write a DICOM-{kind.upper()} for this input: "
                                               f"{scrub(_first_line(exc))}") from None
            log.update(dicom=kind, objects=len(payloads))
            return doc, payloads

    def predict_study(self, model, study: str, store: bool, log: dict) -> dict:
        from medtf.serving import dicomweb

        try:
            res = dicomweb.predict_study(model, self.config.dicomweb, study, store_results=store, pseudonymizer=self.pz)
        except dicomweb.PacsError as exc:
            raise ServeError(502, "pacs", str(exc)) from None
        except ValueError as exc:
            raise ServeError(422, "unfit", str(exc).splitlines()[0]) from None
        rows = res["rows"]
        objects = [{"modality": str(o.Modality), "series": "series-" + self.pz.token(str(o.SeriesInstanceUID)),
                    "instance": "instance-" + self.pz.token(str(o.SOPInstanceUID))} for o in res["objects"]]
        log.update(images=len(rows), study=res["study"], stored=res["stored"])
        self.metrics.predictions.labels(model.name).inc(len(rows))
        return {"model": {"name": model.name, "version": str(model.version)}, "task": model.task,
                "study": res["study"], "predictions": rows,
                "rejected": [{"input": k, "reason": r} for k, r in res["rejected"]],
                "objects": objects, "stored": res["stored"]}


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _accepts(accept: str | None) -> str | None:
    """None (JSON), "dicom" (a single ``application/dicom`` body) or "multipart" (``multipart/related``).

    Raises:
        ServeError: 406 when the Accept header names nothing the service can produce.
    """
    from medtf.serving.multipart import media_type

    if not accept:
        return None
    for item in accept.split(","):
        mt, params = media_type(item)
        if mt in ("application/json", "*/*", "application/*", ""):
            return None
        if mt == "application/dicom":
            return "dicom"
        if mt == "multipart/related" and params.get("type", "application/dicom").lower() == "application/dicom":
            return "multipart"
    raise ServeError(406, "not_acceptable", "Accept: the service answers application/json, application/dicom or "
                                            'multipart/related; type="application/dicom"')


# ----------------------------------------------------------------------------------------------
# the guard: token, upload size, request id, metrics, logs (pure ASGI, outside the routes)
# ----------------------------------------------------------------------------------------------
class Guard:
    """ASGI middleware: bearer token (constant-time), ``Content-Length`` limit before the body is read,
    request ids, metrics and one structured log line per request."""

    def __init__(self, app, service: Service):
        self.app = app
        self.svc = service

    async def _reject(self, send, status: int, kind: str, message: str, headers=()):
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"x-medtf-error", kind.encode()), *headers]})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _drain(receive, limit: int = 1 << 30, seconds: float = 30.0):
        """Read and drop the rest of a refused upload so the client can read the response."""
        import anyio

        with anyio.move_on_after(seconds):
            n = 0
            while n < limit:
                msg = await receive()
                if msg["type"] != "http.request":
                    return
                n += len(msg.get("body", b""))
                if not msg.get("more_body"):
                    return

    def _authorized(self, headers: dict) -> bool:
        got = headers.get(b"authorization", b"")
        scheme, _, token = got.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(token.strip(), self.svc.token.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        svc = self.svc
        t0 = time.perf_counter()
        route, model = svc.labels_of(scope.get("path", ""))
        state = scope.setdefault("state", {})
        rid = uuid.uuid4().hex[:16]
        state["request_id"] = rid
        state["log"] = {}
        seen = {"status": 500, "kind": None}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                hdrs = list(message.get("headers", []))
                for k, v in hdrs:
                    if k.lower() == b"x-medtf-error":
                        seen["kind"] = v.decode()
                message = {**message, "headers": hdrs + [(b"x-request-id", rid.encode())]}
            await send(message)

        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        svc.metrics.inflight.inc()
        try:
            if svc.token is not None and route not in ("healthz", "readyz") and not self._authorized(headers):
                await self._reject(send_wrapper, 401, "unauthorized", "missing or wrong bearer token",
                                   [(b"www-authenticate", b'Bearer realm="medtf"')])
                return
            length = headers.get(b"content-length")
            if length is not None:
                try:
                    n = int(length)
                except ValueError:
                    n = -1
                if n < 0:
                    await self._reject(send_wrapper, 400, "bad_request", "invalid Content-Length")
                    return
                if n > svc.limit:
                    await self._reject(send_wrapper, 413, "too_large",
                                       f"request body of {n / 2**20:.1f} MB is over the limit of "
                                       f"{svc.config.max_upload_mb:g} MB (--max-upload-mb)")
                    await self._drain(receive)
                    return
            await self.app(scope, receive, send_wrapper)
        finally:
            svc.metrics.inflight.dec()
            dt = time.perf_counter() - t0
            code = seen["status"]
            svc.metrics.requests.labels(model, route, str(code)).inc()
            svc.metrics.latency.labels(model, route).observe(dt)
            kind = seen["kind"] or state.get("error_kind")
            if code >= 400:
                kind = kind or ("not_found" if code == 404 else "method_not_allowed" if code == 405 else
                                "internal" if code >= 500 else "bad_request")
                svc.metrics.errors.labels(kind).inc()
            if route not in ("healthz", "readyz", "metrics") or code >= 400:
                fields = {"request_id": rid, "method": scope.get("method"), "route": route, "model": model,
                          "status": code, "ms": round(dt * 1e3, 2), **state.get("log", {})}
                if code >= 400:
                    fields["error"] = kind
                    if state.get("error_message"):
                        fields["reason"] = state["error_message"]
                logs.event("request", logging.WARNING if code >= 500 else logging.INFO, **fields)


# ----------------------------------------------------------------------------------------------
# the app
# ----------------------------------------------------------------------------------------------
def create_app(config: ServeConfig, models: Sequence | None = None):
    """The FastAPI app for ``config`` (models loaded now unless given).

    Raises:
        FileNotFoundError, ModelError, ValueError: see :func:`load_models` and :func:`read_token`.
    """
    from medtf._optional import require

    require("fastapi", "serving")
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from medtf import __version__
    from medtf.serving import multipart, tfserving

    models = list(models) if models is not None else load_models(config)
    svc = Service(config, models)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        import gc

        # TensorFlow leaves millions of long-lived objects; move them out of the collector's reach so the
        # allocations of request parsing do not trigger full collections over them (pauses of 100+ ms)
        gc.collect()
        gc.freeze()
        svc.ready = True
        logs.event("ready", models={m.name: str(m.version) for m in models}, host=config.host, port=config.port,
                   auth=svc.token is not None, dicomweb=bool(config.dicomweb))
        try:
            yield
        finally:
            svc.ready = False
            logs.event("shutdown")
            for m in models:
                m.close()

    app = FastAPI(title="medtf serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.service = svc

    def error_response(request, status: int, kind: str, message: str):
        request.state.error_kind = kind
        request.state.error_message = message if status < 500 else None
        return JSONResponse({"error": message}, status_code=status, headers={"x-medtf-error": kind})

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError):
        return error_response(request, exc.status, exc.kind, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error_response(request, exc.status_code, kind, str(exc.detail))

    async def guarded(request: Request, coro):
        """Await a handler; unexpected exceptions become a 500 whose log line has no message."""
        try:
            return await coro
        except ServeError:
            raise
        except Exception as exc:  # noqa: BLE001
            logs.event("internal_error", logging.ERROR, request_id=request.state.request_id,
                       exception=type(exc).__name__, where=logs.frames(exc))
            raise ServeError(500, "internal", f"internal error ({type(exc).__name__}); see the server log, "
                                              f"request id {request.state.request_id}") from None

    # -------------------------------------------------------------- operations
    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if not svc.ready:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return {"status": "ready", "models": {m.name: str(m.version) for m in models}}

    @app.get("/metrics")
    async def metrics():
        body, ctype = svc.metrics.exposition()
        return Response(body, media_type=ctype)

    # -------------------------------------------------------------- TF Serving
    async def status(name: str, version: str | None = None):
        m = svc.model(name, version)
        return tfserving.model_status(m.version)

    async def metadata(request: Request, name: str, version: str | None = None):
        m = svc.model(name, version)

        async def run():
            return tfserving.model_metadata(m.name, m.version, await svc.in_thread(m.metadata))

        return await guarded(request, run())

    async def predict(request: Request, name: str, version: str | None = None):
        m = svc.model(name, version)
        log = request.state.log
        log["version"] = str(m.version)

        async def run():
            ctype_header = request.headers.get("content-type")
            ctype, params = multipart.media_type(ctype_header)
            if ctype in ("application/dicom", "multipart/related"):
                want = _accepts(request.headers.get("accept"))
                body = await svc.body(request)
                if ctype == "multipart/related":
                    if params.get("type", "application/dicom").lower() != "application/dicom":
                        raise ServeError(415, "unsupported_media",
                                         'multipart/related must have type="application/dicom"')
                    try:
                        split = multipart.split(body, ctype_header)
                    except multipart.MultipartError as exc:
                        raise ServeError(400, "bad_request", str(exc)) from None
                    for i, (h, _) in enumerate(split, 1):
                        pt = multipart.media_type(h.get("content-type"))[0]
                        if pt not in ("", "application/dicom"):
                            raise ServeError(415, "unsupported_media",
                                             f"part {i}: Content-Type {pt} is not application/dicom")
                    parts = [p for _, p in split]
                else:
                    parts = [body]
                log.update(input="dicom", parts=len(parts))
                doc, payloads = await svc.in_thread(svc.predict_dicom, m, parts, want, log)
                if payloads is None:
                    return JSONResponse(doc)
                if want == "dicom" and len(payloads) == 1:
                    return Response(payloads[0], media_type="application/dicom")
                data, mtype = multipart.build(payloads)
                return Response(data, headers={"content-type": mtype})
            # like TF Serving, any other Content-Type (curl -d sends a form type) is read as JSON
            if _accepts(request.headers.get("accept")) is not None:
                raise ServeError(406, "not_acceptable", "DICOM output needs DICOM input (application/dicom); "
                                                        "tensor requests answer application/json")
            body = await svc.body(request)
            log.update(input="json")
            return JSONResponse(await svc.in_thread(svc.predict_tensors, m, body))

        return await guarded(request, run())

    async def predict_study(request: Request, name: str, version: str | None = None):
        m = svc.model(name, version)
        if not config.dicomweb:
            raise ServeError(404, "not_found", "this server was started without --dicomweb: no PACS to read from")

        async def run():
            try:
                doc = json.loads(await svc.body(request) or b"null")
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ServeError(400, "bad_request",
                                 'JSON Parse error: expected {"study": UID, "store": bool}') from None
            study = doc.get("study") if isinstance(doc, dict) else None
            if not isinstance(study, str) or not _UID.match(study) or len(study) > 64:
                raise ServeError(400, "bad_request", "'study' must be a StudyInstanceUID (digits and dots, at most 64)")
            store = doc.get("store", False)
            if not isinstance(store, bool):
                raise ServeError(400, "bad_request", "'store' must be true or false")
            return JSONResponse(await svc.in_thread(svc.predict_study, m, study, store, request.state.log))

        return await guarded(request, run())

    for prefix in ("/v1/models/{name}", "/v1/models/{name}/versions/{version}"):
        app.add_api_route(prefix, status, methods=["GET"])
        app.add_api_route(prefix + "/metadata", metadata, methods=["GET"])
        app.add_api_route(prefix + ":predict", predict, methods=["POST"])
        app.add_api_route(prefix + ":predict_study", predict_study, methods=["POST"])
    app.add_middleware(Guard, service=svc)
    return app


def app_from_env():
    """uvicorn factory for ``--workers N``: the app of the config in ``$MEDTF_SERVE_CONFIG``."""
    import os

    return create_app(ServeConfig.from_json(os.environ["MEDTF_SERVE_CONFIG"]))
