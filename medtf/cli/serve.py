"""``medtf serve RUN_OR_EXPORT... [--name N]... [--host H] [--port P] [--token-file F] [--max-upload-mb N]
[--timeout S] [--workers N] [--dicomweb URL]``."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve models over HTTP: TF Serving's REST API, DICOM in, DICOM-SEG / SR out, DICOMweb round trip",
        description=(
            "Serve one or more models (run folders, SavedModel folders or .tflite files) with FastAPI + uvicorn: "
            "TF Serving's REST API (/v1/models/NAME[:predict|/metadata]), DICOM in (application/dicom or "
            "multipart/related; type=\"application/dicom\") with JSON or DICOM-SEG / SR out, /healthz, /readyz, "
            "/metrics. See docs/serve.md. Exit codes: 0 stopped cleanly, 2 usage (bad model, token file, option), "
            "3 failed (e.g. the port is taken)."
        ),
    )
    p.add_argument("models", nargs="+", metavar="RUN_OR_EXPORT",
                   help="run folder (serves its export/savedmodel, else its .tflite), SavedModel base or version "
                        "folder, or .tflite file")
    p.add_argument("--name", action="append", default=[], help="model name, once per model (default: the run / "
                                                                   "base folder name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501, TF Serving's REST port)")
    p.add_argument("--token-file", default=None, help="file holding a bearer token every request must carry")
    p.add_argument("--max-upload-mb", type=float, default=256.0, help="largest request body (default 256)")
    p.add_argument("--timeout", type=float, default=120.0, help="per-request limit in seconds (default 120)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument("--dicomweb", default=None, metavar="URL",
                   help="DICOMweb root of a PACS (e.g. http://127.0.0.1:8042/dicom-web) for :predict_study")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads for .tflite models (default 2)")
    p.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medtf.cli.main import EXIT_FAILED, EXIT_OK, EXIT_USAGE

    try:
        from medtf.serving.app import ServeConfig, read_token

        config = ServeConfig(models=tuple(args.models), names=tuple(args.name), host=args.host, port=args.port,
                             token_file=args.token_file, max_upload_mb=args.max_upload_mb, timeout_s=args.timeout,
                             workers=args.workers, dicomweb=args.dicomweb, threads=args.threads,
                             log_level=args.log_level)
        if config.token_file:
            read_token(config.token_file)
    except (FileNotFoundError, ValueError) as exc:
        print(f"medtf serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:
        print(f"medtf serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        from medtf.serving.models import ModelError, resolve

        for path in config.models:
            resolve(path)
        models = None
        if config.workers == 1:
            from medtf.serving.app import load_models

            models = load_models(config)
    except (FileNotFoundError, ModelError, ValueError) as exc:
        print(f"medtf serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001
        print(f"medtf serve: loading the models failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        from medtf.serving.server import serve

        return serve(config, models) or EXIT_OK
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        if exc.code in (0, None):
            return EXIT_OK
        print(f"medtf serve: the server stopped with an error (see the log above; is port {config.port} taken?)",
              file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001
        print(f"medtf serve: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
