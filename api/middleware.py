"""Request bounds and request metrics.

:class:`BoundedRequests` is plain ASGI, so it sees the body as it is read: it counts the bytes that
actually arrive (whatever Content-Length or Transfer-Encoding claim), reads them against a deadline
(a client that promises more than it sends is cut off), and caps the headers' count and size.
"""
from __future__ import annotations

import asyncio
import json
import time

from fastapi import FastAPI, HTTPException, Request

from .metrics import Metrics
from .settings import Settings


#: The slowest a body may arrive, bytes a second, beyond the first --body-timeout seconds.
MIN_BODY_RATE = 32 << 10


#: On every answer: never framed by another site (clickjacking), never sniffed into another type, and no
#: URL (a signed one carries its signature) sent on as a referrer.
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
#: The web UI loads nothing but its own files; images it shows are blobs it fetched with the key.
UI_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
             "img-src 'self' blob: data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
             "form-action 'self'; object-src 'none'")


class BoundedRequests:
    def __init__(self, app, *, max_body: int, max_headers: int, max_header_bytes: int, body_timeout: float):
        self.app, self.max_body, self.body_timeout = app, max_body, body_timeout
        self.max_headers, self.max_header_bytes = max_headers, max_header_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refuse(scope)
        if refusal:
            return await _reply(send, *refusal)
        received, complete, started = 0, False, time.monotonic()

        async def bounded():
            nonlocal received, complete
            if complete:  # the body is in: later reads wait for a disconnect, unbounded
                return await receive()
            # each read within --body-timeout, and the whole body by a deadline that grows only with what
            # arrived (MIN_BODY_RATE): a byte every few seconds keeps no connection open for long
            left = started + self.body_timeout + received / MIN_BODY_RATE - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, min(self.body_timeout, left)))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.body_timeout:.0f} s "
                                         f"(--body-timeout), or arrived slower than {MIN_BODY_RATE >> 10} KB/s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_body:
                    raise HTTPException(413, f"request body exceeds {self.max_body} bytes (--max-request-bytes)")
            return message
        await self.app(scope, bounded, send)

    def refuse(self, scope) -> tuple[int, str] | None:
        headers = scope["headers"]
        if len(headers) > self.max_headers or sum(len(k) + len(v) for k, v in headers) > self.max_header_bytes:
            return 431, f"request headers exceed {self.max_headers} headers or {self.max_header_bytes} bytes"
        named = {k.lower(): v for k, v in headers}
        length = named.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413, f"request body exceeds {self.max_body} bytes (--max-request-bytes)"
        if length is None and b"transfer-encoding" in named and scope["method"] in ("POST", "PUT", "PATCH"):
            return 411, "send Content-Length: bodies without one (chunked or otherwise encoded) are not accepted"
        return None


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def install(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    app.add_middleware(BoundedRequests, max_body=settings.limits.max_request_bytes,
                       max_headers=settings.max_headers, max_header_bytes=settings.max_header_bytes,
                       body_timeout=settings.body_timeout)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path == "/" or request.url.path.startswith("/ui/"):
            response.headers["Content-Security-Policy"] = UI_POLICY
        route = request.scope.get("route")
        metrics.observe(request.method, getattr(route, "path", "unmatched"), response.status_code,
                        time.perf_counter() - t0)
        return response
