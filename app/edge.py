"""The layer every HTTP request crosses first, in place of a stack of middleware.

Per request: the request ID (a sane incoming `X-Request-ID`, else a new one, returned on
every response), its context variable for logs, CORS, the metrics, the access log line, and
a plain 500 that still carries the request ID when something unexpected escapes. Then an
exact-path table sends `/graphql`, nearly all traffic, straight to its endpoint; every other
path goes to the Starlette app and its router.

Why not Starlette's middleware: its error and exception layers, the router's regex matching
and one wrapper per middleware cost ~17 µs a request, more than a cached `plans` answer
itself. CORS stays Starlette's `CORSMiddleware`, applied to the requests it concerns: those
that carry an `Origin`. The others get the `Vary: Origin` it would have added.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Mapping, Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.log_context import request_id_var
from services.metrics import Metrics

log = logging.getLogger(__name__)
access = logging.getLogger("app.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_VARY_ORIGIN = (b"vary", b"Origin")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for it, in the access log and metrics


class Edge:
    """`app` (the Starlette app: lifespan, router) behind the per-request edge.

    `routes` are exact paths answered without the router; the GraphQL endpoint adds
    `operation` and `outcome` to the request's state for the metrics and the access log.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[str, ASGIApp],
        metrics: Metrics,
        access_log: bool,
        cors_origins: Sequence[str],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self._routes = dict(routes)
        self.requests_seen = 0  # for `app.process.memory.trim_when_idle`; also the IDs' tail
        # Request IDs: this process's random prefix and a count, unique across processes and
        # restarts without a system call per request.
        self._id_prefix = secrets.token_hex(8)
        self._cors = CORSMiddleware(
            self._dispatch,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Content-Disposition"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        self.requests_seen += 1
        incoming = origin = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"origin":
                origin = value
        if incoming is not None and _REQUEST_ID.match(incoming):
            request_id = incoming
        else:
            request_id = f"{self._id_prefix}{self.requests_seen:016x}"
        # A copy per request: servers may hand every request the same lifespan state dict.
        state = {**scope.get("state", {}), "request_id": request_id}
        scope["state"] = state
        token = request_id_var.set(request_id)
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        extra = (id_header,) if origin is not None else (id_header, _VARY_ORIGIN)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            if origin is not None:
                await self._cors(scope, receive, send_with_id)
            else:
                await self._dispatch(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client went away, or was dropped as too slow (app.process.slow_clients),
            # before its request had arrived: no one to answer, and nothing went wrong here.
            status = status or CLIENT_CLOSED_REQUEST
        except Exception:
            if status:
                raise  # the response is on its way; the server closes the connection
            # Re-raised, as Starlette's ServerErrorMiddleware does, so the server logs it.
            await PlainTextResponse("Internal Server Error", 500)(scope, receive, send_with_id)
            raise
        finally:
            elapsed = time.perf_counter() - started
            path = scope["path"]
            outcome = state.get("outcome") or str(status or 500)
            route = path if path in METRIC_ROUTES else "other"
            self.metrics.observe_request(route, state.get("operation", ""), outcome, elapsed)
            if self.access_log:
                access.info(
                    "%s %s %d",
                    scope["method"],
                    path,
                    status or 500,
                    extra={"status": status or 500, "duration_ms": round(elapsed * 1000, 2)},
                )
            request_id_var.reset(token)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"])
        await (route or self.app)(scope, receive, send)


# Paths with their own metric label; anything else (404s, assets) is "other", so a client
# cannot mint labels.
METRIC_ROUTES = frozenset(
    {"/graphql", "/webhooks/stripe", "/account/export", "/healthz", "/readyz", "/metrics"}
)
