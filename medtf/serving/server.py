"""Run the service with uvicorn: ``serve(config)`` (what ``medtf serve`` calls).

One worker: the app is built here (models loaded, then uvicorn binds). ``workers > 1``: uvicorn starts
worker processes that each build the app from ``$MEDTF_SERVE_CONFIG`` (:func:`medtf.serving.app.app_from_env`);
their Prometheus metrics share a ``PROMETHEUS_MULTIPROC_DIR`` that lives as long as the server.

Shutdown is graceful: on SIGTERM / SIGINT uvicorn stops accepting connections, lets requests in flight
finish (up to ``graceful_s``), marks ``/readyz`` not ready and logs ``shutdown``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import shutil
import tempfile

from medtf.serving import logs


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def _signals_end_cleanly():
    """uvicorn re-raises SIGTERM / SIGINT through the handlers it found once its graceful shutdown is done;
    with no-op handlers installed here the process returns normally (exit 0) instead of dying by the signal."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(config, models=None, *, graceful_s: float = 30.0) -> int:
    """Serve until interrupted; returns 0 after a graceful shutdown.

    Args:
        config: a :class:`~medtf.serving.app.ServeConfig`.
        models: already loaded models (one worker only); default: loaded from ``config``.
        graceful_s: how long requests in flight may take to finish at shutdown.

    Raises:
        FileNotFoundError, ModelError, ValueError: bad models or token file (before anything listens).
    """
    import logging
    import logging.config

    from medtf._optional import require

    require("uvicorn", "serving")
    import uvicorn

    from medtf.serving.app import create_app

    logging.config.dictConfig(logs.log_config(config.log_level))
    if config.token_file is None and not is_loopback(config.host):
        logs.event("warning", logging.WARNING,
                   message=f"serving on {config.host} beyond loopback without --token-file: anyone who can reach "
                           "the port can run the models")
    common = dict(host=config.host, port=int(config.port), log_config=logs.log_config(config.log_level),
                  access_log=False, timeout_graceful_shutdown=int(graceful_s), server_header=False)
    if int(config.workers) == 1:
        app = create_app(config, models)
        with _signals_end_cleanly():
            uvicorn.run(app, **common)
        return 0
    metrics_dir = tempfile.mkdtemp(prefix="medtf-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ["MEDTF_SERVE_CONFIG"] = config.to_json()
    try:
        uvicorn.run("medtf.serving.app:app_from_env", factory=True, workers=int(config.workers), **common)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
