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
  ``idempotency_error``. Successful results and card declines are stored (Stripe saves a
  result, errors included, once the endpoint began executing: a retry with the key replays
  the decline for 24 hours); validation errors and injected faults are not, so a retry after
  an injected 500 executes.
* Unknown top-level parameters are rejected (``parameter_unknown``) using the parameter
  names of the installed SDK's ``stripe.params`` TypedDicts.
* Fault injection (:meth:`FakeStripe.fail_next`, or ``failure_rate`` for a random share of
  API calls failing with 500 ``api_error`` and ``Stripe-Should-Retry: true``), latency, and
  ``down``:
  ``down_mode="disconnect"`` (default) sends response headers then closes the connection, so
  httpx fails reading the body and the SDK raises ``stripe.APIConnectionError`` after its
  retries; ``down_mode="unavailable"`` answers 503 ``api_error`` so the SDK raises
  ``stripe.APIError`` after its retries.
* Lists: newest first, ``limit`` 1-100 (default 10; otherwise 400
  ``parameter_invalid_integer``), ``has_more``, ``starting_after``/``ending_before``, so the
  SDK's ``auto_paging_iter()`` (``async for`` too) walks them; filters are exact and
  case-sensitive; ``expand[]`` works on list items (``data.latest_invoice``) and includes
  includable fields (``invoice.payments``).
* Subscriptions (pinned version): billing periods on the items; several per customer;
  ``cancel_at`` as a timestamp, ``min_period_end``, ``max_period_end``;
  ``cancel_at_period_end=true`` also sets ``cancel_at``, to the earliest item period end
  (changelog 2025-07-30.basil); the Billing Portal's "cancel at period end"
  (:meth:`FakeStripe.portal_cancel`) sets ``cancel_at`` and leaves ``cancel_at_period_end``
  false, as it does for flexible billing mode.
* Invoices shaped per ``stripe/_invoice.py``: linked to their subscription through
  ``parent.subscription_details`` (no top-level ``subscription``), paid through
  ``InvoicePayment`` objects (``payment.type="payment_intent"``), never ``charge`` /
  ``payment_intent`` on the invoice. Every new subscription (Checkout, seeding) has a paid
  ``subscription_create`` invoice as ``latest_invoice`` (a trial's is a paid invoice for
  0); a renewal whose payment fails (:meth:`FakeStripe.fail_payment`) leaves an open
  ``subscription_cycle`` invoice and a ``past_due`` subscription. ``GET /v1/invoices``
  (``customer``, ``subscription``, ``status``, ``created`` …), retrieve, ``void``,
  ``mark_uncollectible``, ``pay``; ``GET /v1/invoice_payments``.
* Price swaps (``items[0][id]`` + ``items[0][price]``) with ``proration_behavior``
  (``create_prorations`` leaves prorations for the next invoice, ``always_invoice``
  invoices them at once, ``none``), ``proration_date``, a billing period reset when the
  interval changes, and ``payment_behavior`` when the payment is declined
  (:meth:`FakeStripe.decline_next_payment`): ``error_if_incomplete`` 402 ``card_declined``
  with nothing changed, ``allow_incomplete`` applied and ``past_due``,
  ``default_incomplete`` ``past_due`` awaiting payment, ``pending_if_incomplete`` a
  ``pending_update`` applied when the invoice is paid.
* ``POST /v1/invoices/create_preview`` with the proration model in
  ``FakeStripe._invoice_preview``; previews have ``upcoming_in_`` ids and are not stored.
* Refunds by ``payment_intent`` or ``charge``: full by default, partial with ``amount``;
  ``charge_already_refunded`` once nothing is left, and Stripe's "Refund amount ($x) is
  greater than unrefunded amount on charge ($y)" (``param=amount``) beyond it.
* Checkout Sessions: list filters (``customer``, ``status``, ``subscription``,
  ``payment_intent``, ``customer_details[email]``, ``created``); ``expire`` only when open;
  ``allow_promotion_codes`` and ``discounts`` exclusive; ``automatic_tax[enabled]``;
  ``subscription_data[trial_period_days]`` (1-730) makes the subscription ``trialing``.
* Entitlements: ``GET /v1/entitlements/active_entitlements?customer=…`` from
  :meth:`FakeStripe.set_active_entitlements`, which returns the
  ``entitlements.active_entitlement_summary`` object for the matching event.

The fake sends no webhooks: helpers that change state return the object a test wraps with
:meth:`FakeStripe.event` (``fail_payment`` the invoice, ``portal_cancel`` the subscription,
``expire_checkout`` the session; after ``complete_checkout``,
``fake.checkout_sessions[id]`` is the completed session).

Where Stripe's exact wording or behaviour could not be confirmed, the code says so
("unconfirmed") and models the most conservative reading (no error code asserted).
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
from dataclasses import field as dataclass_field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl

