"""An HTTP protocol for uvicorn that bounds a request's headers, in time and in bytes, as they arrive.

uvicorn times out idle keep-alive connections, but not a client that dribbles its headers (or sends
nothing at all after connecting): twenty such connections were all still open after a minute. This
protocol starts a timer when a connection opens and when each request begins, and closes the
connection if the headers are not complete when it fires.

The header cap of ``BoundedRequests`` applies once the headers are complete: a header value hundreds of
megabytes long was parsed and buffered first (12.8 s for everyone's /healthz, 150 MB a connection).
Here the bytes are counted as they arrive, and past the cap the request is answered 431 and closed.
"""
from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REFUSAL = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
           b"connection: close\r\ncontent-length: %d\r\n\r\n%s")


class HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout = 10.0        # seconds; ``curator serve --header-timeout`` makes a subclass with its own
    max_header_bytes = 16 << 10  # and with the service's --max-header-bytes

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._header_bytes, self._in_headers = 0, True
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes, self._in_headers = 0, True
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def _refuse_headers(self) -> None:
        """431 and close, with whatever was buffered of the headers dropped with the connection."""
        self._disarm()
        body = b'{"detail": "request headers exceed %d bytes"}' % self.max_header_bytes
        self.transport.write(REFUSAL % (len(body), body))
        self.transport.close()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
