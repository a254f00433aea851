"""Structured logs for the service: one JSON object per line on stderr, no patient identifier.

Every record is ``{"ts", "level", "logger", "event", ...fields}``. Request records carry the route template,
the model, the status, the latency and pseudonymous series keys (``series-<token>``) — never a raw path
with UIDs, a header value or a request body. Exceptions are logged as their type and the code locations
of the traceback, without the message (library messages may quote header values).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import traceback

LOGGER = "medtf.serve"


def frames(exc: BaseException, limit: int = 6) -> list[str]:
    """``["file.py:123 in func", ...]`` of an exception's traceback (innermost last), without messages."""
    tb = traceback.extract_tb(exc.__traceback__)[-limit:]
    return [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in tb]


class JsonFormatter(logging.Formatter):
    """``logging.Formatter`` writing one JSON object per record (``extra={"fields": {...}}`` adds keys)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc["exception"] = type(exc).__name__
            doc["where"] = frames(exc)
        return json.dumps(doc, default=str, ensure_ascii=False)


def log_config(level: str = "info") -> dict:
    """``logging.config.dictConfig`` for uvicorn and medtf: JSON lines on stderr, uvicorn's access log off
    (the service logs each request itself, without the raw path)."""
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            LOGGER: {"handlers": ["stderr"], "level": lvl, "propagate": False},
        },
    }


def logger() -> logging.Logger:
    return logging.getLogger(LOGGER)


def event(name: str, level: int = logging.INFO, **fields) -> None:
    """Log one structured event."""
    logger().log(level, name, extra={"fields": fields})
