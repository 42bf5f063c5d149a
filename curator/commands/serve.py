"""``curator serve``: the HTTP service."""
from __future__ import annotations

import os
import sys

from ..errors import CuratorError
from ..formats import Limits
from .flags import add_model_flags, build_model


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP service (POST /curate, transfer-set downloads)",
                       description="Serve POST /curate, search, transfer-set downloads and distillation jobs over "
                                   "HTTP, with API keys, bounded uploads and state that survives restarts.")
    p.add_argument("--index", required=True, help="a folder written by build-index")
    p.add_argument("--data", required=True, help="service state: SQLite, uploads, transfer sets")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    p.add_argument("--api-keys", help="file of name:scopes:secret lines (also: $CURATOR_API_KEYS)")
    p.add_argument("--no-auth", action="store_true", help="accept every caller (local development only)")
    p.add_argument("--public-metrics", action="store_true", help="serve /metrics without an admin key")
    p.add_argument("--public-docs", action="store_true", help="serve the /docs page, and /openapi.json without a key (default: off; the schema then needs a read key)")
    p.add_argument("--keep-sets-days", type=float, default=None,
                   help="remove transfer sets (and their jobs' rows) older than this many days (default: keep them)")
    p.add_argument("--max-data-bytes", default=None,
                   help="keep --data under this size (e.g. 200G): the oldest sets go first, then the thumbnail "
                        "cache (default: no cap)")
    p.add_argument("--job-workers", type=int, default=None, help="curation jobs run at once (default: 2)")
    p.add_argument("--database", default=os.environ.get("CURATOR_DATABASE"),
                   help="state shared by several serve replicas: postgresql://USER:PASSWORD@HOST:PORT/DB; the "
                        "replicas must also share --data (also: $CURATOR_DATABASE, which keeps the password out of "
                        "the process list; default: SQLite in --data)")
    p.add_argument("--replica", default=None,
                   help="this replica's name, which must differ between replicas and stay the same across a "
                        "restart, so it takes back at once the jobs it was running (default: HOST:PORT)")
    p.add_argument("--job-lease-seconds", type=float, default=None,
                   help="a job whose replica stopped renewing its lease for this long is run by another "
                        "(default: 30)")
    p.add_argument("--body-timeout", type=float, default=None,
                   help="seconds a request body may take to arrive; a client that sends less than it promised is "
                        "cut off (default: 30)")
    p.add_argument("--header-timeout", type=float, default=None,
                   help="seconds a request's headers may take to arrive (default: 10)")
    add_model_flags(p, Limits, ("max_files", "max_file_bytes", "max_request_bytes", "max_pixels",
                                "max_request_pixels", "max_budget", "max_k"))
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
    from pathlib import Path

    import uvicorn

    from api import Settings, create_app
    from api.protocol import HeaderTimeoutProtocol
    from api.settings import default_replica

    from ..allocator import release_large_buffers

    check_port(args.host, args.port)
    settings = Settings(index_dir=Path(args.index), data_dir=Path(args.data),
                        api_keys_file=Path(args.api_keys) if args.api_keys else None, no_auth=args.no_auth,
                        public_metrics=args.public_metrics, public_docs=args.public_docs,
                        keep_sets_days=args.keep_sets_days, max_data_bytes=max_data_bytes(args.max_data_bytes),
                        limits=build_model(Limits, args), database=args.database,
                        replica=args.replica or default_replica(args.port),
                        **{k: v for k, v in (("job_workers", args.job_workers), ("body_timeout", args.body_timeout),
                                             ("header_timeout", args.header_timeout),
                                             ("job_lease_seconds", positive(args.job_lease_seconds,
                                                                            "--job-lease-seconds")))
                           if v is not None})
    if args.no_auth:
        print("*" * 72 + "\nWARNING: --no-auth: every caller may curate and download. Local development only.\n"
              + "*" * 72, file=sys.stderr, flush=True)
    release_large_buffers()
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info",
                timeout_keep_alive=settings.keep_alive_timeout,
                http=type("Protocol", (HeaderTimeoutProtocol,), {"header_timeout": settings.header_timeout}))
    return 0


def max_data_bytes(text):
    from ..formats import parse_bytes

    if text is None:
        return None
    try:
        value = parse_bytes(text)
    except CuratorError:
        raise CuratorError(f"--max-data-bytes {text!r}: expected a size such as 500M, 200G or 1T") from None
    if value <= 0:
        raise CuratorError(f"--max-data-bytes {text!r} must be positive")
    return value


def positive(value, flag: str):
    if value is not None and not value > 0:
        raise CuratorError(f"{flag} {value}: must be positive")
    return value
