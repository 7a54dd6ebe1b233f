"""Drop slow clients: a connection must deliver each complete request (headers and body) in time.

uvicorn 0.54 has no such timeout. `timeout_keep_alive` only covers the idle time after a
response, and any byte received cancels it; nothing is armed when a connection opens. So a
client that sends half a request line, half its headers or a body one byte at a time holds a
connection, and a file descriptor, for as long as it likes (uvicorn's `--timeout-request-start`
was proposed in its issue 157 and PR 1685, never merged).

`SlowClientsProtocol` is uvicorn's httptools protocol (what `auto` picks with httptools
installed) with one timer: armed when the connection opens and when a response completes,
that is whenever the server waits on the client; disarmed once a request has fully arrived.
When it fires the connection is closed; a request whose headers arrived but whose body did
not is first answered `408 Request Timeout` (unless its response has started). The
application then sees `http.disconnect`, as for a client that went away.

uvicorn imports the class by name in each worker (`http=HTTP_PROTOCOL`); `configure` sets
the timeout for this process before it serves.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger(__name__)

HTTP_PROTOCOL = "app.process.slow_clients:SlowClientsProtocol"
DEFAULT_TIMEOUT_SECONDS = 30.0
_TIMEOUT_BODY = b"Request Timeout: the request did not arrive in time"


def configure(timeout_seconds: float) -> None:
    """The time every connection of this process has to deliver each complete request."""
    if timeout_seconds <= 0:
        raise ValueError("the request read timeout must be positive")
    SlowClientsProtocol.timeout_seconds = timeout_seconds


class SlowClientsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that closes a connection whose request does not arrive in time.

    The server waits on the client while every request it has fully received is answered
    (`_received <= _answered`; a response may complete before its request's body has
    arrived). The timer runs exactly then, from the moment that wait began.
    """

    timeout_seconds: ClassVar[float] = DEFAULT_TIMEOUT_SECONDS

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._deadline: asyncio.TimerHandle | None = None
        self._received = 0  # requests whose last byte arrived
        self._answered = 0  # responses completed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_complete(self) -> None:
        self._received += 1
        if self._received > self._answered:  # a whole request to answer: the server's turn
            self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._answered += 1
        super().on_response_complete()
        if self._received <= self._answered and self._deadline is None:
            self._arm()

    def handle_websocket_upgrade(self) -> None:
        # The connection leaves this protocol (and its `connection_lost`) for good.
        self._disarm()
        super().handle_websocket_upgrade()

    def _arm(self) -> None:
        if not self.transport.is_closing():
            # Armed from inside a request's task: without a context of its own, its log
            # line would carry that earlier request's ID.
            self._deadline = self.loop.call_later(
                self.timeout_seconds, self._expired, context=contextvars.Context()
            )

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        # A request whose headers arrived (it has a cycle that is still receiving) gets an
        # answer; a request line or headers cut short get none, as there is no request yet.
        awaiting_body = cycle is not None and cycle.more_body and not cycle.response_complete
        if awaiting_body and not cycle.response_started and not cycle.disconnected:
            self.transport.write(self._timeout_response())
        if cycle is not None and not cycle.response_complete:
            # What connection_lost would do, now: the application's receive() answers
            # http.disconnect and whatever it still sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        client = "{}:{}".format(*self.client) if self.client else "a client"
        log.info(
            "closed the connection of %s: no complete request within %g s",
            client,
            self.timeout_seconds,
        )
        self.transport.close()

    def _timeout_response(self) -> bytes:
        content = [STATUS_LINE[408]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: %d\r\n" % len(_TIMEOUT_BODY),
                b"connection: close\r\n",
                b"\r\n",
                _TIMEOUT_BODY,
            ]
        )
        return b"".join(content)
