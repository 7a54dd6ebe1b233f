"""A fake Stripe HTTP API for tests: a real HTTP peer for the real ``stripe`` SDK.

``FakeStripe`` is a Starlette app served on 127.0.0.1 by :class:`LoopbackServer`; point a
``stripe.StripeClient`` at it with ``base_addresses={"api": fake.url}`` and the SDK's own
encoding, retries, idempotency keys and error mapping all run for real::

    with FakeStripe() as fake:
        http = stripe.HTTPXClient()
        client = stripe.StripeClient(
            "sk_test_fake", base_addresses={"api": fake.url}, http_client=http,
            max_network_retries=2,
        )
        customer = await client.v1.customers.create_async({"email": "a@example.com"})
        await http.close_async()

State is in memory and guarded by one lock: the server runs in its own thread while the
test thread seeds data, injects faults and inspects recorded requests.

Behaviour reproduced from Stripe (API version pinned by the installed SDK):

* Bearer (or Basic) auth with ``sk_test_``/``rk_test_`` keys, else 401 like Stripe.
* Error bodies ``{"error": {code, doc_url, message, param, request_log_url, type}}``,
  ``Request-Id``/``Stripe-Version`` headers on every response, ``Stripe-Should-Retry`` on
  errors (``true`` for 429/409/5xx, ``false`` for other 4xx).
* Idempotency keys on POST/DELETE: same key + same request replays the stored response
  (``Idempotent-Replayed: true``); same key + different parameters or endpoint is a 400
  ``idempotency_error``. Only successful results are stored: validation errors and 5xx are
  not (Stripe only saves a result once the endpoint began executing), so a retry after an
  injected 500 executes.
* Unknown top-level parameters are rejected (``parameter_unknown``) using the parameter
  names of the installed SDK's ``stripe.params`` TypedDicts.
* Fault injection (:meth:`FakeStripe.fail_next`, or ``failure_rate`` for a random share of
  API calls failing with 500 ``api_error`` and ``Stripe-Should-Retry: true``), latency, and
  ``down``:
  ``down_mode="disconnect"`` (default) sends response headers then closes the connection, so
  httpx fails reading the body and the SDK raises ``stripe.APIConnectionError`` after its
  retries; ``down_mode="unavailable"`` answers 503 ``api_error`` so the SDK raises
  ``stripe.APIError`` after its retries.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import hmac
import html
import json
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl

import stripe
import stripe.params
import stripe.params.billing_portal
import stripe.params.checkout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from tests.fakes import stripe_objects as so
from tests.fakes.loopback import LoopbackServer
from tests.fakes.stripe_objects import API_VERSION, JSONDict

__all__ = [
    "API_VERSION",
    "FakeStripe",
    "RecordedRequest",
    "parse_form",
    "sign",
    "signed_webhook",
]

DownMode = Literal["disconnect", "unavailable"]


# --- webhooks --------------------------------------------------------------------------


def sign(
    payload: bytes | str,
    secret: str,
    timestamp: int | None = None,
    extra_secrets: Sequence[str] = (),
) -> str:
    """A ``Stripe-Signature`` header value for ``payload``: ``t=<unix>,v1=<hex>[,v1=…]``.

    ``v1`` is the hex HMAC-SHA256 of ``f"{t}.{payload}"`` keyed with the ``whsec_`` secret,
    exactly as Stripe signs webhooks; ``extra_secrets`` add more ``v1`` entries (as during
    a secret roll).
    """
    ts = int(time.time()) if timestamp is None else timestamp
    body = payload if isinstance(payload, bytes) else payload.encode("utf-8")
    signed = f"{ts}.".encode() + body
    signatures = [
        hmac.new(key.encode("utf-8"), signed, hashlib.sha256).hexdigest()
        for key in (secret, *extra_secrets)
    ]
    return ",".join([f"t={ts}", *(f"v1={sig}" for sig in signatures)])


def signed_webhook(
    event: JSONDict, secret: str, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers Stripe would POST to a webhook endpoint for ``event``."""
    payload = json.dumps(event, indent=2).encode("utf-8")
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        "Stripe-Signature": sign(payload, secret, timestamp),
    }
    return payload, headers


def _presented_key(authorization: str) -> str:
    """The API key in an ``Authorization`` header (Bearer, or Basic with the key as user)."""
    if authorization.startswith("Bearer "):
        return authorization[len("Bearer ") :].strip()
    if authorization.startswith("Basic "):
        try:
            return base64.b64decode(authorization[len("Basic ") :]).decode().split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return ""


# --- form decoding ---------------------------------------------------------------------

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT_RE = re.compile(r"\[([^\[\]]*)\]")


def parse_form(pairs: Iterable[tuple[str, str]]) -> JSONDict:
    """Decode Stripe-style form pairs (``a[b][0][c]=v``, ``expand[]=x``) into nested data.

    Dicts whose keys are all integers become lists (ordered by index), as Stripe reads them.
    Values stay strings; endpoints coerce them.
    """
    root: JSONDict = {}
    for key, value in pairs:
        match = _KEY_RE.match(key)
        parts = [match.group(1), *_SEGMENT_RE.findall(match.group(2))] if match else [key]
        node = root
        for i, part in enumerate(parts):
            name = str(len(node)) if part == "" else part
            if i == len(parts) - 1:
                node[name] = value
            else:
                child = node.get(name)
                if not isinstance(child, dict):
                    child = {}
                    node[name] = child
                node = child
    result = _listify(root)
    assert isinstance(result, dict)
    return result


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v) for k, v in value.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


# --- recording & errors ----------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received (API calls, hosted pages, and requests while down)."""

    method: str
    path: str
    params: JSONDict
    idempotency_key: str | None
    stripe_version: str | None
    status: int
    """HTTP status answered; 0 when the connection was dropped (``down_mode="disconnect"``)."""
    replayed: bool = False
    request_id: str | None = None
    api_key: str | None = None
    """The API key the request presented (tells apart several clients of one fake)."""


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        should_retry: bool | None = None,
        log_url: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.code = code
        self.param = param
        self.should_retry = (
            should_retry if should_retry is not None else status in (409, 429) or status >= 500
        )
        self.log_url = log_url

    def body(self, request_id: str) -> JSONDict:
        return so.error_body(
            type=self.type,
            message=self.message,
            code=self.code,
            param=self.param,
            request_id=request_id if self.log_url else None,
        )


def _invalid(message: str, *, code: str | None = None, param: str | None = None) -> _ApiError:
    return _ApiError(400, "invalid_request_error", message, code=code, param=param)


def _no_such(kind: str, obj_id: str, *, param: str = "id", status: int = 404) -> _ApiError:
    return _ApiError(
        status,
        "invalid_request_error",
        f"No such {kind}: '{obj_id}'",
        code="resource_missing",
        param=param,
    )


def _missing_param(param: str) -> _ApiError:
    return _invalid(f"Missing required param: {param}.", code="parameter_missing", param=param)


def _fault_error(status: int, code: str | None) -> _ApiError:
    if status == 429:
        return _ApiError(
            429,
            "invalid_request_error",
            "Request rate limit exceeded. You can learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            code=code or "rate_limit",
        )
    if status >= 500:
        return _ApiError(
            status,
            "api_error",
            "Sorry, something went wrong. We've already been notified of the problem, but "
            "please contact support@stripe.com with any questions you may have.",
            code=code,
        )
    if status == 409:
        return _ApiError(
            409,
            "invalid_request_error",
            "This object cannot be accessed right now because another API request or Stripe "
            "process is currently accessing it. If you see this error intermittently, retry "
            "the request.",
            code=code or "lock_timeout",
        )
    if status == 402:
        return _ApiError(402, "card_error", "Your card was declined.", code=code or "card_declined")
    if status == 401:
        return _ApiError(
            401, "invalid_request_error", "Invalid API Key provided.", code=code, log_url=False
        )
    if status == 404:
        return _ApiError(
            404, "invalid_request_error", "No such object.", code=code or "resource_missing"
        )
    return _ApiError(status, "invalid_request_error", "Injected failure from the fake.", code=code)


# --- parameter coercion ----------------------------------------------------------------


def _str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"Invalid string: {json.dumps(value)}", param=param)
    return value


def _opt_str(value: Any, param: str) -> str | None:
    """A nullable string field: Stripe unsets it when sent an empty string."""
    return _str(value, param) or None


def _int(value: Any, param: str) -> int:
    try:
        return int(_str(value, param))
    except ValueError:
        raise _invalid(
            f"Invalid integer: {value}", code="parameter_invalid_integer", param=param
        ) from None


def _bool(value: Any, param: str) -> bool:
    if value in ("true", "false"):
        return bool(value == "true")
    raise _invalid(f"Invalid boolean: {value}", param=param)