import stripe
import stripe.params
import stripe.params.billing_portal
import stripe.params.checkout
import stripe.params.entitlements
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from tests.support import stripe_objects as so
from tests.support.loopback import LoopbackServer
from tests.support.stripe_objects import API_VERSION, JSONDict

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
    at: float = dataclass_field(default_factory=time.monotonic)
    """When it was answered (``time.monotonic()``), to measure a client's request rate."""


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
        decline_code: str | None = None,
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
        self.decline_code = decline_code

    def body(self, request_id: str) -> JSONDict:
        return so.error_body(
            type=self.type,
            message=self.message,
            code=self.code,
            param=self.param,
            request_id=request_id if self.log_url else None,
            decline_code=self.decline_code,
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


def _card_declined() -> _ApiError:
    """What Stripe answers when a charge it attempts during the request is declined."""
    return _ApiError(
        402,
        "card_error",
        "Your card was declined.",
        code="card_declined",
        decline_code="generic_decline",
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
        return (
            _card_declined()
            if code in (None, "card_declined")
            else _ApiError(402, "card_error", "Your card was declined.", code=code)
        )
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


def _enum(params: JSONDict, param: str, allowed: Sequence[str], default: str) -> str:
    value = _str(params.get(param, default), param)
    if value not in allowed:
        options = ", ".join(allowed[:-1]) + f", or {allowed[-1]}"
        raise _invalid(f"Invalid {param}: must be one of {options}", param=param)
    return value


def _money(amount: int, currency: str) -> str:
    """``$15.00`` as Stripe writes amounts in messages and line descriptions."""
    sign = _CURRENCY_SIGNS.get(currency)
    value = f"{abs(amount) / 100:,.2f}"
    text = f"{sign}{value}" if sign else f"{value} {currency.upper()}"
    return f"-{text}" if amount < 0 else text


def _day(ts: int) -> str:
    return time.strftime("%d %b %Y", time.gmtime(ts))


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
    skip: int = 0  # matching requests let through before the fault applies

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
_INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")
_PRORATION_BEHAVIORS = ("always_invoice", "create_prorations", "none")
_PAYMENT_BEHAVIORS = (
    "allow_incomplete",
    "default_incomplete",
    "error_if_incomplete",
    "pending_if_incomplete",
)
# "Only certain attributes can be used to create a pending update" (Stripe's pending updates
# reference, update subscription endpoint).
_PENDING_UPDATE_PARAMS = frozenset(
    {
        "expand",
        "payment_behavior",
        "proration_behavior",
        "proration_date",
        "billing_cycle_anchor",
        "items",
        "trial_end",
        "trial_from_plan",
        "add_invoice_items",
    }
)
_REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
_CURRENCY_SIGNS = {"usd": "$", "eur": "€", "gbp": "£"}
_RETRY_DELAY = 3 * 86400
"""When the fake schedules the retry of a declined invoice payment (``next_payment_attempt``)."""
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
                Route("/i/{invoice_id}", self._invoice_page, methods=["GET"]),
                Route("/i/{invoice_id}/pdf", self._invoice_pdf, methods=["GET"]),
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
        self._losses: list[_Fault] = []
        self._drops: list[_Fault] = []
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
        self._invoices: dict[str, JSONDict] = {}
        self._invoice_payments: dict[str, JSONDict] = {}
        self._pending_lines: dict[str, list[JSONDict]] = {}
        """Proration lines (``create_prorations``) waiting for a subscription's next invoice."""
        self._payment_intents: dict[str, JSONDict] = {}
        self._charges: dict[str, JSONDict] = {}
        self._refunds: dict[str, JSONDict] = {}
        self._entitlements: dict[str, list[JSONDict]] = {}
        self._features: dict[str, str] = {}
        """Entitlement feature ids by lookup key (one feature per key, as in Stripe)."""
        self._declines = 0
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
        *,
        after: int = 0,
    ) -> None:
        """Fail the next ``n`` API requests matching ``method``/``path`` prefix with ``status``
        (after letting ``after`` matching requests through).

        500/502/503 -> ``api_error``; 429 -> ``rate_limit``; 409 -> ``lock_timeout``;
        402 -> ``card_declined``; others -> ``invalid_request_error``. Injected failures are
        never stored for idempotency.
        """
        with self._lock:
            self._faults.append(_Fault(n, status, code, path, method, after))

    def lose_next_responses(
        self, n: int = 1, path: str | None = None, method: str | None = None
    ) -> None:
        """Execute the next ``n`` matching API requests, then lose their responses: the
        connection closes before the body is sent, as when a network fails after Stripe
        acted. The request is recorded and its result kept for its idempotency key, so a
        retry with the same key is answered with the stored result (``Idempotent-Replayed``)
        and does not act twice."""
        with self._lock:
            self._losses.append(_Fault(n, 0, None, path, method))

    def drop_next_requests(
        self, n: int = 1, path: str | None = None, method: str | None = None
    ) -> None:
        """Drop the next ``n`` matching API requests before they reach Stripe: the
        connection closes with no answer, as when a network fails on the way there. Nothing
        is executed or recorded, so a retry with the same key acts for the first time. The
        client cannot tell this from :meth:`lose_next_responses`."""
        with self._lock:
            self._drops.append(_Fault(n, 0, None, path, method))

    def _take_loss(self, method: str, path: str) -> bool:
        return self._take(self._losses, method, path)

    def _take_drop(self, method: str, path: str) -> bool:
        return self._take(self._drops, method, path)

    def _take(self, faults: list[_Fault], method: str, path: str) -> bool:
        with self._lock:
            for fault in faults:
                if fault.remaining > 0 and fault.matches(method, path):
                    fault.remaining -= 1
                    faults[:] = [f for f in faults if f.remaining > 0]
                    return True
        return False

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

    @property
    def invoices(self) -> dict[str, JSONDict]:
        """All invoices by id (without the includable ``payments``)."""
        return self._snapshot(self._invoices)

    @property
    def invoice_payments(self) -> dict[str, JSONDict]:
        return self._snapshot(self._invoice_payments)

    @property
    def payment_intents(self) -> dict[str, JSONDict]:
        """PaymentIntents behind invoice and Checkout payments (not served over HTTP)."""
        return self._snapshot(self._payment_intents)

    @property
    def charges(self) -> dict[str, JSONDict]:
        """Charges behind those PaymentIntents, with ``amount_refunded`` (not served)."""
        return self._snapshot(self._charges)

    @property
    def refunds(self) -> dict[str, JSONDict]:
        return self._snapshot(self._refunds)

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
        """Seed a subscription directly (no HTTP, no checkout), with its paid first invoice."""
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
        recurring prices and ``subscription_data[metadata]`` and its paid first invoice,
        links it on the session, and returns the subscription. In ``payment`` mode the
        session gets a succeeded PaymentIntent (``payment_intent``). In other modes returns
        the completed session (``fake.checkout_sessions[id]`` has it in every mode).
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

    def decline_next_payment(self, n: int = 1) -> None:
        """Decline the next ``n`` payments the fake attempts during an API request.

        Those are the invoices of a price swap with ``proration_behavior=always_invoice``
        and ``POST /v1/invoices/{id}/pay``: the request then behaves as Stripe does for a
        declined card (402 ``card_error`` ``card_declined`` for ``error_if_incomplete`` and
        for ``pay``; an open invoice and a ``past_due`` subscription for
        ``allow_incomplete``; a ``pending_update`` for ``pending_if_incomplete``).
        """
        with self._lock:
            self._declines += n

    def fail_payment(self, sub_id: str) -> JSONDict:
        """The subscription renews and the renewal payment fails; returns the invoice.

        As at a real renewal, every item's period advances one interval and an invoice
        (``billing_reason="subscription_cycle"``) for the new period is finalized; its first
        attempt is declined, so it stays ``open`` (``attempted``, ``attempt_count=1``,
        ``next_payment_attempt`` set for a retry), and the subscription becomes
        ``past_due`` with ``latest_invoice`` pointing at it. Build ``invoice.payment_failed``
        from the returned invoice and ``customer.subscription.updated`` from
        ``fake.subscriptions[sub_id]``.
        """
        with self._lock:
            sub = self._subscriptions[sub_id]
            if sub["status"] not in ("active", "trialing", "past_due"):
                raise ValueError(f"{sub_id} is {sub['status']}; it does not renew")
            inv = self._renew(sub)
            self._attempt(inv, declined=True)
            sub["status"] = "past_due"
            return copy.deepcopy(inv)

    def pay_invoice(self, invoice_id: str) -> JSONDict:
        """Pay an open (or uncollectible) invoice as if the customer paid it; returns it.

        A ``past_due``/``unpaid``/``incomplete`` subscription whose latest invoice this is
        becomes ``active`` again, and a ``pending_update`` is applied, as Stripe does.
        """
        with self._lock:
            inv = self._invoices[invoice_id]
            if inv["status"] not in ("open", "uncollectible"):
                raise ValueError(f"{invoice_id} is {inv['status']}, not open")
            self._attempt(inv, declined=False)
            return copy.deepcopy(inv)

    def portal_cancel(self, sub_id: str, *, feedback: str | None = None) -> JSONDict:
        """Cancel at period end the way the Billing Portal does; returns the subscription.

        For subscriptions in flexible billing mode (the default on the pinned API version)
        the portal sets ``cancel_at`` to the end of the current period and leaves
        ``cancel_at_period_end`` false (Stripe's billing-mode comparison, "Cancellations in
        the Customer Portal"); ``canceled_at`` is the time of the request and
        ``cancellation_details.reason`` is ``cancellation_requested``.
        """
        with self._lock:
            sub = self._subscriptions[sub_id]
            if sub["status"] in ("canceled", "incomplete_expired"):
                raise ValueError(f"{sub_id} is already {sub['status']}")
            sub["cancel_at"] = min(i["current_period_end"] for i in sub["items"]["data"])
            sub["cancel_at_period_end"] = False
            sub["canceled_at"] = so.now()
            sub["cancellation_details"]["reason"] = "cancellation_requested"
            if feedback is not None:
                sub["cancellation_details"]["feedback"] = feedback
            return copy.deepcopy(sub)

    def add_payment(self, customer_id: str | None, amount: int, currency: str = "usd") -> JSONDict:
        """Seed a succeeded one-off card payment; returns its PaymentIntent (``latest_charge``
        names the charge)."""
        with self._lock:
            pi, _ = self._new_payment(customer_id, amount, currency, succeeded=True)
            return copy.deepcopy(pi)

    def set_active_entitlements(self, customer_id: str, lookup_keys: Sequence[str]) -> JSONDict:
        """Replace a customer's active entitlements (one per feature ``lookup_key``).

        Returns the ``entitlements.active_entitlement_summary`` object to wrap in an
        ``entitlements.active_entitlement_summary.updated`` event with :meth:`event`.
        """
        with self._lock:
            if customer_id not in self._customers:
                raise KeyError(customer_id)
            current = {e["lookup_key"]: e for e in self._entitlements.get(customer_id, [])}
            result = []
            for key in lookup_keys:
                ent = current.get(key)
                if ent is None:
                    feature = self._features.setdefault(key, so.new_id("feat_test_", 24))
                    ent = so.active_entitlement(
                        so.new_id("ent_test_", 24), feature_id=feature, lookup_key=key
                    )
                    self._register(ent["id"])
                result.append(ent)
            self._entitlements[customer_id] = result
            return so.active_entitlement_summary(customer_id, copy.deepcopy(result))

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
        if self._take_drop(scope["method"], scope["path"]):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            return  # no body follows: the connection closes
        if self._take_loss(scope["method"], scope["path"]):

            async def lose_the_body(message: Message) -> None:
                if message["type"] == "http.response.start":
                    await send(message)  # the body never follows: the connection closes

            await self.app(scope, receive, lose_the_body)
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
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
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
        try:
            body = route.handler(call)
        except _ApiError as exc:
            if idempotency_key and exc.status == 402:  # the endpoint ran: a charge was declined
                self._idempotency[(api_key, idempotency_key)] = _StoredResponse(
                    method, path, copy.deepcopy(params), 402, exc.body(request_id), request_id
                )
            raise
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
        pe = stripe.params.entitlements
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
            ("GET", "/v1/checkout/sessions", self._checkout_list, pc.SessionListParams),
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
            ("GET", "/v1/invoices", self._invoice_list, p.InvoiceListParams),
            ("POST", "/v1/invoices", self._invoice_create, p.InvoiceCreateParams),
            (
                "POST",
                "/v1/invoices/create_preview",
                self._invoice_preview,
                p.InvoiceCreatePreviewParams,
            ),
            ("GET", "/v1/invoices/{id}", self._invoice_retrieve, p.InvoiceRetrieveParams),
            ("DELETE", "/v1/invoices/{id}", self._invoice_delete, p.InvoiceDeleteParams),
            ("POST", "/v1/invoices/{id}/void", self._invoice_void, p.InvoiceVoidInvoiceParams),
            (
                "POST",
                "/v1/invoices/{id}/mark_uncollectible",
                self._invoice_mark_uncollectible,
                p.InvoiceMarkUncollectibleParams,
            ),
            ("POST", "/v1/invoices/{id}/pay", self._invoice_pay, p.InvoicePayParams),
            (
                "GET",
                "/v1/invoice_payments",
                self._invoice_payment_list,
                p.InvoicePaymentListParams,
            ),
            (
                "GET",
                "/v1/invoice_payments/{id}",
                self._invoice_payment_retrieve,
                p.InvoicePaymentRetrieveParams,
            ),
            ("POST", "/v1/refunds", self._refund_create, p.RefundCreateParams),
            ("GET", "/v1/refunds", self._refund_list, p.RefundListParams),
            ("GET", "/v1/refunds/{id}", self._refund_retrieve, p.RefundRetrieveParams),
            (
                "GET",
                "/v1/entitlements/active_entitlements",
                self._active_entitlement_list,
                pe.ActiveEntitlementListParams,
            ),
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
            self._invoices,
            self._invoice_payments,
            self._payment_intents,
            self._charges,
            self._refunds,
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
        if not isinstance(node, dict):
            return
        head, rest = parts[0], parts[1:]
        if head not in node:
            included = self._includable(node, head)
            if included is None:
                return
            node[head] = included
        if isinstance(node[head], str):
            resolved = self._resolve_id(node[head])
            if resolved is not None:
                node[head] = resolved
        self._expand_path(node[head], rest)

    def _includable(self, node: JSONDict, field: str) -> JSONDict | None:
        """Fields Stripe only includes on ``expand[]`` (``invoice.payments``)."""
        if node.get("object") == "invoice" and field == "payments" and node["id"] in self._invoices:
            payments = sorted(
                (p for p in self._invoice_payments.values() if p["invoice"] == node["id"]),
                key=lambda p: self._seq[p["id"]],
                reverse=True,
            )
            listing = so.list_object(
                copy.deepcopy(payments), url=f"/v1/invoices/{node['id']}/payments"
            )
            listing["total_count"] = len(payments)
            return listing
        return None

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

    def _filter_created(
        self, items: list[JSONDict], params: JSONDict, field: str = "created"
    ) -> list[JSONDict]:
        """Stripe's timestamp filters: ``created=<ts>`` or ``created[gt|gte|lt|lte]=<ts>``."""
        if field not in params:
            return items
        created = params[field]
        if isinstance(created, str):
            exact = _int(created, field)
            return [o for o in items if o[field] == exact]
        items = [o for o in items if o[field] is not None]
        bounds = _dict(created, field)
        ops: dict[str, Callable[[int, int], bool]] = {
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
        }
        for op, raw in bounds.items():
            if op not in ops:
                raise _invalid(
                    f"Received unknown parameter: {field}[{op}]",
                    code="parameter_unknown",
                    param=f"{field}[{op}]",
                )
            bound = _int(raw, f"{field}[{op}]")
            items = [o for o in items if ops[op](o[field], bound)]
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
                days = _int(raw_sub["trial_period_days"], "subscription_data[trial_period_days]")
                if not 1 <= days <= 730:
                    # Stripe: a trial lasts at least 1 day and at most 730 days (two years).
                    raise _invalid(
                        "The maximum number of trial period days is 730 (2 years)."
                        if days > 730
                        else "The minimum number of trial period days is 1.",
                        param="subscription_data[trial_period_days]",
                    )
                sub_data["trial_period_days"] = days
        if "allow_promotion_codes" in params and "discounts" in params:
            # Exclusive (stripe-php#1731: "You may only specify one of these parameters:
            # allow_promotion_codes, discounts.").
            raise _invalid(
                "You may only specify one of these parameters: allow_promotion_codes, discounts.",
                code="parameters_exclusive",
                param="discounts",
            )
        if "discounts" in params:
            for i, raw_discount in enumerate(_list(params["discounts"], "discounts")):
                discount = _dict(raw_discount, f"discounts[{i}]")
                for kind in ("coupon", "promotion_code"):
                    if kind in discount:
                        # The fake has no coupons or promotion codes, so none exists.
                        raise _no_such(
                            kind,
                            _str(discount[kind], f"discounts[{i}][{kind}]"),
                            param=f"discounts[{i}][{kind}]",
                            status=400,
                        )
        automatic_tax = False
        if "automatic_tax" in params:
            raw_tax = _dict(params["automatic_tax"], "automatic_tax")
            if "enabled" not in raw_tax:
                raise _missing_param("automatic_tax[enabled]")
            automatic_tax = _bool(raw_tax["enabled"], "automatic_tax[enabled]")
        if automatic_tax and customer_id is not None:
            update = _dict(params.get("customer_update", {}), "customer_update")
            saves_address = any(
                _str(update.get(field, "never"), f"customer_update[{field}]") == "auto"
                for field in ("address", "shipping")
            )
            customer = self._customers[customer_id]
            if customer["address"] is None and customer["shipping"] is None and not saves_address:
                # Stripe needs a location to calculate tax for an existing customer (wording
                # as remembered from Stripe's error; no error code asserted).
                raise _invalid(
                    "Automatic tax calculation in Checkout requires a valid address on the "
                    "Customer. Add a valid address to the Customer or set either "
                    "`customer_update[address]` to 'auto' or `customer_update[shipping]` to "
                    "'auto' to save the address entered in Checkout to the Customer.",
                    param="automatic_tax[enabled]",
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
        if automatic_tax:
            session["automatic_tax"] = {
                "enabled": True,
                "liability": {"account": None, "type": "self"},
                "provider": "stripe",
                "status": "requires_location_inputs",
            }
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

    def _checkout_list(self, call: _Call) -> JSONDict:
        params = call.params
        items = list(self._checkout_sessions.values())
        if "status" in params:
            status = _enum(params, "status", ("complete", "expired", "open"), "")
            items = [cs for cs in items if cs["status"] == status]
        for field in ("customer", "customer_account", "payment_intent", "payment_link"):
            if field in params:
                wanted = _str(params[field], field)  # exact, case-sensitive
                items = [cs for cs in items if cs[field] == wanted]
        if "subscription" in params:
            sub_id = _str(params["subscription"], "subscription")
            items = [cs for cs in items if cs["subscription"] == sub_id]
        if "customer_details" in params:
            details = _dict(params["customer_details"], "customer_details")
            if "email" not in details:
                raise _missing_param("customer_details[email]")
            email = _str(details["email"], "customer_details[email]")
            items = [
                cs
                for cs in items
                if cs["customer_details"] is not None and cs["customer_details"]["email"] == email
            ]
        items = self._filter_created(items, params)
        listing = self._paginate(
            [self._checkout_view(cs["id"], []) for cs in items],
            params,
            url="/v1/checkout/sessions",
            kind="checkout.session",
        )
        return self._expand(listing, call.expand())

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
                automatic_tax=session["automatic_tax"]["enabled"],
            )
            session["subscription"] = sub["id"]
            session["payment_status"] = "no_payment_required" if sub["trial_end"] else "paid"
            result = sub
        elif session["mode"] == "payment":
            session["payment_status"] = "paid"
            pi, _ = self._new_payment(
                customer["id"], session["amount_total"], session["currency"], succeeded=True
            )
            session["payment_intent"] = pi["id"]
        if session["automatic_tax"]["enabled"]:
            session["automatic_tax"]["status"] = "complete"
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
        automatic_tax: bool = False,
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
        if automatic_tax:
            sub["automatic_tax"] = {
                "disabled_reason": None,
                "enabled": True,
                "liability": {"account": None, "type": "self"},
            }
        self._subscriptions[sub_id] = sub
        self._register(sub_id)
        self._first_invoice(sub)
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
        proration_behavior = _enum(
            params, "proration_behavior", _PRORATION_BEHAVIORS, "create_prorations"
        )
        # "allow_incomplete ... This is the default behavior" (SubscriptionUpdateParams).
        payment_behavior = _enum(params, "payment_behavior", _PAYMENT_BEHAVIORS, "allow_incomplete")
        if payment_behavior == "pending_if_incomplete":
            for name in params:
                if name not in _PENDING_UPDATE_PARAMS:
                    raise _invalid(  # wording unconfirmed
                        f"The parameter `{name}` cannot be used with "
                        "`payment_behavior=pending_if_incomplete`.",
                        param=name,
                    )
        period_ends = [item["current_period_end"] for item in sub["items"]["data"]]
        if "cancel_at_period_end" in params:
            at_end = _bool(params["cancel_at_period_end"], "cancel_at_period_end")
            sub["cancel_at_period_end"] = at_end
            # Stripe shows the scheduled end in cancel_at too; with mixed intervals
            # cancel_at_period_end "always resolves to the earliest item period end"
            # (changelog 2025-07-30.basil, cancel-at-enums).
            sub["cancel_at"] = min(period_ends) if at_end and period_ends else None
            sub["canceled_at"] = so.now() if at_end else None
        if "cancel_at" in params:
            raw = _str(params["cancel_at"], "cancel_at")
            if raw == "":
                sub["cancel_at"], sub["canceled_at"] = None, None
            else:
                if raw == "min_period_end":
                    sub["cancel_at"] = min(period_ends)
                elif raw in ("max_period_end", "max_billed_until"):
                    # Items here are never billed ahead (``billed_until`` is null), so the
                    # latest billed-until time is taken to be the latest period end.
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
        if "items" not in params:
            self._subscriptions[sub["id"]] = sub
            return self._expand(sub, call.expand())
        before = copy.deepcopy(sub["items"]["data"])
        self._update_items(sub, _list(params["items"], "items"))
        when = self._proration_time(sub, params, "proration_date")
        prorations, cycles = self._change_lines(sub, before, when, proration_behavior)
        if not cycles and not (proration_behavior == "always_invoice" and prorations):
            # create_prorations: the prorations wait for the next invoice.
            self._pending_lines.setdefault(sub["id"], []).extend(prorations)
            self._subscriptions[sub["id"]] = sub
            return self._expand(sub, call.expand())
        self._invoice_update(sub, before, prorations + cycles, when, payment_behavior)
        return self._expand(self._subscriptions[sub["id"]], call.expand())

    def _invoice_update(
        self,
        sub: JSONDict,
        before: list[JSONDict],
        lines: list[JSONDict],
        when: int,
        payment_behavior: str,
    ) -> None:
        """Invoice an update at once (``always_invoice``, or a new billing period) and try
        to collect it the way ``payment_behavior`` says; stores the subscription."""
        lines = self._pending_lines.get(sub["id"], []) + lines
        due = max(sum(line["amount"] for line in lines), 0)
        charged = due > 0 and payment_behavior != "default_incomplete"
        declined = charged and self._take_decline()
        if declined and payment_behavior == "error_if_incomplete":
            # "this parameter does not update the subscription and returns an error instead"
            raise _card_declined()
        self._pending_lines.pop(sub["id"], None)
        if declined and payment_behavior == "pending_if_incomplete":
            # The update waits in pending_update until the invoice is paid (23 hours).
            sub["pending_update"] = {
                "billing_cycle_anchor": None,
                "expires_at": when + 23 * 3600,
                "subscription_items": sub["items"]["data"],
                "trial_end": None,
                "trial_from_plan": None,
            }
            sub["items"]["data"] = before
            sub["items"]["total_count"] = len(before)
        self._subscriptions[sub["id"]] = sub
        inv = self._new_invoice(
            sub, "subscription_update", lines, period_start=when, period_end=when
        )
        self._finalize(inv)
        if inv["status"] == "paid":
            return
        if payment_behavior == "default_incomplete":
            # Payment waits for the PaymentIntent to be confirmed; the subscription is past_due.
            sub["status"] = "past_due"
            return
        self._attempt(inv, declined=declined)
        if declined and payment_behavior == "allow_incomplete":
            sub["status"] = "past_due"

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

    # --- invoices & payments (caller holds the lock) ------------------------------------

    def _take_decline(self) -> bool:
        if self._declines > 0:
            self._declines -= 1
            return True
        return False

    def _product_name(self, price: JSONDict) -> str:
        product = self._products.get(price["product"])
        return str(product["name"]) if product else str(price["product"])

    def _item_line(
        self, sub: JSONDict, item: JSONDict, *, start: int, end: int, preview: bool = False
    ) -> JSONDict:
        """The line a subscription item bills for ``start``-``end`` (``1 \u00d7 Pro (at $15.00 /
        month)``, or ``Trial period for Pro`` at 0 while the subscription is trialing)."""
        price = item["price"]
        name = self._product_name(price)
        trial = sub["trial_end"] is not None and start < sub["trial_end"]
        recurring = price["recurring"] or {"interval": "month", "interval_count": 1}
        every = (
            recurring["interval"]
            if recurring["interval_count"] == 1
            else f"every {recurring['interval_count']} {recurring['interval']}s"
        )
        unit = price["unit_amount"] or 0
        return so.invoice_line(
            so.new_id("il_tmp_" if preview else "il_"),
            invoice_id=None,
            sub_id=sub["id"],
            si_id=item["id"],
            price_obj=copy.deepcopy(price),
            quantity=item["quantity"],
            amount=0 if trial else unit * item["quantity"],
            period_start=start,
            period_end=end,
            description=(
                f"Trial period for {name}"
                if trial
                else f"{item['quantity']} \u00d7 {name} (at {_money(unit, price['currency'])} / {every})"
            ),
        )

    def _new_invoice(
        self,
        sub: JSONDict,
        billing_reason: str,
        lines: list[JSONDict],
        *,
        period_start: int,
        period_end: int,
    ) -> JSONDict:
        """A draft invoice for ``sub``, stored and made the subscription's ``latest_invoice``."""
        in_id = so.new_id("in_")
        for line in lines:
            line["invoice"] = in_id
        inv = so.invoice(
            in_id,
            customer_obj=self._customers[sub["customer"]],
            sub=sub,
            lines=lines,
            created=so.now(),
            period_start=period_start,
            period_end=period_end,
            billing_reason=billing_reason,
            currency=sub["currency"],
        )
        self._invoices[in_id] = inv
        self._register(in_id)
        sub["latest_invoice"] = in_id
        return inv

    def _finalize(self, inv: JSONDict) -> None:
        """draft -> open: a number from the customer's sequence, the hosted URLs, and (when
        something is due) a PaymentIntent behind the default ``InvoicePayment``. An invoice
        with nothing due is paid at once without a payment, as Stripe does."""
        now = so.now()
        customer = self._customers[inv["customer"]]
        sequence = customer["next_invoice_sequence"]
        customer["next_invoice_sequence"] = sequence + 1
        inv["number"] = f"{customer['invoice_prefix']}-{sequence:04d}"
        inv["hosted_invoice_url"] = f"{self.url}/i/{inv['id']}"
        inv["invoice_pdf"] = f"{self.url}/i/{inv['id']}/pdf"
        inv["status"] = "open"
        inv["status_transitions"]["finalized_at"] = now
        inv["effective_at"] = now
        inv["ending_balance"] = customer["balance"]
        if inv["amount_due"] == 0:
            self._mark_paid(inv)
            return
        pi = so.payment_intent(
            so.new_id("pi_"),
            amount=inv["amount_due"],
            currency=inv["currency"],
            customer_id=inv["customer"],
            created=now,
            description="Subscription update"
            if inv["billing_reason"] == "subscription_update"
            else "Subscription creation"
            if inv["billing_reason"] == "subscription_create"
            else None,
        )
        self._payment_intents[pi["id"]] = pi
        self._register(pi["id"])
        payment = so.invoice_payment(
            so.new_id("inpay_"),
            invoice_id=inv["id"],
            pi_id=pi["id"],
            amount=inv["amount_due"],
            currency=inv["currency"],
            created=now,
        )
        self._invoice_payments[payment["id"]] = payment
        self._register(payment["id"])

    def _default_payment(self, inv: JSONDict) -> JSONDict | None:
        return next(
            (
                p
                for p in self._invoice_payments.values()
                if p["invoice"] == inv["id"] and p["is_default"]
            ),
            None,
        )

    def _charge_intent(self, pi: JSONDict, *, declined: bool) -> JSONDict:
        ch = so.charge(
            so.new_id("ch_"),
            amount=pi["amount"],
            currency=pi["currency"],
            customer_id=pi["customer"],
            pi_id=pi["id"],
            created=so.now(),
            succeeded=not declined,
        )
        self._charges[ch["id"]] = ch
        self._register(ch["id"])
        pi["latest_charge"] = ch["id"]
        pi["payment_method"] = ch["payment_method"]
        if declined:
            pi["status"] = "requires_payment_method"
            pi["last_payment_error"] = {
                "charge": ch["id"],
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
                "type": "card_error",
            }
        else:
            pi["status"] = "succeeded"
            pi["amount_received"] = pi["amount"]
            pi["last_payment_error"] = None
        return ch

    def _new_payment(
        self, customer_id: str | None, amount: int, currency: str, *, succeeded: bool
    ) -> tuple[JSONDict, JSONDict]:
        pi = so.payment_intent(
            so.new_id("pi_"),
            amount=amount,
            currency=currency,
            customer_id=customer_id,
            created=so.now(),
        )
        self._payment_intents[pi["id"]] = pi
        self._register(pi["id"])
        return pi, self._charge_intent(pi, declined=not succeeded)

    def _attempt(self, inv: JSONDict, *, declined: bool) -> None:
        """One payment attempt on an open (or uncollectible) invoice."""
        payment = self._default_payment(inv)
        if payment is None or inv["amount_remaining"] == 0:
            self._mark_paid(inv)
            return
        pi = self._payment_intents[payment["payment"]["payment_intent"]]
        inv["attempted"] = True
        inv["attempt_count"] += 1
        self._charge_intent(pi, declined=declined)
        if declined:
            inv["next_payment_attempt"] = so.now() + _RETRY_DELAY
            return
        payment["status"] = "paid"
        payment["amount_paid"] = pi["amount"]
        payment["status_transitions"]["paid_at"] = so.now()
        self._mark_paid(inv)

    def _mark_paid(self, inv: JSONDict) -> None:
        inv["amount_paid"] = inv["amount_due"]
        inv["amount_remaining"] = 0
        inv["status"] = "paid"
        inv["status_transitions"]["paid_at"] = so.now()
        inv["auto_advance"] = False
        inv["next_payment_attempt"] = None
        parent = inv["parent"]
        sub_id = parent["subscription_details"]["subscription"] if parent else None
        sub = self._subscriptions.get(sub_id) if sub_id else None
        if sub is None or sub["latest_invoice"] != inv["id"]:
            return
        # Paying the latest invoice settles the subscription and applies a pending update.
        if sub["status"] in ("past_due", "unpaid", "incomplete"):
            sub["status"] = "active"
        pending = sub["pending_update"]
        if pending is not None:
            sub["items"]["data"] = pending["subscription_items"]
            sub["items"]["total_count"] = len(pending["subscription_items"])
            sub["pending_update"] = None

    def _first_invoice(self, sub: JSONDict) -> JSONDict:
        """The ``subscription_create`` invoice: paid at once (Checkout collected the payment;
        a trial makes it a paid invoice for 0)."""
        lines = [
            self._item_line(
                sub, item, start=item["current_period_start"], end=item["current_period_end"]
            )
            for item in sub["items"]["data"]
        ]
        created = sub["created"]
        inv = self._new_invoice(
            sub, "subscription_create", lines, period_start=created, period_end=created
        )
        self._finalize(inv)
        if inv["status"] == "open":
            self._attempt(inv, declined=False)
        return inv

    def _renew(self, sub: JSONDict) -> JSONDict:
        """Advance every item one period and finalize the ``subscription_cycle`` invoice."""
        old_start = min(i["current_period_start"] for i in sub["items"]["data"])
        old_end = max(i["current_period_end"] for i in sub["items"]["data"])
        if sub["status"] == "trialing":
            sub["status"] = "active"
        lines = self._pending_lines.pop(sub["id"], [])
        for item in sub["items"]["data"]:
            recurring = item["price"]["recurring"] or {"interval": "month", "interval_count": 1}
            start = item["current_period_end"]
            end = so.add_interval(start, recurring["interval"], recurring["interval_count"])
            item["current_period_start"], item["current_period_end"] = start, end
            lines.append(self._item_line(sub, item, start=start, end=end))
        inv = self._new_invoice(
            sub, "subscription_cycle", lines, period_start=old_start, period_end=old_end
        )
        self._finalize(inv)
        return inv

    @staticmethod
    def _prorated(item: JSONDict, when: int) -> int:
        """``unit_amount * quantity * (period_end - when) / (period_end - period_start)``,
        rounded half up to the currency's minor unit."""
        unit = (item["price"]["unit_amount"] or 0) * item["quantity"]
        start, end = item["current_period_start"], item["current_period_end"]
        total = max(end - start, 1)
        remaining = min(max(end - when, 0), total)
        return int((unit * remaining * 2 + total) // (2 * total))

    def _change_lines(
        self,
        sub: JSONDict,
        before: list[JSONDict],
        when: int,
        behavior: str,
        *,
        preview: bool = False,
    ) -> tuple[list[JSONDict], list[JSONDict]]:
        """Proration lines, and lines of new billing periods, for changed items.

        For each item whose price or quantity changed at ``when``: unless ``behavior`` is
        ``none``, a credit for the unused time on the old price and quantity
        (``-round(old * (end - when) / (end - start))``) and a charge for the remaining time
        on the new ones (``round(new * (end - when) / (end - start))``), both prorations
        (``parent.subscription_item_details.proration``) from invoice items. When the
        recurring interval changes, Stripe resets the billing period instead: the item's
        period starts at ``when`` and is billed in full at once (a second list), with only
        the credit prorated. Trialing subscriptions are not prorated (nothing was billed).
        """
        if sub["status"] == "trialing":
            return [], []
        old = {item["id"]: item for item in before}
        new = {item["id"]: item for item in sub["items"]["data"]}
        prorations: list[JSONDict] = []
        cycles: list[JSONDict] = []
        prefix = "il_tmp_" if preview else "il_"
        for item_id in [*old, *(i for i in new if i not in old)]:
            was, now = old.get(item_id), new.get(item_id)
            if (
                was is not None
                and now is not None
                and was["price"]["id"] == now["price"]["id"]
                and was["quantity"] == now["quantity"]
            ):
                continue
            base = was if was is not None else now
            assert base is not None
            end = base["current_period_end"]
            if behavior != "none" and was is not None:
                credit = self._prorated(was, when)
                if credit:
                    prorations.append(
                        so.invoice_line(
                            so.new_id(prefix),
                            invoice_id=None,
                            sub_id=sub["id"],
                            si_id=item_id,
                            price_obj=copy.deepcopy(was["price"]),
                            quantity=was["quantity"],
                            amount=-credit,
                            period_start=when,
                            period_end=end,
                            description=f"Unused time on {self._product_name(was['price'])} "
                            f"after {_day(when)}",
                            proration=True,
                            invoice_item=so.new_id("ii_"),
                        )
                    )
            if now is None:
                continue
            old_rec = (was or now)["price"]["recurring"] or {}
            new_rec = now["price"]["recurring"] or {}
            if was is not None and (old_rec.get("interval"), old_rec.get("interval_count")) != (
                new_rec.get("interval"),
                new_rec.get("interval_count"),
            ):
                now["current_period_start"] = when
                now["current_period_end"] = so.add_interval(
                    when, new_rec.get("interval", "month"), new_rec.get("interval_count", 1)
                )
                cycles.append(
                    self._item_line(
                        sub, now, start=when, end=now["current_period_end"], preview=preview
                    )
                )
                continue
            if behavior != "none":
                charge = self._prorated(now, when)
                if charge:
                    prorations.append(
                        so.invoice_line(
                            so.new_id(prefix),
                            invoice_id=None,
                            sub_id=sub["id"],
                            si_id=item_id,
                            price_obj=copy.deepcopy(now["price"]),
                            quantity=now["quantity"],
                            amount=charge,
                            period_start=when,
                            period_end=end,
                            description=f"Remaining time on {self._product_name(now['price'])}"
                            f" after {_day(when)}",
                            proration=True,
                            invoice_item=so.new_id("ii_"),
                        )
                    )
        return prorations, cycles

    def _proration_time(
        self, sub: JSONDict, params: JSONDict, param: str, *, label: str | None = None
    ) -> int:
        label = label or param
        if param not in params:
            return so.now()
        when = _int(params[param], label)
        starts = [i["current_period_start"] for i in sub["items"]["data"]]
        ends = [i["current_period_end"] for i in sub["items"]["data"]]
        if starts and not (min(starts) <= when <= max(ends)):
            # Unconfirmed wording; Stripe documents that the time must lie in the current period.
            raise _invalid(
                "The proration date must be within the current billing period of the subscription.",
                param=label,
            )
        return when

    def _get_invoice(self, in_id: str) -> JSONDict:
        if in_id not in self._invoices:
            raise _no_such("invoice", in_id)
        return self._invoices[in_id]

    def _invoice_retrieve(self, call: _Call) -> JSONDict:
        return self._expand(self._get_invoice(call.ids["id"]), call.expand())

    def _invoice_list(self, call: _Call) -> JSONDict:
        params = call.params
        items = list(self._invoices.values())
        if "status" in params:
            status = _enum(params, "status", _INVOICE_STATUSES, "")
            items = [i for i in items if i["status"] == status]
        if "collection_method" in params:
            method = _str(params["collection_method"], "collection_method")
            items = [i for i in items if i["collection_method"] == method]
        for field in ("customer", "customer_account"):
            if field in params:
                wanted = _str(params[field], field)  # exact, case-sensitive
                items = [i for i in items if i[field] == wanted]
        if "subscription" in params:
            sub_id = _str(params["subscription"], "subscription")
            items = [
                i
                for i in items
                if i["parent"] is not None
                and i["parent"]["subscription_details"]["subscription"] == sub_id
            ]
        items = self._filter_created(items, params)
        items = self._filter_created(items, params, "due_date")
        listing = self._paginate(items, params, url="/v1/invoices", kind="invoice")
        return self._expand(listing, call.expand())

    def _invoice_create(self, call: _Call) -> JSONDict:
        """A one-off draft invoice for ``customer`` (no subscription, nothing due yet), as
        the Dashboard or the API creates one; in ``currency``, else the customer's, else the
        account's default (``usd`` here)."""
        if "customer" not in call.params:
            raise _missing_param("customer")
        cus = self._live_customer(_str(call.params["customer"], "customer"), param="customer")
        now = so.now()
        inv = so.invoice(
            so.new_id("in_"),
            customer_obj=cus,
            sub=None,
            lines=[],
            created=now,
            period_start=now,
            period_end=now,
            billing_reason="manual",
            currency=_str(call.params.get("currency") or cus["currency"] or "usd", "currency"),
        )
        self._invoices[inv["id"]] = inv
        self._register(inv["id"])
        return self._expand(inv, call.expand())

    def _invoice_delete(self, call: _Call) -> JSONDict:
        """Stripe deletes only a one-off draft: a finalized invoice or a subscription's must
        be voided instead (API reference, "Delete a draft invoice"). The refusal's wording
        here is unconfirmed. A deleted invoice is gone: retrieving it is a 404."""
        inv = self._get_invoice(call.ids["id"])
        if inv["status"] != "draft" or inv["parent"] is not None:
            raise _invalid(
                "You can only delete draft invoices that are not part of a subscription; "
                "void the invoice instead."
            )
        del self._invoices[inv["id"]]
        return so.deleted_object(inv["id"], "invoice")

    def _invoice_void(self, call: _Call) -> JSONDict:
        inv = self._get_invoice(call.ids["id"])
        if inv["status"] not in ("open", "uncollectible"):
            # Stripe voids only finalized, unpaid invoices; the wording here is unconfirmed.
            raise _invalid(
                f"You can only void an invoice that is open or uncollectible. This invoice "
                f"has a status of {inv['status']}."
            )
        now = so.now()
        inv["status"] = "void"
        inv["status_transitions"]["voided_at"] = now
        inv["auto_advance"] = False
        inv["next_payment_attempt"] = None
        payment = self._default_payment(inv)
        if payment is not None and payment["status"] == "open":
            payment["status"] = "canceled"
            payment["status_transitions"]["canceled_at"] = now
            pi = self._payment_intents[payment["payment"]["payment_intent"]]
            pi["status"] = "canceled"
            pi["canceled_at"] = now
            pi["cancellation_reason"] = "void_invoice"
        return self._expand(inv, call.expand())

    def _invoice_mark_uncollectible(self, call: _Call) -> JSONDict:
        inv = self._get_invoice(call.ids["id"])
        if inv["status"] != "open":
            raise _invalid(  # wording unconfirmed
                f"You can only mark an open invoice as uncollectible. This invoice has a "
                f"status of {inv['status']}."
            )
        inv["status"] = "uncollectible"
        inv["status_transitions"]["marked_uncollectible_at"] = so.now()
        inv["auto_advance"] = False
        inv["next_payment_attempt"] = None
        return self._expand(inv, call.expand())

    def _invoice_pay(self, call: _Call) -> JSONDict:
        inv = self._get_invoice(call.ids["id"])
        if inv["status"] == "paid":
            raise _invalid("Invoice is already paid")
        if inv["status"] not in ("open", "uncollectible"):
            raise _invalid(  # wording unconfirmed
                f"You can only pay an invoice that is open or uncollectible. This invoice has "
                f"a status of {inv['status']}."
            )
        if "paid_out_of_band" in call.params and _bool(
            call.params["paid_out_of_band"], "paid_out_of_band"
        ):
            payment = self._default_payment(inv)
            if payment is not None:
                payment["status"] = "canceled"
                payment["status_transitions"]["canceled_at"] = so.now()
            paid = inv["amount_remaining"]
            self._mark_paid(inv)
            inv["amount_paid_off_stripe"] = paid
            return self._expand(inv, call.expand())
        declined = self._take_decline()
        self._attempt(inv, declined=declined)
        if declined:
            raise _card_declined()
        return self._expand(inv, call.expand())

    def _invoice_preview(self, call: _Call) -> JSONDict:
        """``POST /v1/invoices/create_preview``: the invoice a subscription change would make.

        The model (every amount in the currency's minor unit):

        * ``proration_behavior=create_prorations`` (Stripe's default) previews the *next*
          invoice: pending prorations, then for each changed item the credit
          ``-round(old * (period_end - proration_date) / (period_end - period_start))`` and
          the charge ``round(new * (period_end - proration_date) / (period_end -
          period_start))``, then the next period of every item at its (new) price.
        * ``always_invoice`` previews the invoice the update would create at once: pending
          prorations and the two proration lines, no next period.
        * ``none`` previews the next invoice with no prorations: the next period at the new
          price.
        * A change of recurring interval resets the billing period: the credit, then the new
          price for a full period from ``proration_date``, invoiced at once.

        ``amount_due`` is ``max(total, 0)`` (a net credit goes to the customer balance). The
        preview has an ``upcoming_in_…`` id and ``status=draft``, carries
        ``parent.subscription_details.subscription_proration_date`` when it prorates, and
        is not stored: it is in no list and cannot be retrieved, paid or voided.
        """
        params = call.params
        for unsupported in ("schedule", "schedule_details", "invoice_items"):
            if unsupported in params:
                raise _invalid(
                    f"FakeStripe does not model `{unsupported}` on invoice previews.",
                    param=unsupported,
                )
        details = _dict(params.get("subscription_details", {}), "subscription_details")
        behavior = _enum(details, "proration_behavior", _PRORATION_BEHAVIORS, "create_prorations")
        has_items = bool(details.get("items"))
        if "proration_date" in details:
            if not has_items and "trial_end" not in details:
                raise _missing_param("subscription_details[items]")
            if behavior == "none":
                raise _invalid(
                    "`subscription_details.proration_date` cannot be used with "
                    "`subscription_details.proration_behavior=none`.",
                    param="subscription_details[proration_behavior]",
                )
        customer_id = _str(params["customer"], "customer") if "customer" in params else None
        if "subscription" not in params:
            if customer_id is None:
                raise _missing_param("customer")
            if not has_items:
                raise _missing_param("subscription_details[items]")
            return self._expand(self._new_subscription_preview(customer_id, details), call.expand())
        sub_id = _str(params["subscription"], "subscription")
        if sub_id not in self._subscriptions:
            raise _no_such("subscription", sub_id, param="subscription", status=400)
        sub = copy.deepcopy(self._subscriptions[sub_id])
        if customer_id is not None and customer_id != sub["customer"]:
            raise _invalid(  # wording unconfirmed
                f"The subscription '{sub_id}' does not belong to customer '{customer_id}'.",
                param="subscription",
            )
        before = copy.deepcopy(sub["items"]["data"])
        if has_items:
            self._update_items(sub, _list(details["items"], "subscription_details[items]"))
        when = self._proration_time(
            sub, details, "proration_date", label="subscription_details[proration_date]"
        )
        prorations, cycles = self._change_lines(sub, before, when, behavior, preview=True)
        lines = copy.deepcopy(self._pending_lines.get(sub_id, []))
        for line in lines:
            line["id"] = so.new_id("il_tmp_")
        lines += prorations
        created = when
        if behavior == "always_invoice" or cycles:
            lines += cycles
            period_start = period_end = when
        else:
            period_start = min(i["current_period_start"] for i in sub["items"]["data"])
            period_end = max(i["current_period_end"] for i in sub["items"]["data"])
            created = period_end
            for item in sub["items"]["data"]:
                rec = item["price"]["recurring"] or {"interval": "month", "interval_count": 1}
                start = item["current_period_end"]
                end = so.add_interval(start, rec["interval"], rec["interval_count"])
                lines.append(self._item_line(sub, item, start=start, end=end, preview=True))
        preview = so.invoice(
            so.new_id("upcoming_in_"),
            customer_obj=self._customers[sub["customer"]],
            sub=sub,
            lines=lines,
            created=created,
            period_start=period_start,
            period_end=period_end,
            billing_reason="upcoming",
            currency=sub["currency"],
        )
        for line in lines:
            line["invoice"] = preview["id"]
        if prorations:
            preview["parent"]["subscription_details"]["subscription_proration_date"] = when
        return self._expand(preview, call.expand())

    def _new_subscription_preview(self, customer_id: str, details: JSONDict) -> JSONDict:
        """The first invoice of a subscription that does not exist yet: each item's first
        period in full."""
        customer = self._live_customer(customer_id, param="customer", status=400)
        now = so.now()
        lines = []
        currency = "usd"
        for i, raw in enumerate(_list(details["items"], "subscription_details[items]")):
            param = f"subscription_details[items][{i}]"
            item = _dict(raw, param)
            if "price" not in item:
                raise _missing_param(f"{param}[price]")
            price = self._line_item_price(item, param)
            currency = price["currency"]
            rec = price["recurring"] or {"interval": "month", "interval_count": 1}
            end = so.add_interval(now, rec["interval"], rec["interval_count"])
            quantity = _int(item.get("quantity", "1"), f"{param}[quantity]")
            unit = price["unit_amount"] or 0
            lines.append(
                so.invoice_line(
                    so.new_id("il_tmp_"),
                    invoice_id=None,
                    sub_id="",
                    si_id="",
                    price_obj=copy.deepcopy(price),
                    quantity=quantity,
                    amount=unit * quantity,
                    period_start=now,
                    period_end=end,
                    description=f"{quantity} \u00d7 {self._product_name(price)} "
                    f"(at {_money(unit, currency)} / {rec['interval']})",
                )
            )
        preview = so.invoice(
            so.new_id("upcoming_in_"),
            customer_obj=customer,
            sub=None,
            lines=lines,
            created=now,
            period_start=now,
            period_end=now,
            billing_reason="upcoming",
            currency=currency,
        )
        for line in lines:
            line["invoice"] = preview["id"]
            # Stripe has no subscription (item) yet to point at.
            line["subscription"] = None
            line["parent"]["subscription_item_details"]["subscription"] = None
        return preview

    def _invoice_payment_list(self, call: _Call) -> JSONDict:
        params = call.params
        items = list(self._invoice_payments.values())
        if "invoice" in params:
            in_id = _str(params["invoice"], "invoice")
            items = [p for p in items if p["invoice"] == in_id]
        if "status" in params:
            status = _enum(params, "status", ("canceled", "open", "paid"), "")
            items = [p for p in items if p["status"] == status]
        if "payment" in params:
            payment = _dict(params["payment"], "payment")
            if "type" not in payment:
                raise _missing_param("payment[type]")
            kind = _str(payment["type"], "payment[type]")
            items = [p for p in items if p["payment"]["type"] == kind]
            if "payment_intent" in payment:
                pi_id = _str(payment["payment_intent"], "payment[payment_intent]")
                items = [p for p in items if p["payment"]["payment_intent"] == pi_id]
        items = self._filter_created(items, params)
        listing = self._paginate(items, params, url="/v1/invoice_payments", kind="invoice_payment")
        return self._expand(listing, call.expand())

    def _invoice_payment_retrieve(self, call: _Call) -> JSONDict:
        inpay_id = call.ids["id"]
        if inpay_id not in self._invoice_payments:
            raise _no_such("invoice_payment", inpay_id)
        return self._expand(self._invoice_payments[inpay_id], call.expand())

    # --- refunds -----------------------------------------------------------------------

    def _refund_create(self, call: _Call) -> JSONDict:
        """A card refund against a succeeded charge (named directly or through its
        PaymentIntent's ``latest_charge``); the full unrefunded amount by default."""
        params = call.params
        reason = _enum(params, "reason", _REFUND_REASONS, "") if "reason" in params else None
        asked = _int(params["amount"], "amount") if "amount" in params else None
        if asked is not None and asked < 1:
            raise _invalid("Amount must be at least 1 cent", param="amount")  # unconfirmed
        metadata: dict[str, str] = {}
        if "metadata" in params:
            _merge_metadata(metadata, params["metadata"])
        charge: JSONDict | None = None
        if "charge" in params:
            ch_id = _str(params["charge"], "charge")
            charge = self._charges.get(ch_id)
            if charge is None:
                raise _no_such("charge", ch_id, param="charge", status=400)
        if "payment_intent" in params:
            pi_id = _str(params["payment_intent"], "payment_intent")
            pi = self._payment_intents.get(pi_id)
            if pi is None:
                raise _no_such("payment_intent", pi_id, param="payment_intent", status=400)
            if charge is not None and charge["payment_intent"] != pi_id:
                raise _invalid(  # wording unconfirmed
                    f"The charge '{charge['id']}' does not belong to the PaymentIntent '{pi_id}'.",
                    param="charge",
                )
            if charge is None:
                latest = pi["latest_charge"]
                if pi["status"] != "succeeded" or latest is None:
                    raise _invalid(  # wording unconfirmed
                        "This PaymentIntent does not have a successful charge to refund.",
                        param="payment_intent",
                    )
                charge = self._charges[latest]
        if charge is None:
            raise _invalid(
                "One of the following params should be provided for this request: "
                "payment_intent or charge.",
                param="charge",
            )
        if charge["status"] != "succeeded":
            raise _invalid(  # wording unconfirmed
                f"Charge {charge['id']} has not succeeded and cannot be refunded.",
                param="charge",
            )
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining <= 0:
            raise _invalid(
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = remaining if asked is None else asked
        if amount > remaining:
            # Recorded Stripe responses carry this message with param "amount" and no code
            # (some clients mention `amount_too_large`; not confirmed, so left out).
            raise _invalid(
                f"Refund amount ({_money(amount, charge['currency'])}) is greater than "
                f"unrefunded amount on charge ({_money(remaining, charge['currency'])})",
                param="amount",
            )
        refund = so.refund(
            so.new_id("re_"),
            amount=amount,
            charge_obj=charge,
            created=so.now(),
            reason=reason,
            metadata=metadata,
        )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self._refunds[refund["id"]] = refund
        self._register(refund["id"])
        return self._expand(refund, call.expand())

    def _refund_list(self, call: _Call) -> JSONDict:
        params = call.params
        items = list(self._refunds.values())
        for field in ("charge", "payment_intent"):
            if field in params:
                wanted = _str(params[field], field)
                items = [r for r in items if r[field] == wanted]
        items = self._filter_created(items, params)
        listing = self._paginate(items, params, url="/v1/refunds", kind="refund")
        return self._expand(listing, call.expand())

    def _refund_retrieve(self, call: _Call) -> JSONDict:
        re_id = call.ids["id"]
        if re_id not in self._refunds:
            raise _no_such("refund", re_id)
        return self._expand(self._refunds[re_id], call.expand())

    # --- entitlements ------------------------------------------------------------------

    def _active_entitlement_list(self, call: _Call) -> JSONDict:
        if "customer" not in call.params:
            raise _missing_param("customer")
        customer_id = _str(call.params["customer"], "customer")
        self._live_customer(customer_id, param="customer", status=400)
        listing = self._paginate(
            list(self._entitlements.get(customer_id, [])),
            call.params,
            url="/v1/entitlements/active_entitlements",
            kind="active_entitlement",
        )
        return self._expand(listing, call.expand())

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

    async def _invoice_page(self, request: Request) -> Response:
        """The hosted invoice page (``hosted_invoice_url``)."""
        in_id = str(request.path_params["invoice_id"])
        with self._lock:
            inv = copy.deepcopy(self._invoices.get(in_id))
        if inv is None:
            self._record_page(request, 404)
            return self._page("Fake Stripe Invoice", "<p>Something went wrong.</p>", 404)
        esc = html.escape
        parts = [
            f"<p>Invoice <code id='number'>{esc(str(inv['number']))}</code></p>",
            f"<p id='status'>Status: {esc(str(inv['status']))}</p>",
            f"<p id='amount-due'>Amount due: {esc(_money(inv['amount_due'], inv['currency']))}</p>",
            "<ul id='lines'>",
            *(
                f"<li>{esc(str(line['description']))}: "
                f"{esc(_money(line['amount'], line['currency']))}</li>"
                for line in inv["lines"]["data"]
            ),
            "</ul>",
        ]
        self._record_page(request, 200)
        return self._page("Fake Stripe Invoice", "\n".join(parts))

    async def _invoice_pdf(self, request: Request) -> Response:
        """``invoice_pdf``: a minimal PDF naming the invoice."""
        in_id = str(request.path_params["invoice_id"])
        with self._lock:
            inv = copy.deepcopy(self._invoices.get(in_id))
        if inv is None:
            self._record_page(request, 404)
            return Response(b"", status_code=404)
        self._record_page(request, 200)
        body = f"%PDF-1.4\n% Fake Stripe invoice {inv['number']}\n%%EOF\n".encode()
        return Response(body, media_type="application/pdf")
