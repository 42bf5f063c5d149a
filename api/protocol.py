"""An HTTP protocol for uvicorn that bounds how long a request's headers may take.

uvicorn times out idle keep-alive connections, but not a client that dribbles its headers (or sends
nothing at all after connecting): twenty such connections were all still open after a minute. This
protocol starts a timer when a connection opens and when each request begins, and closes the
connection if the headers are not complete when it fires.
"""
from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

class HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout = 10.0   # seconds; ``curator serve --header-timeout`` makes a subclass with its own

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

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