def _dict(value: Any, param: str) -> JSONDict:
    if not isinstance(value, dict):
        raise _invalid("Invalid object", param=param)
    return value


def _list(value: Any, param: str) -> list[Any]:
    if value == "":
        return []
    if not isinstance(value, list):
        raise _invalid("Invalid array", param=param)
    return value


def _str_list(value: Any, param: str) -> list[str]:
    return [_str(v, f"{param}[{i}]") for i, v in enumerate(_list(value, param))]


def _merge_metadata(target: dict[str, str], value: Any, param: str = "metadata") -> None:
    """Stripe's metadata update: merge key-wise, ``""`` deletes a key, ``metadata=""`` clears."""
    if value == "":
        target.clear()
        return
    for key, item in _dict(value, param).items():
        text = _str(item, f"{param}[{key}]")
        if text == "":
            target.pop(key, None)
        else:
            target[key] = text


def _param_names(params_type: Any) -> frozenset[str]:
    keys: frozenset[str] = params_type.__required_keys__ | params_type.__optional_keys__
    options: frozenset[str] = (
        stripe.RequestOptions.__required_keys__ | stripe.RequestOptions.__optional_keys__
    )
    return frozenset(keys - options)


def _address(value: Any, param: str) -> JSONDict | None:
    if value == "":
        return None
    fields = ("city", "country", "line1", "line2", "postal_code", "state")
    given = _dict(value, param)
    for key in given:
        if key not in fields:
            raise _invalid(
                f"Received unknown parameter: {param}[{key}]",
                code="parameter_unknown",
                param=f"{param}[{key}]",
            )
    return {f: _opt_str(given.get(f, ""), f"{param}[{f}]") for f in fields}


_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class _Call:
    method: str
    path: str
    ids: dict[str, str]
    params: JSONDict
    base_url: str

    def expand(self) -> list[str]:
        return _str_list(self.params.get("expand", []), "expand")


Handler = Callable[[_Call], JSONDict]


@dataclass(frozen=True)
class _ApiRoute:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    params: frozenset[str]


@dataclass
class _Fault:
    remaining: int
    status: int
    code: str | None
    path: str | None
    method: str | None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and (
            self.path is None or path.startswith(self.path)
        )


@dataclass(frozen=True)
class _StoredResponse:
    method: str
    path: str
    params: JSONDict
    status: int
    body: JSONDict
    request_id: str


_SUBSCRIPTION_STATUSES = frozenset(
    {
        "active",
        "canceled",
        "incomplete",
        "incomplete_expired",
        "past_due",
        "paused",
        "trialing",
        "unpaid",
    }
)
_KEY_FORMAT = re.compile(r"^(sk|rk)_test_[A-Za-z0-9_]+$")


