"""Prometheus metrics of the service (prometheus-client).

=========================================== ====================================================
``medtf_serve_requests_total``              requests by ``model``, ``route``, ``code``
``medtf_serve_request_duration_seconds``    latency histogram by ``model``, ``route``
``medtf_serve_errors_total``                failures by ``kind`` (``not_dicom``, ``bad_dicom``, ``unfit``,
                                            ``unknown_model``, ``unauthorized``, ``too_large``, ``timeout``,
                                            ``bad_request``, ``unsupported_media``, ``not_acceptable``,
                                            ``pacs``, ``internal``, ...)
``medtf_serve_predictions_total``           images / slices predicted by ``model``
``medtf_serve_requests_in_flight``          requests being handled
``medtf_serve_model_info``                  1 per served model (``model``, ``version``, ``task``, ``kind``)
=========================================== ====================================================

Labels hold model names and route templates only — an unknown model name in a URL counts as
``model="unknown"`` — so no request value reaches a label. With ``--workers N`` the workers share
``PROMETHEUS_MULTIPROC_DIR`` (set by ``medtf serve``) and ``/metrics`` aggregates them.
"""

from __future__ import annotations

import os

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The service's metric objects, in a registry of their own (several apps can live in one process)."""

    def __init__(self):
        from medtf._optional import require

        require("prometheus_client", "serving")
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        reg = None if self.multiprocess else CollectorRegistry()
        self.registry = reg
        self.requests = Counter("medtf_serve_requests", "HTTP requests", ["model", "route", "code"], registry=reg)
        self.latency = Histogram("medtf_serve_request_duration_seconds", "Request latency", ["model", "route"],
                                 buckets=BUCKETS, registry=reg)
        self.errors = Counter("medtf_serve_errors", "Failed requests by kind", ["kind"], registry=reg)
        self.predictions = Counter("medtf_serve_predictions", "Images (or slices) predicted", ["model"], registry=reg)
        self.inflight = Gauge("medtf_serve_requests_in_flight", "Requests being handled", registry=reg,
                              multiprocess_mode="livesum")
        self.model_info = Gauge("medtf_serve_model_info", "Served models", ["model", "version", "task", "kind"],
                                registry=reg, multiprocess_mode="max")

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of ``/metrics``."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
