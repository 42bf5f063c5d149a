"""``curator serve``: the HTTP service."""
from __future__ import annotations

import os
import sys

from ..errors import CuratorError
from ..formats import Limits, ServiceSettings
from ..formats.service import default_replica
from .flags import add_model_flags, build_model

#: The settings a user sets on the command line (the others are the service's own tuning).
SERVE_FLAGS = ("index_dir", "data_dir", "api_keys_file", "no_auth", "public_metrics", "public_docs", "keep_sets_days",
               "max_data_bytes", "job_workers", "database", "replica", "job_lease_seconds", "body_timeout",
               "header_timeout", "signed_url_seconds")
RENAME = {"index_dir": "--index", "data_dir": "--data", "api_keys_file": "--api-keys"}
LIMIT_FLAGS = ("max_files", "max_file_bytes", "max_request_bytes", "max_pixels", "max_request_pixels", "max_budget",
               "max_k")


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP service (POST /curate, transfer-set downloads)",
                       description="Serve POST /curate, search, transfer-set downloads and distillation jobs over "
                                   "HTTP, with API keys, bounded uploads and state that survives restarts.")
    add_model_flags(p, ServiceSettings, SERVE_FLAGS, required=("index_dir", "data_dir"), rename=RENAME)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    add_model_flags(p, Limits, LIMIT_FLAGS)
    p.set_defaults(run=run)


def check_port(host: str, port: int) -> None:
    """Fail before start-up when the address is taken (uvicorn would report it after "startup complete")."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise CuratorError(f"cannot listen on {host}:{port} (--host/--port): {exc.strerror}") from None


def run(args) -> int:
    import uvicorn

    from api import create_app
    from api.protocol import HeaderTimeoutProtocol

    from ..allocator import release_large_buffers

    settings = build_model(ServiceSettings, args, rename=RENAME, limits=build_model(Limits, args),
                           database=args.database or os.environ.get("CURATOR_DATABASE"),
                           replica=args.replica or default_replica(args.port))
    check_port(args.host, args.port)
    app = create_app(settings)  # a missing index or bad keys are one line, before the warning below
    if settings.no_auth:
        print("*" * 72 + "\nWARNING: --no-auth: every caller may curate and download. Local development only.\n"
              + "*" * 72, file=sys.stderr, flush=True)
    release_large_buffers()
    uvicorn.run(app, host=args.host, port=args.port, log_level="info",
                timeout_keep_alive=settings.keep_alive_timeout,
                http=type("Protocol", (HeaderTimeoutProtocol,), {"header_timeout": settings.header_timeout,
                                                                 "max_header_bytes": settings.max_header_bytes}))
    return 0