class _Asgi:
    """ASGI 3 callable around a coroutine function (uvicorn takes bound methods for ASGI 2)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class FakeStripe:
    """In-memory fake of the Stripe API surface the billing API uses. See module docstring."""

    def __init__(self, *, api_keys: Collection[str] | None = None) -> None:
        self._lock = threading.RLock()
        self._accepted_keys = frozenset(api_keys) if api_keys is not None else None
        self._server: LoopbackServer | None = None
        self.url = ""
        self.latency: float = 0.0
        """Seconds to wait (``asyncio.sleep``) before answering each request."""
        self.down = False
        """When true every request fails, as selected by ``down_mode``."""
        self.down_mode: DownMode = "disconnect"
        self.failure_rate: float = 0.0
        """Share (0 to 1) of API calls answered 500 ``api_error`` at random, before executing."""
        self._random = random.Random()
        self._reset_state()
        self._routes = self._build_routes()
        self.app = Starlette(
            routes=[
                Route("/c/pay/{session_id}", self._checkout_page, methods=["GET"]),
                Route(
                    "/c/pay/{session_id}/complete", self._checkout_page_complete, methods=["POST"]
                ),
                Route("/p/session/{session_id}", self._portal_page, methods=["GET"]),
                Route(
                    "/{path:path}",
                    self._api,
                    methods=["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"],
                ),
            ]
        )

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeStripe:
        if self._server is None:
            self._server = LoopbackServer(_Asgi(self._asgi)).start()
            self.url = self._server.url
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget all objects, recorded requests, idempotency keys and faults; ``up`` again."""
        with self._lock:
            self._reset_state()
        self.latency = 0.0
        self.down = False
        self.down_mode = "disconnect"
        self.failure_rate = 0.0

    def seed(self, value: int) -> None:
        """Make ``failure_rate``'s choices reproducible."""
        with self._lock:
            self._random.seed(value)

    def _reset_state(self) -> None:
        self._seq_counter = 0
        self._seq: dict[str, int] = {}
        self._customers: dict[str, JSONDict] = {}
        self._deleted_customers: set[str] = set()
        self._products: dict[str, JSONDict] = {}
        self._prices: dict[str, JSONDict] = {}
        self._subscriptions: dict[str, JSONDict] = {}
        self._checkout_sessions: dict[str, JSONDict] = {}
        self._checkout_lines: dict[str, list[JSONDict]] = {}
        self._checkout_sub_data: dict[str, JSONDict] = {}
        self._portal_sessions: dict[str, JSONDict] = {}
        self._portal_configurations: dict[str, JSONDict] = {}
        self._events: dict[str, JSONDict] = {}
        self._requests: list[RecordedRequest] = []
        self._idempotency: dict[tuple[str, str], _StoredResponse] = {}
        self._faults: list[_Fault] = []

    # --- test-side inspection & control -----------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, method: str, path_prefix: str = "/") -> list[RecordedRequest]:
        method = method.upper()
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        code: str | None = None,
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        """Fail the next ``n`` API requests matching ``method``/``path`` prefix with ``status``.

        500/502/503 -> ``api_error``; 429 -> ``rate_limit``; 409 -> ``lock_timeout``;
        402 -> ``card_declined``; others -> ``invalid_request_error``. Injected failures are
        never stored for idempotency.
        """
        with self._lock:
            self._faults.append(_Fault(n, status, code, path, method))

    def _snapshot(self, objects: dict[str, JSONDict]) -> dict[str, JSONDict]:
        with self._lock:
            return copy.deepcopy(objects)

    @property
    def customers(self) -> dict[str, JSONDict]:
        """All customers by id; deleted ones as ``{"id", "object", "deleted": True}``."""
        with self._lock:
            return {cid: self._customer_view(cid) for cid in self._customers}

    @property
    def subscriptions(self) -> dict[str, JSONDict]:
        return self._snapshot(self._subscriptions)

    @property
    def prices(self) -> dict[str, JSONDict]:
        return self._snapshot(self._prices)

    @property
    def products(self) -> dict[str, JSONDict]:
        return self._snapshot(self._products)

    @property
    def checkout_sessions(self) -> dict[str, JSONDict]:
        return self._snapshot(self._checkout_sessions)

    @property
    def portal_sessions(self) -> dict[str, JSONDict]:
        return self._snapshot(self._portal_sessions)

    @property
    def portal_configurations(self) -> dict[str, JSONDict]:
        return self._snapshot(self._portal_configurations)

    @property
    def events(self) -> dict[str, JSONDict]:
        return self._snapshot(self._events)

    # --- test-side seeding & state changes ---------------------------------------------

    def _register(self, obj_id: str) -> None:
        self._seq_counter += 1
        self._seq[obj_id] = self._seq_counter

    def add_product(self, name: str = "Pro", product_id: str | None = None) -> JSONDict:
        with self._lock:
            prod = so.product(product_id or so.new_id("prod_", 14), name, so.now())
            self._products[prod["id"]] = prod
            self._register(prod["id"])
            return copy.deepcopy(prod)

    def add_price(
        self,
        price_id: str | None = None,
        unit_amount: int = 1500,
        currency: str = "usd",
        interval: str | None = "month",
        product_name: str = "Pro",
        *,
        interval_count: int = 1,
        lookup_key: str | None = None,
        product_id: str | None = None,
    ) -> JSONDict:
        """Seed a price (``interval=None`` for one-time) and, unless ``product_id`` names an
        existing one, a product called ``product_name``."""
        with self._lock:
            if product_id is None or product_id not in self._products:
                product_id = self.add_product(product_name, product_id)["id"]
            price = so.price(
                price_id or so.new_id("price_"),
                product_id=product_id,
                unit_amount=unit_amount,
                currency=currency,
                interval=interval,
                interval_count=interval_count,
                created=so.now(),
                lookup_key=lookup_key,
            )
            self._prices[price["id"]] = price
            self._register(price["id"])
            if self._products[product_id]["default_price"] is None:
                self._products[product_id]["default_price"] = price["id"]
            return copy.deepcopy(price)

    def add_customer(self, email: str | None = None, **fields: Any) -> JSONDict:
        """Seed a customer directly (no HTTP); ``fields`` overwrite top-level attributes."""
        with self._lock:
            cus = so.customer(so.new_id("cus_", 14), so.now())
            cus["email"] = email
            cus.update(fields)
            self._customers[cus["id"]] = cus
            self._register(cus["id"])
            return copy.deepcopy(cus)

    def create_subscription(
        self,
        customer_id: str,
        price_id: str,
        *,
        quantity: int = 1,
        metadata: dict[str, str] | None = None,
        status: str = "active",
        trial_period_days: int | None = None,
    ) -> JSONDict:
        """Seed a subscription directly (no HTTP, no checkout)."""
        with self._lock:
            sub = self._new_subscription(
                customer_id,
                [(self._prices[price_id], quantity)],
                metadata=dict(metadata or {}),
                trial_period_days=trial_period_days,
            )
            if status != sub["status"]:
                self._set_subscription_status(sub, status, {})
            return copy.deepcopy(sub)

    def complete_checkout(self, session_id: str) -> JSONDict:
        """Complete an open Checkout Session as if the customer paid.

        In ``subscription`` mode this creates the customer if the session had none (from
        ``customer_email``), an active (or ``trialing``) subscription with the session's
        recurring prices and ``subscription_data[metadata]``, links it on the session, and
        returns the subscription. In other modes returns the completed session.
        """
        with self._lock:
            return copy.deepcopy(self._complete_checkout(session_id))

    def expire_checkout(self, session_id: str) -> JSONDict:
        with self._lock:
            session = self._checkout_sessions[session_id]
            if session["status"] != "open":
                raise ValueError(f"{session_id} is {session['status']}, not open")
            session["status"] = "expired"
            session["url"] = None
            return copy.deepcopy(session)

    def set_subscription_status(self, sub_id: str, status: str, **fields: Any) -> JSONDict:
        """Force a subscription's ``status`` (and any top-level ``fields``).

        ``current_period_start``/``current_period_end`` are applied to every item, where the
        pinned API version keeps them. ``status="canceled"`` also fills ``canceled_at`` and
        ``ended_at`` unless given.
        """
        if status not in _SUBSCRIPTION_STATUSES:
            raise ValueError(f"unknown subscription status {status!r}")
        with self._lock:
            sub = self._subscriptions[sub_id]
            self._set_subscription_status(sub, status, fields)
            return copy.deepcopy(sub)

    def delete_customer_directly(self, cus_id: str) -> None:
        """Delete a customer as if from the Dashboard (cancels its subscriptions, like Stripe)."""
        with self._lock:
            if cus_id not in self._customers:
                raise KeyError(cus_id)
            self._delete_customer(cus_id)

    def event(
        self,
        type: str,
        obj: JSONDict,
        previous_attributes: JSONDict | None = None,
        created: int | None = None,
        *,
        request_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSONDict:
        """Build (and store, for ``GET /v1/events/{id}``) an Event wrapping ``obj``."""
        evt = so.event(
            so.new_id("evt_"),
            type=type,
            obj=copy.deepcopy(obj),
            previous_attributes=copy.deepcopy(previous_attributes),
            created=so.now() if created is None else created,
            request_id=request_id or so.new_request_id(),
            idempotency_key=idempotency_key,
        )
        with self._lock:
            self._events[evt["id"]] = evt
            self._register(evt["id"])
        return copy.deepcopy(evt)

    # --- ASGI plumbing -----------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if self.down:
            await self._answer_down(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _answer_down(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message: Message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        request_id = so.new_request_id()
        disconnect = self.down_mode == "disconnect"
        self._record(
            RecordedRequest(
                method=scope["method"],
                path=scope["path"],
                params=parse_form(pairs),
                idempotency_key=headers.get("idempotency-key"),
                stripe_version=headers.get("stripe-version"),
                status=0 if disconnect else 503,
                request_id=request_id,
                api_key=_presented_key(headers.get("authorization", "")) or None,
            )
        )
        if disconnect:
            # Promise a body, then return without sending it: uvicorn closes the connection
            # ("ASGI callable returned without completing response"), httpx raises
            # RemoteProtocolError and the SDK turns that into a retryable APIConnectionError.
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
                }
            )
            return
        error = _ApiError(
            503, "api_error", "Stripe is temporarily unavailable (FakeStripe.down is set)."
        )
        response = self._json_response(503, error.body(request_id), request_id, None, error)
        await response(scope, receive, send)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _json_response(
        self,
        status: int,
        body: JSONDict,
        request_id: str,
        stripe_version: str | None,
        error: _ApiError | None,
        extra: dict[str, str] | None = None,
    ) -> Response:
        headers = {
            "Request-Id": request_id,
            "Stripe-Version": stripe_version or API_VERSION,
            "Cache-Control": "no-cache, no-store",
            **(extra or {}),
        }
        if error is not None:
            headers["Stripe-Should-Retry"] = "true" if error.should_retry else "false"
            if error.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="Stripe"'
        return Response(
            json.dumps(body, indent=2),
            status_code=status,
            headers=headers,
            media_type="application/json",
        )

    async def _api(self, request: Request) -> Response:
        method = request.method
        path = request.url.path
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        if method == "POST":
            raw = await request.body()
            pairs += parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        params = parse_form(pairs)
        idempotency_key = (
            request.headers.get("idempotency-key") if method in ("POST", "DELETE") else None
        )
        stripe_version = request.headers.get("stripe-version")
        request_id = so.new_request_id()
        extra: dict[str, str] = {}
        if idempotency_key:
            extra["Idempotency-Key"] = idempotency_key
        error: _ApiError | None = None
        replayed = False
        with self._lock:
            try:
                status, body, replayed, original = self._execute(
                    request, method, path, params, idempotency_key, request_id
                )
                if replayed:
                    extra["Idempotent-Replayed"] = "true"
                    extra["Original-Request"] = original
            except _ApiError as exc:
                error = exc
                status, body = exc.status, exc.body(request_id)
            self._requests.append(
                RecordedRequest(
                    method=method,
                    path=path,
                    params=params,
                    idempotency_key=idempotency_key,
                    stripe_version=stripe_version,
                    status=status,
                    replayed=replayed,
                    request_id=request_id,
                    api_key=_presented_key(request.headers.get("authorization", "")) or None,
                )
            )
        return self._json_response(status, body, request_id, stripe_version, error, extra)

    def _authenticate(self, request: Request) -> str:
        key = _presented_key(request.headers.get("authorization", ""))
        if not key:
            raise _ApiError(
                401,
                "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details,"
                " or we can help at https://support.stripe.com/.",
                log_url=False,
            )
        valid = bool(_KEY_FORMAT.match(key))
        if self._accepted_keys is not None:
            valid = valid and key in self._accepted_keys
        if not valid:
            prefix = key[: key.index("_", key.index("_") + 1) + 1] if key.count("_") >= 2 else ""
            masked = prefix + "*" * max(len(key) - len(prefix) - 4, 0) + key[-4:]
            raise _ApiError(
                401,
                "invalid_request_error",
                f"Invalid API Key provided: {masked}",
                log_url=False,
            )
        return key

    def _execute(
        self,
        request: Request,
        method: str,
        path: str,
        params: JSONDict,
        idempotency_key: str | None,
        request_id: str,
    ) -> tuple[int, JSONDict, bool, str]:
        """Auth, fault injection, idempotency, validation, handler. Caller holds the lock."""
        api_key = self._authenticate(request)
        route, ids = self._resolve_route(method, path)
        for fault in self._faults:
            if fault.remaining > 0 and fault.matches(method, path):
                fault.remaining -= 1
                self._faults = [f for f in self._faults if f.remaining > 0]
                raise _fault_error(fault.status, fault.code)
        if self.failure_rate > 0 and self._random.random() < self.failure_rate:
            raise _fault_error(500, None)
        if idempotency_key:
            stored = self._idempotency.get((api_key, idempotency_key))
            if stored is not None:
                if (stored.method, stored.path) != (method, path):
                    raise _ApiError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used for the same endpoint "
                        f"they were first used for ('{stored.method} {stored.path}' vs "
                        f"'{method} {path}'). Try using a key other than '{idempotency_key}' "
                        "if you meant to execute a different request.",
                    )
                if stored.params != params:
                    raise _ApiError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with. Try using a key other than "
                        f"'{idempotency_key}' if you meant to execute a different request.",
                    )
                return stored.status, copy.deepcopy(stored.body), True, stored.request_id
        for name in params:
            if name not in route.params:
                raise _invalid(
                    f"Received unknown parameter: {name}", code="parameter_unknown", param=name
                )
        call = _Call(method, path, ids, params, str(request.base_url).rstrip("/"))
        body = route.handler(call)
        if idempotency_key:
            self._idempotency[(api_key, idempotency_key)] = _StoredResponse(
                method, path, copy.deepcopy(params), 200, copy.deepcopy(body), request_id
            )
        return 200, body, False, ""

    def _resolve_route(self, method: str, path: str) -> tuple[_ApiRoute, dict[str, str]]:
        for route in self._routes:
            if route.method != method:
                continue
            match = route.pattern.fullmatch(path)
            if match:
                return route, match.groupdict()
        raise _ApiError(
            404,
            "invalid_request_error",
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
        )

    def _build_routes(self) -> list[_ApiRoute]:
        p, pc, pb = stripe.params, stripe.params.checkout, stripe.params.billing_portal
        table: list[tuple[str, str, Handler, Any]] = [
            ("POST", "/v1/customers", self._customer_create, p.CustomerCreateParams),
            ("GET", "/v1/customers", self._customer_list, p.CustomerListParams),
            ("GET", "/v1/customers/{id}", self._customer_retrieve, p.CustomerRetrieveParams),
            ("POST", "/v1/customers/{id}", self._customer_update, p.CustomerUpdateParams),
            ("DELETE", "/v1/customers/{id}", self._customer_delete, p.CustomerDeleteParams),
            ("GET", "/v1/products/{id}", self._product_retrieve, p.ProductRetrieveParams),
            ("GET", "/v1/prices", self._price_list, p.PriceListParams),
            ("GET", "/v1/prices/{id}", self._price_retrieve, p.PriceRetrieveParams),
            ("POST", "/v1/checkout/sessions", self._checkout_create, pc.SessionCreateParams),
            (
                "GET",
                "/v1/checkout/sessions/{id}",
                self._checkout_retrieve,
                pc.SessionRetrieveParams,
            ),
            (
                "POST",
                "/v1/checkout/sessions/{id}/expire",
                self._checkout_expire,
                pc.SessionExpireParams,
            ),
            (
                "POST",
                "/v1/billing_portal/sessions",
                self._portal_session_create,
                pb.SessionCreateParams,
            ),
            (
                "POST",
                "/v1/billing_portal/configurations",
                self._portal_config_create,
                pb.ConfigurationCreateParams,
            ),
            (
                "GET",
                "/v1/billing_portal/configurations",
                self._portal_config_list,
                pb.ConfigurationListParams,
            ),
            (
                "GET",
                "/v1/billing_portal/configurations/{id}",
                self._portal_config_retrieve,
                pb.ConfigurationRetrieveParams,
            ),
            (
                "POST",
                "/v1/billing_portal/configurations/{id}",
                self._portal_config_update,
                pb.ConfigurationUpdateParams,
            ),
            ("GET", "/v1/subscriptions", self._subscription_list, p.SubscriptionListParams),
            (
                "GET",
                "/v1/subscriptions/{id}",
                self._subscription_retrieve,
                p.SubscriptionRetrieveParams,
            ),
            (
                "POST",
                "/v1/subscriptions/{id}",
                self._subscription_update,
                p.SubscriptionUpdateParams,
            ),
            (
                "DELETE",
                "/v1/subscriptions/{id}",
                self._subscription_cancel,
                p.SubscriptionCancelParams,
            ),
            ("GET", "/v1/events/{id}", self._event_retrieve, p.EventRetrieveParams),
        ]
        return [
            _ApiRoute(
                method,
                re.compile(template.replace("{id}", r"(?P<id>[^/]+)")),
                handler,
                _param_names(params_type),
            )
            for method, template, handler, params_type in table
        ]

    # --- shared helpers (caller holds the lock) ----------------------------------------

    def _customer_view(self, cus_id: str) -> JSONDict:
        if cus_id in self._deleted_customers:
            return so.deleted_object(cus_id, "customer")
        return copy.deepcopy(self._customers[cus_id])

    def _live_customer(self, cus_id: str, *, param: str = "id", status: int = 404) -> JSONDict:
        if cus_id not in self._customers or cus_id in self._deleted_customers:
            raise _no_such("customer", cus_id, param=param, status=status)
        return self._customers[cus_id]

    def _resolve_id(self, obj_id: str) -> JSONDict | None:
        if obj_id.startswith("cus_") and obj_id in self._customers:
            return self._customer_view(obj_id)
        for store in (
            self._subscriptions,
            self._prices,
            self._products,
            self._checkout_sessions,
            self._portal_configurations,
            self._events,
        ):
            if obj_id in store:
                return copy.deepcopy(store[obj_id])
        return None

    def _expand(self, obj: JSONDict, paths: Iterable[str]) -> JSONDict:
        out = copy.deepcopy(obj)
        for path in paths:
            self._expand_path(out, path.split("."))
        return out

    def _expand_path(self, node: Any, parts: list[str]) -> None:
        if not parts:
            return
        if isinstance(node, list):
            for item in node:
                self._expand_path(item, parts)
            return
        if not isinstance(node, dict) or parts[0] not in node:
            return
        head, rest = parts[0], parts[1:]
        if isinstance(node[head], str):
            resolved = self._resolve_id(node[head])
            if resolved is not None:
                node[head] = resolved
        self._expand_path(node[head], rest)

    def _paginate(
        self, items: list[JSONDict], params: JSONDict, *, url: str, kind: str
    ) -> JSONDict:
        """Newest first; ``limit`` (1-100, default 10), ``starting_after``/``ending_before``."""
        limit = _int(params.get("limit", "10"), "limit")
        if limit < 1 or limit > 100:
            bound = "greater than or equal to 1" if limit < 1 else "less than or equal to 100"
            raise _invalid(
                f"This value must be {bound}.", code="parameter_invalid_integer", param="limit"
            )
        ordered = sorted(items, key=lambda o: self._seq[o["id"]], reverse=True)
        if "starting_after" in params and "ending_before" in params:
            raise _invalid(
                "You may only specify one of these parameters: starting_after, ending_before.",
                code="parameters_exclusive",
                param="ending_before",
            )
        for cursor in ("starting_after", "ending_before"):
            if cursor not in params:
                continue
            cursor_id = _str(params[cursor], cursor)
            if cursor_id not in self._seq:
                raise _no_such(kind, cursor_id, param=cursor, status=400)
            pivot = self._seq[cursor_id]
            if cursor == "ending_before":
                newer = [o for o in ordered if self._seq[o["id"]] > pivot]
                return so.list_object(newer[-limit:], url=url, has_more=len(newer) > limit)
            ordered = [o for o in ordered if self._seq[o["id"]] < pivot]
        return so.list_object(ordered[:limit], url=url, has_more=len(ordered) > limit)

    # --- customers ---------------------------------------------------------------------

    def _apply_customer_params(self, cus: JSONDict, params: JSONDict, *, creating: bool) -> None:
        for field in ("name", "phone", "description", "business_name", "individual_name"):
            if field in params:
                cus[field] = _opt_str(params[field], field)
        if "email" in params:
            email = _opt_str(params["email"], "email")
            if email is not None and not _EMAIL_RE.match(email):
                raise _invalid(
                    f"Invalid email address: {email}", code="email_invalid", param="email"
                )
            cus["email"] = email
        if "invoice_prefix" in params:
            cus["invoice_prefix"] = _str(params["invoice_prefix"], "invoice_prefix")
        for int_field in ("balance", "next_invoice_sequence"):
            if int_field in params:
                cus[int_field] = _int(params[int_field], int_field)
        if "address" in params:
            cus["address"] = _address(params["address"], "address")
        if "shipping" in params:
            shipping = params["shipping"]
            if shipping == "":
                cus["shipping"] = None
            else:
                given = _dict(shipping, "shipping")
                if "name" not in given:
                    raise _missing_param("shipping[name]")
                cus["shipping"] = {
                    "address": _address(given.get("address", {}), "shipping[address]"),
                    "carrier": None,
                    "name": _str(given["name"], "shipping[name]"),
                    "phone": _opt_str(given.get("phone", ""), "shipping[phone]"),
                    "tracking_number": None,
                }
        if "preferred_locales" in params:
            cus["preferred_locales"] = _str_list(params["preferred_locales"], "preferred_locales")
        if "tax_exempt" in params:
            value = _str(params["tax_exempt"], "tax_exempt") or "none"
            if value not in ("exempt", "none", "reverse"):
                raise _invalid(
                    "Invalid tax_exempt: must be one of exempt, none, or reverse",
                    param="tax_exempt",
                )
            cus["tax_exempt"] = value
        if "invoice_settings" in params:
            settings = _dict(params["invoice_settings"], "invoice_settings")
            target = cus["invoice_settings"]
            for field in ("default_payment_method", "footer"):
                if field in settings:
                    target[field] = _opt_str(settings[field], f"invoice_settings[{field}]")
            if "custom_fields" in settings:
                fields = _list(settings["custom_fields"], "invoice_settings[custom_fields]")
                target["custom_fields"] = [
                    {"name": _str(f["name"], "name"), "value": _str(f["value"], "value")}
                    for f in fields
                ] or None
        if "metadata" in params:
            if creating and params["metadata"] == "":
                cus["metadata"] = {}
            else:
                _merge_metadata(cus["metadata"], params["metadata"])

    def _customer_create(self, call: _Call) -> JSONDict:
        cus = so.customer(so.new_id("cus_", 14), so.now())
        self._apply_customer_params(cus, call.params, creating=True)
        self._customers[cus["id"]] = cus
        self._register(cus["id"])
        return self._expand(cus, call.expand())

    def _customer_retrieve(self, call: _Call) -> JSONDict:
        cus_id = call.ids["id"]
        if cus_id not in self._customers:
            raise _no_such("customer", cus_id)
        return self._expand(self._customer_view(cus_id), call.expand())

    def _customer_update(self, call: _Call) -> JSONDict:
        cus = self._live_customer(call.ids["id"])
        updated = copy.deepcopy(cus)
        self._apply_customer_params(updated, call.params, creating=False)
        self._customers[cus["id"]] = updated
        return self._expand(updated, call.expand())

    def _delete_customer(self, cus_id: str) -> None:
        self._deleted_customers.add(cus_id)
        for sub in self._subscriptions.values():
            if sub["customer"] == cus_id and sub["status"] not in (
                "canceled",
                "incomplete_expired",
            ):
                self._set_subscription_status(sub, "canceled", {})

    def _customer_delete(self, call: _Call) -> JSONDict:
        cus = self._live_customer(call.ids["id"])
        self._delete_customer(cus["id"])
        return so.deleted_object(cus["id"], "customer")

    def _customer_list(self, call: _Call) -> JSONDict:
        items = [c for cid, c in self._customers.items() if cid not in self._deleted_customers]
        if "email" in call.params:
            email = _str(call.params["email"], "email")  # exact, case-sensitive (as Stripe)
            items = [c for c in items if c["email"] == email]
        items = self._filter_created(items, call.params)
        listing = self._paginate(items, call.params, url="/v1/customers", kind="customer")
        return self._expand(listing, call.expand())

    def _filter_created(self, items: list[JSONDict], params: JSONDict) -> list[JSONDict]:
        if "created" not in params:
            return items
        created = params["created"]
        if isinstance(created, str):
            exact = _int(created, "created")
            return [o for o in items if o["created"] == exact]
        bounds = _dict(created, "created")
        ops: dict[str, Callable[[int, int], bool]] = {
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
        }
        for op, raw in bounds.items():
            if op not in ops:
                raise _invalid(
                    f"Received unknown parameter: created[{op}]",
                    code="parameter_unknown",
                    param=f"created[{op}]",
                )
            bound = _int(raw, f"created[{op}]")
            items = [o for o in items if ops[op](o["created"], bound)]
        return items

    # --- catalogue ---------------------------------------------------------------------

    def _price_retrieve(self, call: _Call) -> JSONDict:
        price_id = call.ids["id"]
        if price_id not in self._prices:
            raise _no_such("price", price_id)
        return self._expand(self._prices[price_id], call.expand())

    def _price_list(self, call: _Call) -> JSONDict:
        items = list(self._prices.values())
        params = call.params
        if "active" in params:
            active = _bool(params["active"], "active")
            items = [p for p in items if p["active"] is active]
        for field in ("product", "currency", "type"):
            if field in params:
                wanted = _str(params[field], field)
                items = [p for p in items if p[field] == wanted]
        if "lookup_keys" in params:
            keys = set(_str_list(params["lookup_keys"], "lookup_keys"))
            items = [p for p in items if p["lookup_key"] in keys]
        items = self._filter_created(items, params)
        listing = self._paginate(items, params, url="/v1/prices", kind="price")
        return self._expand(listing, call.expand())

    def _product_retrieve(self, call: _Call) -> JSONDict:
        prod_id = call.ids["id"]
        if prod_id not in self._products:
            raise _no_such("product", prod_id)
        return self._expand(self._products[prod_id], call.expand())

    # --- checkout ----------------------------------------------------------------------

    def _line_item_price(self, item: JSONDict, param: str) -> JSONDict:
        if "price" in item:
            price_id = _str(item["price"], f"{param}[price]")
            price = self._prices.get(price_id)
            if price is None:
                raise _no_such("price", price_id, param=f"{param}[price]", status=400)
            if not price["active"]:
                raise _invalid(
                    f"The price specified is inactive. This field only accepts active prices."
                    f" ('{price_id}')",
                    param=f"{param}[price]",
                )
            return price
        if "price_data" in item:
            data = _dict(item["price_data"], f"{param}[price_data]")
            if "currency" not in data:
                raise _missing_param(f"{param}[price_data][currency]")
            if "product" in data:
                product_id = _str(data["product"], f"{param}[price_data][product]")
                if product_id not in self._products:
                    raise _no_such(
                        "product", product_id, param=f"{param}[price_data][product]", status=400
                    )
            elif "product_data" in data:
                product_data = _dict(data["product_data"], f"{param}[price_data][product_data]")
                name = _str(product_data.get("name"), f"{param}[price_data][product_data][name]")
                product_id = so.new_id("prod_", 14)
                self._products[product_id] = so.product(product_id, name, so.now())
                self._register(product_id)
            else:
                raise _missing_param(f"{param}[price_data][product]")
            recurring = data.get("recurring")
            interval: str | None = None
            interval_count = 1
            if recurring is not None:
                rec = _dict(recurring, f"{param}[price_data][recurring]")
                interval = _str(rec.get("interval"), f"{param}[price_data][recurring][interval]")
                if "interval_count" in rec:
                    interval_count = _int(rec["interval_count"], "interval_count")
            price = so.price(
                so.new_id("price_"),
                product_id=product_id,
                unit_amount=_int(data.get("unit_amount", "0"), "unit_amount"),
                currency=_str(data["currency"], "currency").lower(),
                interval=interval,
                interval_count=interval_count,
                created=so.now(),
            )
            price["active"] = False  # inline prices are single-use, as in Stripe
            self._prices[price["id"]] = price
            self._register(price["id"])
            return price
        raise _invalid(
            "You must specify either `price` or `price_data` for each line item.",
            param=f"{param}",
        )

    def _checkout_create(self, call: _Call) -> JSONDict:
        params = call.params
        if "mode" not in params:
            raise _missing_param("mode")
        mode = _str(params["mode"], "mode")
        if mode not in ("payment", "setup", "subscription"):
            raise _invalid(
                "Invalid mode: must be one of payment, setup, or subscription", param="mode"
            )
        customer_id: str | None = None
        if "customer" in params:
            customer_id = _str(params["customer"], "customer")
            self._live_customer(customer_id, param="customer", status=400)
        customer_email = _opt_str(params.get("customer_email", ""), "customer_email")
        if customer_id and customer_email:
            raise _invalid(
                "You may only specify one of these parameters: customer, customer_email.",
                code="parameters_exclusive",
                param="customer_email",
            )
        raw_items = _list(params.get("line_items", []), "line_items")
        if mode in ("payment", "subscription") and not raw_items:
            raise _missing_param("line_items")
        lines: list[JSONDict] = []
        for i, raw in enumerate(raw_items):
            param = f"line_items[{i}]"
            item = _dict(raw, param)
            price = self._line_item_price(item, param)
            quantity = _int(item.get("quantity", "1"), f"{param}[quantity]")
            if mode == "payment" and price["type"] == "recurring":
                raise _invalid(
                    "You specified `payment` mode but passed a recurring price. Either switch "
                    "to `subscription` mode or use only one-time prices.",
                    param=f"{param}[price]",
                )
            product_name = self._products[price["product"]]["name"]
            lines.append(so.line_item(copy.deepcopy(price), quantity, product_name))
        if mode == "subscription" and not any(
            line["price"]["type"] == "recurring" for line in lines
        ):
            raise _invalid(
                "You must provide at least one recurring price in `subscription` mode when "
                "using prices.",
                param="line_items",
            )
        sub_data: JSONDict = {}
        if "subscription_data" in params:
            if mode != "subscription":
                raise _invalid(
                    "You can only pass `subscription_data` in `subscription` mode.",
                    param="subscription_data",
                )
            raw_sub = _dict(params["subscription_data"], "subscription_data")
            metadata: dict[str, str] = {}
            if "metadata" in raw_sub:
                _merge_metadata(metadata, raw_sub["metadata"], "subscription_data[metadata]")
            sub_data = {"metadata": metadata}
            if "description" in raw_sub:
                sub_data["description"] = _str(
                    raw_sub["description"], "subscription_data[description]"
                )
            if "trial_period_days" in raw_sub:
                sub_data["trial_period_days"] = _int(
                    raw_sub["trial_period_days"], "subscription_data[trial_period_days]"
                )
        ui_mode = _str(params.get("ui_mode", "hosted_page"), "ui_mode")
        session_metadata: dict[str, str] = {}
        if "metadata" in params:
            _merge_metadata(session_metadata, params["metadata"])
        cs_id = so.new_id("cs_test_", 58)
        session = so.checkout_session(
            cs_id,
            url=f"{self.url or call.base_url}/c/pay/{cs_id}",
            mode=mode,
            created=so.now(),
            customer_id=customer_id,
            customer_email=customer_email,
            client_reference_id=_opt_str(
                params.get("client_reference_id", ""), "client_reference_id"
            ),
            success_url=_opt_str(params.get("success_url", ""), "success_url"),
            cancel_url=_opt_str(params.get("cancel_url", ""), "cancel_url"),
            metadata=session_metadata,
            currency=lines[0]["currency"] if lines else None,
            amount=sum(line["amount_total"] for line in lines),
            ui_mode=ui_mode,
            locale=_opt_str(params.get("locale", ""), "locale"),
            allow_promotion_codes=(
                _bool(params["allow_promotion_codes"], "allow_promotion_codes")
                if "allow_promotion_codes" in params
                else None
            ),
        )
        if ui_mode != "hosted_page":
            session["url"] = None
            session["client_secret"] = f"{cs_id}_secret_{so.random_token(24)}"
            session["return_url"] = _opt_str(params.get("return_url", ""), "return_url")
        if "expires_at" in params:
            session["expires_at"] = _int(params["expires_at"], "expires_at")
        self._checkout_sessions[cs_id] = session
        self._checkout_lines[cs_id] = lines
        self._checkout_sub_data[cs_id] = sub_data
        self._register(cs_id)
        return self._checkout_view(cs_id, call.expand())

    def _checkout_view(self, cs_id: str, expand: list[str]) -> JSONDict:
        session = copy.deepcopy(self._checkout_sessions[cs_id])
        if any(path == "line_items" or path.startswith("line_items.") for path in expand):
            session["line_items"] = so.list_object(
                copy.deepcopy(self._checkout_lines[cs_id]),
                url=f"/v1/checkout/sessions/{cs_id}/line_items",
            )
        return self._expand(session, [p for p in expand if p != "line_items"])

    def _checkout_retrieve(self, call: _Call) -> JSONDict:
        cs_id = call.ids["id"]
        if cs_id not in self._checkout_sessions:
            raise _no_such("checkout.session", cs_id)
        return self._checkout_view(cs_id, call.expand())

    def _checkout_expire(self, call: _Call) -> JSONDict:
        cs_id = call.ids["id"]
        session = self._checkout_sessions.get(cs_id)
        if session is None:
            raise _no_such("checkout.session", cs_id)
        if session["status"] != "open":
            raise _invalid(
                f'Only Checkout Sessions with a status in ["open"] can be expired. This '
                f'Checkout Session has a status of "{session["status"]}".'
            )
        session["status"] = "expired"
        session["url"] = None
        return self._checkout_view(cs_id, call.expand())

    def _complete_checkout(self, cs_id: str) -> JSONDict:
        session = self._checkout_sessions[cs_id]
        if session["status"] != "open":
            raise ValueError(f"{cs_id} is {session['status']}, not open")
        if session["customer"] is None:
            email = session["customer_email"] or "customer@example.com"
            customer = so.customer(so.new_id("cus_", 14), so.now())
            customer["email"] = email
            self._customers[customer["id"]] = customer
            self._register(customer["id"])
            session["customer"] = customer["id"]
        customer = self._customers[session["customer"]]
        session["customer_details"] = {
            "address": customer["address"],
            "business_name": None,
            "email": customer["email"],
            "individual_name": None,
            "name": customer["name"],
            "phone": customer["phone"],
            "tax_exempt": customer["tax_exempt"],
            "tax_ids": [],
        }
        session["status"] = "complete"
        session["url"] = None
        result = session
        if session["mode"] == "subscription":
            sub_data = self._checkout_sub_data[cs_id]
            lines = [
                (line["price"], line["quantity"])
                for line in self._checkout_lines[cs_id]
                if line["price"]["type"] == "recurring"
            ]
            sub = self._new_subscription(
                customer["id"],
                lines,
                metadata=dict(sub_data.get("metadata", {})),
                trial_period_days=sub_data.get("trial_period_days"),
                description=sub_data.get("description"),
            )
            session["subscription"] = sub["id"]
            session["payment_status"] = "no_payment_required" if sub["trial_end"] else "paid"
            result = sub
        elif session["mode"] == "payment":
            session["payment_status"] = "paid"
        return result

    # --- subscriptions -----------------------------------------------------------------

    def _new_subscription(
        self,
        customer_id: str,
        lines: list[tuple[JSONDict, int]],
        *,
        metadata: dict[str, str],
        trial_period_days: int | None = None,
        description: str | None = None,
    ) -> JSONDict:
        if customer_id not in self._customers or customer_id in self._deleted_customers:
            raise KeyError(f"no live customer {customer_id}")
        created = so.now()
        sub_id = so.new_id("sub_")
        trial_start = created if trial_period_days else None
        trial_end = created + trial_period_days * 86400 if trial_period_days else None
        items = []
        for price, quantity in lines:
            item = so.subscription_item(
                so.new_id("si_", 14),
                sub_id=sub_id,
                price_obj=copy.deepcopy(price),
                quantity=quantity,
                period_start=created,
                created=created,
            )
            if trial_end is not None:
                item["current_period_end"] = trial_end
            items.append(item)
        sub = so.subscription(
            sub_id,
            customer_id=customer_id,
            items=items,
            currency=lines[0][0]["currency"] if lines else "usd",
            status="trialing" if trial_end else "active",
            created=created,
            metadata=metadata,
            description=description,
            trial_start=trial_start,
            trial_end=trial_end,
        )
        self._subscriptions[sub_id] = sub
        self._register(sub_id)
        return sub

    def _set_subscription_status(self, sub: JSONDict, status: str, fields: JSONDict) -> None:
        sub["status"] = status
        if status == "canceled":
            ts = so.now()
            sub["canceled_at"] = fields.get("canceled_at", sub["canceled_at"] or ts)
            sub["ended_at"] = fields.get("ended_at", ts)
            if sub["cancellation_details"]["reason"] is None:
                sub["cancellation_details"]["reason"] = "cancellation_requested"
        for key, value in fields.items():
            if key in ("current_period_start", "current_period_end"):
                for item in sub["items"]["data"]:
                    item[key] = value
            elif key in sub:
                sub[key] = value
            else:
                raise KeyError(f"subscription has no field {key!r}")

    def _get_subscription(self, sub_id: str) -> JSONDict:
        if sub_id not in self._subscriptions:
            raise _no_such("subscription", sub_id)
        return self._subscriptions[sub_id]

    def _subscription_retrieve(self, call: _Call) -> JSONDict:
        return self._expand(self._get_subscription(call.ids["id"]), call.expand())

    def _subscription_list(self, call: _Call) -> JSONDict:
        params = call.params
        items = list(self._subscriptions.values())
        status = _str(params.get("status", ""), "status")
        if status == "":
            items = [s for s in items if s["status"] != "canceled"]
        elif status == "ended":
            items = [s for s in items if s["status"] in ("canceled", "incomplete_expired")]
        elif status in _SUBSCRIPTION_STATUSES:
            items = [s for s in items if s["status"] == status]
        elif status != "all":
            raise _invalid(
                "Invalid status: must be one of active, all, canceled, ended, incomplete, "
                "incomplete_expired, past_due, paused, trialing, or unpaid",
                param="status",
            )
        if "customer" in params:
            customer_id = _str(params["customer"], "customer")
            items = [s for s in items if s["customer"] == customer_id]
        for field in ("price", "plan"):
            if field in params:
                price_id = _str(params[field], field)
                items = [
                    s
                    for s in items
                    if any(i["price"]["id"] == price_id for i in s["items"]["data"])
                ]
        items = self._filter_created(items, params)
        listing = self._paginate(items, params, url="/v1/subscriptions", kind="subscription")
        return self._expand(listing, call.expand())

    def _subscription_update(self, call: _Call) -> JSONDict:
        params = call.params
        sub = copy.deepcopy(self._get_subscription(call.ids["id"]))
        if sub["status"] in ("canceled", "incomplete_expired") and set(params) - {
            "metadata",
            "cancellation_details",
            "expand",
        }:
            raise _invalid(
                "A canceled subscription can only update its cancellation_details and metadata."
            )
        if "cancel_at" in params and "cancel_at_period_end" in params:
            raise _invalid(
                "You may only specify one of these parameters: cancel_at, cancel_at_period_end.",
                code="parameters_exclusive",
                param="cancel_at",
            )
        period_ends = [item["current_period_end"] for item in sub["items"]["data"]]
        if "cancel_at_period_end" in params:
            at_end = _bool(params["cancel_at_period_end"], "cancel_at_period_end")
            sub["cancel_at_period_end"] = at_end
            sub["cancel_at"] = max(period_ends) if at_end and period_ends else None
            sub["canceled_at"] = so.now() if at_end else None
        if "cancel_at" in params:
            raw = _str(params["cancel_at"], "cancel_at")
            if raw == "":
                sub["cancel_at"], sub["canceled_at"] = None, None
            else:
                if raw == "min_period_end":
                    sub["cancel_at"] = min(period_ends)
                elif raw == "max_period_end":
                    sub["cancel_at"] = max(period_ends)
                else:
                    sub["cancel_at"] = _int(raw, "cancel_at")
                sub["canceled_at"] = so.now()
            sub["cancel_at_period_end"] = False
        if "cancellation_details" in params:
            details = _dict(params["cancellation_details"], "cancellation_details")
            for field in ("comment", "feedback"):
                if field in details:
                    sub["cancellation_details"][field] = _opt_str(
                        details[field], f"cancellation_details[{field}]"
                    )
        for field in ("description", "default_payment_method"):
            if field in params:
                sub[field] = _opt_str(params[field], field)
        if "collection_method" in params:
            sub["collection_method"] = _str(params["collection_method"], "collection_method")
        if "days_until_due" in params:
            sub["days_until_due"] = _int(params["days_until_due"], "days_until_due")
        if "metadata" in params:
            _merge_metadata(sub["metadata"], params["metadata"])
        if "items" in params:
            self._update_items(sub, _list(params["items"], "items"))
        self._subscriptions[sub["id"]] = sub
        return self._expand(sub, call.expand())

    def _update_items(self, sub: JSONDict, changes: list[Any]) -> None:
        data: list[JSONDict] = sub["items"]["data"]
        for i, raw in enumerate(changes):
            param = f"items[{i}]"
            change = _dict(raw, param)
            existing: JSONDict | None = None
            if "id" in change:
                item_id = _str(change["id"], f"{param}[id]")
                existing = next((it for it in data if it["id"] == item_id), None)
                if existing is None:
                    raise _no_such("subscription_item", item_id, param=f"{param}[id]", status=400)
                if "deleted" in change and _bool(change["deleted"], f"{param}[deleted]"):
                    data.remove(existing)
                    continue
            price = (
                self._line_item_price(change, param)
                if ("price" in change or "price_data" in change)
                else None
            )
            if existing is None:
                if price is None:
                    raise _missing_param(f"{param}[price]")
                first = data[0] if data else None
                item = so.subscription_item(
                    so.new_id("si_", 14),
                    sub_id=sub["id"],
                    price_obj=copy.deepcopy(price),
                    quantity=_int(change.get("quantity", "1"), f"{param}[quantity]"),
                    period_start=first["current_period_start"] if first else so.now(),
                    created=so.now(),
                )
                data.append(item)
                continue
            if price is not None:
                existing["price"] = copy.deepcopy(price)
                existing["plan"] = so.plan_from_price(price)
            if "quantity" in change:
                existing["quantity"] = _int(change["quantity"], f"{param}[quantity]")
            if "metadata" in change:
                _merge_metadata(existing["metadata"], change["metadata"], f"{param}[metadata]")
        sub["items"]["total_count"] = len(data)

    def _subscription_cancel(self, call: _Call) -> JSONDict:
        sub = self._get_subscription(call.ids["id"])
        if sub["status"] in ("canceled", "incomplete_expired"):
            raise _invalid(
                "A canceled subscription can only update its cancellation_details and metadata."
            )
        if "cancellation_details" in call.params:
            details = _dict(call.params["cancellation_details"], "cancellation_details")
            for field in ("comment", "feedback"):
                if field in details:
                    sub["cancellation_details"][field] = _opt_str(
                        details[field], f"cancellation_details[{field}]"
                    )
        self._set_subscription_status(sub, "canceled", {"canceled_at": so.now()})
        return self._expand(sub, call.expand())

    # --- billing portal ----------------------------------------------------------------

    def _default_portal_configuration(self) -> JSONDict:
        for cfg in self._portal_configurations.values():
            if cfg["is_default"]:
                return cfg
        # Stripe requires saving portal settings in the Dashboard first; the fake behaves as
        # if that had been done, with a typical default configuration.
        cfg = so.portal_configuration(so.new_id("bpc_"), so.now(), is_default=True)
        features = cfg["features"]
        features["customer_update"] = {"allowed_updates": ["email", "address"], "enabled": True}
        features["invoice_history"]["enabled"] = True
        features["payment_method_update"]["enabled"] = True
        features["subscription_cancel"]["enabled"] = True
        self._portal_configurations[cfg["id"]] = cfg
        self._register(cfg["id"])
        return cfg

    def _portal_session_create(self, call: _Call) -> JSONDict:
        params = call.params
        if "customer" not in params:
            raise _missing_param("customer")
        customer_id = _str(params["customer"], "customer")
        self._live_customer(customer_id, param="customer", status=400)
        if "configuration" in params:
            cfg_id = _str(params["configuration"], "configuration")
            cfg = self._portal_configurations.get(cfg_id)
            if cfg is None:
                raise _no_such("configuration", cfg_id, param="configuration", status=400)
        else:
            cfg = self._default_portal_configuration()
        flow = self._portal_flow(params["flow_data"]) if "flow_data" in params else None
        bps_id = so.new_id("bps_")
        session = so.portal_session(
            bps_id,
            url=f"{self.url or call.base_url}/p/session/{bps_id}",
            configuration_id=cfg["id"],
            customer_id=customer_id,
            return_url=_opt_str(params.get("return_url", ""), "return_url")
            or cfg["default_return_url"],
            created=so.now(),
            locale=_opt_str(params.get("locale", ""), "locale"),
            flow=flow,
            on_behalf_of=_opt_str(params.get("on_behalf_of", ""), "on_behalf_of"),
        )
        self._portal_sessions[bps_id] = session
        self._register(bps_id)
        return self._expand(session, call.expand())

    def _portal_flow(self, raw: Any) -> JSONDict:
        data = _dict(raw, "flow_data")
        if "type" not in data:
            raise _missing_param("flow_data[type]")
        flow_type = _str(data["type"], "flow_data[type]")
        after_param = "flow_data[after_completion]"
        after = _dict(data.get("after_completion", {}), after_param)
        after_type = _str(after.get("type", "portal_homepage"), f"{after_param}[type]")
        redirect = after.get("redirect")
        confirmation = after.get("hosted_confirmation")
        flow: JSONDict = {
            "after_completion": {
                "hosted_confirmation": (
                    {
                        "custom_message": _dict(
                            confirmation, f"{after_param}[hosted_confirmation]"
                        ).get("custom_message")
                    }
                    if confirmation is not None
                    else None
                ),
                "redirect": (
                    {"return_url": _dict(redirect, f"{after_param}[redirect]").get("return_url")}
                    if redirect is not None
                    else None
                ),
                "type": after_type,
            },
            "customer_update": None,
            "subscription_cancel": None,
            "subscription_pause": None,
            "subscription_update": None,
            "subscription_update_confirm": None,
            "type": flow_type,
        }
        if flow_type in (
            "subscription_cancel",
            "subscription_pause",
            "subscription_update",
            "subscription_update_confirm",
        ):
            detail = _dict(data.get(flow_type), f"flow_data[{flow_type}]")
            param = f"flow_data[{flow_type}][subscription]"
            if "subscription" not in detail:
                raise _missing_param(param)
            sub_id = _str(detail["subscription"], param)
            if sub_id not in self._subscriptions:
                raise _no_such("subscription", sub_id, param=param, status=400)
            flow[flow_type] = copy.deepcopy(detail)
            if flow_type == "subscription_cancel":
                flow[flow_type].setdefault("retention", None)
        return flow

    def _apply_typed(self, target: JSONDict, given: Any, param: str) -> None:
        """Deep-merge form values into ``target``, coercing to the type already there."""
        for key, value in _dict(given, param).items():
            name = f"{param}[{key}]"
            if key not in target:
                raise _invalid(
                    f"Received unknown parameter: {name}", code="parameter_unknown", param=name
                )
            current = target[key]
            if key == "products" and param.endswith("[subscription_update]"):
                target[key] = self._portal_products(value, name)
            elif key == "conditions":
                target[key] = [
                    {"type": _str(_dict(c, name).get("type"), f"{name}[{i}][type]")}
                    for i, c in enumerate(_list(value, name))
                ]
            elif isinstance(current, dict):
                self._apply_typed(current, value, name)
            elif isinstance(current, bool):
                target[key] = _bool(value, name)
            elif isinstance(current, int):
                target[key] = _int(value, name)
            elif isinstance(current, list):
                target[key] = _str_list(value, name)
            else:
                target[key] = _opt_str(value, name)

    def _portal_products(self, value: Any, param: str) -> list[JSONDict]:
        products = []
        for i, raw in enumerate(_list(value, param)):
            entry_param = f"{param}[{i}]"
            entry = _dict(raw, entry_param)
            if "product" not in entry:
                raise _missing_param(f"{entry_param}[product]")
            product_id = _str(entry["product"], f"{entry_param}[product]")
            if product_id not in self._products:
                raise _no_such("product", product_id, param=f"{entry_param}[product]", status=400)
            prices = _str_list(entry.get("prices", []), f"{entry_param}[prices]")
            for j, price_id in enumerate(prices):
                if price_id not in self._prices:
                    raise _no_such(
                        "price", price_id, param=f"{entry_param}[prices][{j}]", status=400
                    )
            adjustable: JSONDict = {"enabled": False, "maximum": None, "minimum": 1}
            if "adjustable_quantity" in entry:
                raw_adj = _dict(entry["adjustable_quantity"], f"{entry_param}[adjustable_quantity]")
                adjustable["enabled"] = _bool(raw_adj.get("enabled"), "enabled")
                if "maximum" in raw_adj:
                    adjustable["maximum"] = _int(raw_adj["maximum"], "maximum")
                if "minimum" in raw_adj:
                    adjustable["minimum"] = _int(raw_adj["minimum"], "minimum")
            products.append(
                {"adjustable_quantity": adjustable, "prices": prices, "product": product_id}
            )
        return products

    def _apply_portal_config(self, cfg: JSONDict, params: JSONDict, base_url: str) -> None:
        if "business_profile" in params:
            self._apply_typed(
                cfg["business_profile"], params["business_profile"], "business_profile"
            )
        if "features" in params:
            self._apply_typed(cfg["features"], params["features"], "features")
        if "default_return_url" in params:
            cfg["default_return_url"] = _opt_str(params["default_return_url"], "default_return_url")
        if "name" in params:
            cfg["name"] = _opt_str(params["name"], "name")
        if "active" in params:
            cfg["active"] = _bool(params["active"], "active")
        if "login_page" in params:
            login = _dict(params["login_page"], "login_page")
            enabled = _bool(login.get("enabled"), "login_page[enabled]")
            cfg["login_page"] = {
                "enabled": enabled,
                "url": f"{base_url}/p/login/{so.random_token(16)}" if enabled else None,
            }
        if "metadata" in params:
            _merge_metadata(cfg["metadata"], params["metadata"])
        cfg["updated"] = so.now()

    def _portal_config_create(self, call: _Call) -> JSONDict:
        if "features" not in call.params:
            raise _missing_param("features")
        cfg = so.portal_configuration(so.new_id("bpc_"), so.now())
        self._apply_portal_config(cfg, call.params, self.url or call.base_url)
        self._portal_configurations[cfg["id"]] = cfg
        self._register(cfg["id"])
        return self._expand(cfg, call.expand())

    def _get_portal_config(self, cfg_id: str) -> JSONDict:
        if cfg_id not in self._portal_configurations:
            raise _no_such("configuration", cfg_id)
        return self._portal_configurations[cfg_id]

    def _portal_config_retrieve(self, call: _Call) -> JSONDict:
        return self._expand(self._get_portal_config(call.ids["id"]), call.expand())

    def _portal_config_update(self, call: _Call) -> JSONDict:
        cfg = copy.deepcopy(self._get_portal_config(call.ids["id"]))
        self._apply_portal_config(cfg, call.params, self.url or call.base_url)
        self._portal_configurations[cfg["id"]] = cfg
        return self._expand(cfg, call.expand())

    def _portal_config_list(self, call: _Call) -> JSONDict:
        items = list(self._portal_configurations.values())
        for field in ("active", "is_default"):
            if field in call.params:
                wanted = _bool(call.params[field], field)
                items = [c for c in items if c[field] is wanted]
        listing = self._paginate(
            items, call.params, url="/v1/billing_portal/configurations", kind="configuration"
        )
        return self._expand(listing, call.expand())

    # --- events ------------------------------------------------------------------------

    def _event_retrieve(self, call: _Call) -> JSONDict:
        evt_id = call.ids["id"]
        if evt_id not in self._events:
            raise _no_such("event", evt_id)
        return self._expand(self._events[evt_id], call.expand())

    # --- hosted pages ------------------------------------------------------------------

    def _record_page(self, request: Request, status: int) -> None:
        self._record(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                params=parse_form(parse_qsl(request.url.query, keep_blank_values=True)),
                idempotency_key=None,
                stripe_version=None,
                status=status,
            )
        )

    @staticmethod
    def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
        document = (
            "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"{body}\n</body></html>\n"
        )
        return HTMLResponse(document, status_code=status)

    async def _checkout_page(self, request: Request) -> Response:
        cs_id = str(request.path_params["session_id"])
        with self._lock:
            session = copy.deepcopy(self._checkout_sessions.get(cs_id))
            lines = copy.deepcopy(self._checkout_lines.get(cs_id, []))
        if session is None:
            self._record_page(request, 404)
            return self._page("Fake Stripe Checkout", "<p>Something went wrong.</p>", 404)
        esc = html.escape
        parts = [
            f"<p>Session <code id='session-id'>{esc(cs_id)}</code></p>",
            f"<p id='status'>Status: {esc(str(session['status']))}</p>",
            f"<p id='mode'>Mode: {esc(str(session['mode']))}</p>",
            "<ul id='line-items'>",
            *(
                f"<li>{esc(line['description'])} &times; {line['quantity']}: "
                f"{line['amount_total'] / 100:.2f} {esc(line['currency'].upper())}</li>"
                for line in lines
            ),
            "</ul>",
        ]
        if session["status"] == "open":
            parts.append(
                f"<form method='post' action='/c/pay/{esc(cs_id)}/complete'>"
                "<button id='pay' type='submit'>Pay</button></form>"
            )
            if session["cancel_url"]:
                parts.append(f"<a id='cancel' href='{esc(session['cancel_url'])}'>Cancel</a>")
        else:
            parts.append("<p>This Checkout Session is no longer active.</p>")
        self._record_page(request, 200)
        return self._page("Fake Stripe Checkout", "\n".join(parts))

    async def _checkout_page_complete(self, request: Request) -> Response:
        cs_id = str(request.path_params["session_id"])
        with self._lock:
            session = self._checkout_sessions.get(cs_id)
            ok = session is not None and session["status"] == "open"
            if ok:
                self._complete_checkout(cs_id)
            success_url = session["success_url"] if session else None
        self._record_page(request, 303 if ok and success_url else 200 if ok else 409)
        if not ok:
            return self._page(
                "Fake Stripe Checkout", "<p>This Checkout Session is no longer active.</p>", 409
            )
        if success_url:
            return RedirectResponse(
                success_url.replace("{CHECKOUT_SESSION_ID}", cs_id), status_code=303
            )
        return self._page("Fake Stripe Checkout", "<p id='complete'>Payment complete.</p>")

    async def _portal_page(self, request: Request) -> Response:
        bps_id = str(request.path_params["session_id"])
        with self._lock:
            session = copy.deepcopy(self._portal_sessions.get(bps_id))
            subs = [
                copy.deepcopy(s)
                for s in self._subscriptions.values()
                if session is not None and s["customer"] == session["customer"]
            ]
        if session is None:
            self._record_page(request, 404)
            return self._page("Fake Stripe Billing Portal", "<p>Something went wrong.</p>", 404)
        esc = html.escape
        parts = [
            f"<p>Session <code id='session-id'>{esc(bps_id)}</code></p>",
            f"<p>Customer <code id='customer-id'>{esc(session['customer'])}</code></p>",
            "<ul id='subscriptions'>",
            *(f"<li>{esc(s['id'])}: {esc(s['status'])}</li>" for s in subs),
            "</ul>",
        ]
        if session["return_url"]:
            parts.append(f"<a id='return' href='{esc(session['return_url'])}'>Return</a>")
        self._record_page(request, 200)
        return self._page("Fake Stripe Billing Portal", "\n".join(parts))
