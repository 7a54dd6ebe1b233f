"""The one adapter to Stripe: the official SDK's async methods over HTTPX.

No other module imports `stripe`. Calls return plain dataclasses, and every Stripe failure
leaves here as a domain error a user can act on (`PAYMENT_PROVIDER_ERROR`,
`STRIPE_NOT_CONFIGURED`) or as `CustomerGone` for a customer Stripe no longer has.
The SDK's own network retries (with its backoff and idempotency keys) are kept; each try
has a short timeout so a GraphQL request never hangs on Stripe. Every call first takes its
turn from the process's `StripeBudget` when one is given (Stripe's rate limits hold across
processes). List calls read every page (`_list_all`), so nothing silently stops at 100.
Times are Unix seconds, amounts in the currency's smallest unit, as Stripe gives them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import stripe

from services.errors import PaymentProviderError, StripeNotConfigured
from services.metrics import Metrics

log = logging.getLogger(__name__)

WEBHOOK_TOLERANCE_SECONDS = 300
# Pages a list call reads at most (100 items each): beyond that it logs and stops.
MAX_PAGES = 50
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class InvalidWebhook(Exception):
    """A webhook body that is not provably from Stripe, or too old, or too far ahead."""


def verify_webhook(
    payload: bytes,
    signature_header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int = WEBHOOK_TOLERANCE_SECONDS,
) -> None:
    """Stripe's `t=…,v1=…` scheme, checked against each configured secret.

    Several secrets are accepted during a rotation. The SDK rejects stale timestamps; we
    also reject ones from beyond the tolerance in the future. The header is checked for
    shape first (a timestamp of at most 12 ASCII digits), so no header can make the check
    itself fail.
    """
    if not signature_header:
        raise InvalidWebhook("missing Stripe-Signature header")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidWebhook("body is not UTF-8") from exc
    timestamps = [
        part.strip()[2:] for part in signature_header.split(",") if part.strip().startswith("t=")
    ]
    if len(timestamps) != 1 or not _TIMESTAMP.fullmatch(timestamps[0]):
        raise InvalidWebhook("malformed Stripe-Signature header")
    if int(timestamps[0]) > time.time() + tolerance:
        raise InvalidWebhook("timestamp is in the future")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, signature_header, secret, tolerance)
        except stripe.SignatureVerificationError as exc:
            if "tolerance" in str(exc):
                raise InvalidWebhook("timestamp outside the tolerance") from exc
            continue
        return
    raise InvalidWebhook("no signature matches")


class CustomerGone(Exception):
    """Stripe has no such customer any more (deleted, or never existed in this account)."""

    def __init__(self, customer_id: str) -> None:
        super().__init__(customer_id)
        self.customer_id = customer_id


class NotOpen(Exception):
    """A Checkout session that is no longer open (completed or expired) could not be
    expired."""


class StripeBudget(Protocol):
    """Stripe's rate limit, shared by every process: `take` waits for this call's turn."""

    async def take(self) -> None: ...

    async def back_off(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class StripeCustomer:
    id: str
    email: str | None
    name: str | None
    phone: str | None
    created: int  # Unix seconds
    metadata: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StripeSubscription:
    id: str
    customer_id: str
    status: str
    price_id: str | None  # of the first item
    item_id: str | None  # the first item's, for a price swap
    cancel_at_period_end: bool
    cancel_at: int | None  # Unix seconds
    current_period_end: int | None  # Unix seconds: the latest of the items' period ends
    period_ends: tuple[int, ...]  # Unix seconds: each item's current period end
    trial_end: int | None  # Unix seconds
    created: int  # Unix seconds
    metadata: Mapping[str, str]
    latest_invoice_id: str | None
    latest_invoice_paid: int  # smallest currency unit; 0 when unknown or nothing was paid


@dataclass(frozen=True, slots=True)
class StripeInvoice:
    id: str
    customer_id: str
    subscription_id: str | None  # from `parent.subscription_details` on this API version
    number: str | None
    status: str  # draft, open, paid, uncollectible or void
    currency: str
    amount_due: int  # the currency's smallest unit
    amount_paid: int  # the currency's smallest unit
    created: int  # Unix seconds
    period_start: int | None  # Unix seconds
    period_end: int | None  # Unix seconds
    hosted_invoice_url: str | None
    invoice_pdf: str | None


@dataclass(frozen=True, slots=True)
class InvoicePreview:
    """What the next invoice would charge (`POST /v1/invoices/create_preview`)."""

    amount_due: int  # the currency's smallest unit
    currency: str


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    id: str
    url: str | None
    status: str  # open, complete or expired
    expires_at: int  # Unix seconds
    customer_deleted: bool = False  # known only when retrieved (its customer expanded)


def _as_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def _customer(obj: Any) -> StripeCustomer:
    data = _as_dict(obj)
    return StripeCustomer(
        id=data["id"],
        email=data.get("email"),
        name=data.get("name"),
        phone=data.get("phone"),
        created=int(data.get("created") or 0),
        metadata=dict(data.get("metadata") or {}),
        raw=data,
    )


def _id_of(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def subscription_from_dict(data: Mapping[str, Any]) -> StripeSubscription:
    """A subscription as this API version shapes it: the period end lives on its items."""
    items = (data.get("items") or {}).get("data") or []
    first = items[0] if items else {}
    period_ends = [item["current_period_end"] for item in items if item.get("current_period_end")]
    latest = data.get("latest_invoice")
    paid = latest.get("amount_paid") if isinstance(latest, Mapping) else 0
    return StripeSubscription(
        id=data["id"],
        customer_id=_id_of(data.get("customer")) or "",
        status=data["status"],
        price_id=_id_of(first.get("price")),
        item_id=first.get("id"),
        cancel_at_period_end=bool(data.get("cancel_at_period_end")),
        cancel_at=data.get("cancel_at"),
        current_period_end=max(period_ends) if period_ends else None,
        period_ends=tuple(period_ends),
        trial_end=data.get("trial_end"),
        created=int(data.get("created") or 0),
        metadata=dict(data.get("metadata") or {}),
        latest_invoice_id=_id_of(latest),
        latest_invoice_paid=paid if isinstance(paid, int) else 0,
    )


def invoice_from_dict(data: Mapping[str, Any]) -> StripeInvoice:
    parent = data.get("parent") or {}
    details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
    subscription = details.get("subscription") if isinstance(details, Mapping) else None
    return StripeInvoice(
        id=data["id"],
        customer_id=_id_of(data.get("customer")) or "",
        subscription_id=_id_of(subscription),
        number=data.get("number"),
        status=data.get("status") or "draft",
        currency=data.get("currency") or "",
        amount_due=int(data.get("amount_due") or 0),
        amount_paid=int(data.get("amount_paid") or 0),
        created=int(data.get("created") or 0),
        period_start=data.get("period_start"),
        period_end=data.get("period_end"),
        hosted_invoice_url=data.get("hosted_invoice_url"),
        invoice_pdf=data.get("invoice_pdf"),
    )


def _checkout_session(obj: Any) -> CheckoutSession:
    data = _as_dict(obj)
    customer = data.get("customer")
    return CheckoutSession(
        id=data["id"],
        url=data.get("url"),
        status=data["status"],
        expires_at=int(data["expires_at"]),
        customer_deleted=isinstance(customer, Mapping) and bool(customer.get("deleted")),
    )


UNREACHABLE = "We could not reach our payment provider. Please try again in a few minutes."
BUSY = "Our payment provider is busy right now. Please try again in a minute."
REFUSED = "Our payment provider could not process this request. Please contact support."
DECLINED = "Your card was declined. Update your payment method and try again."
# A card whose bank asks the cardholder to confirm the payment (3-D Secure, SCA): that needs
# the cardholder on Stripe's page, which the billing portal provides.
AUTHENTICATION_REQUIRED = (
    "Your bank asks you to confirm this payment, which cannot be done here: make the change "
    "in the billing portal."
)


def outcome_unknown(error: PaymentProviderError) -> bool:
    """Whether Stripe may have acted, or may still act, on a request that failed: its answer
    never came (the connection failed, the deadline passed), or the answer was a 5xx or a
    409. Stripe asks for a 500 to be treated as indeterminate, and the SDK's own retries
    hide what the earlier tries did (the first may have acted and lost its answer, the last
    got a 500); a 409 means the same idempotency key is still in use by that request. A
    refusal (4xx: declined, invalid, not found) is known: nothing was done."""
    return isinstance(error.__cause__, (stripe.APIConnectionError, stripe.APIError, TimeoutError))


# Stripe's codes for a payment the cardholder must confirm (3-D Secure): as a decline code,
# or as the error of a subscription change made with `payment_behavior=error_if_incomplete`.
_NEEDS_AUTHENTICATION = frozenset(
    {"authentication_required", "invoice_payment_intent_requires_action"}
)


def _needs_authentication(exc: stripe.StripeError) -> bool:
    codes = {exc.code, getattr(exc.error, "decline_code", None)}
    return not _NEEDS_AUTHENTICATION.isdisjoint(codes)


class StripeGateway:
    def __init__(
        self,
        api_key: str | None,
        *,
        api_base: str | None = None,
        timeout_seconds: float = 8.0,
        max_network_retries: int = 2,
        metrics: Metrics | None = None,
        budget: StripeBudget | None = None,
    ) -> None:
        self._metrics = metrics
        self._budget = budget
        self._http: stripe.HTTPXClient | None = None
        self._client: stripe.StripeClient | None = None
        # Bounds the whole call, the SDK's retries and backoff included.
        self.deadline = timeout_seconds * (max_network_retries + 1) + 2 * max_network_retries
        if api_key:
            self._http = stripe.HTTPXClient(
                timeout=httpx.Timeout(timeout_seconds, connect=min(3.0, timeout_seconds))
            )
            self._client = stripe.StripeClient(
                api_key,
                base_addresses={"api": api_base} if api_base else None,
                http_client=self._http,
                max_network_retries=max_network_retries,
            )

    @property
    def configured(self) -> bool:
        return self._client is not None

    def require(self) -> stripe.StripeClient:
        if self._client is None:
            raise StripeNotConfigured(
                "Payments are not set up on this server (no STRIPE_SECRET_KEY)."
            )
        return self._client

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close_async()  # type: ignore[no-untyped-call]

    async def _call(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run one SDK call, timed and counted; failures become errors a user can act on."""
        if self._budget is not None:
            await self._budget.take()
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await self._translate(what, call())
        except PaymentProviderError as exc:
            outcome = type(exc.__cause__).__name__ if exc.__cause__ else "error"
            if isinstance(exc.__cause__, stripe.RateLimitError) and self._budget is not None:
                await self._budget.back_off(1.0)
            raise
        finally:
            if self._metrics is not None:
                self._metrics.stripe_calls.labels(what, outcome).inc()
                self._metrics.stripe_seconds.labels(what).observe(time.perf_counter() - started)

    async def _translate(self, what: str, call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self.deadline):
                return await call
        except TimeoutError as exc:
            log.warning("stripe %s timed out", what)
            raise PaymentProviderError(UNREACHABLE, retryable=True) from exc
        except stripe.RateLimitError as exc:
            log.warning("stripe %s rate limited (request %s)", what, exc.request_id)
            raise PaymentProviderError(BUSY, retryable=True) from exc
        except (stripe.APIConnectionError, stripe.APIError) as exc:
            log.warning(
                "stripe %s failed: %s (request %s)", what, type(exc).__name__, exc.request_id
            )
            raise PaymentProviderError(UNREACHABLE, retryable=True) from exc
        except stripe.AuthenticationError as exc:
            log.error("stripe rejected our API key during %s", what)
            raise PaymentProviderError(UNREACHABLE, retryable=False) from exc
        except stripe.CardError as exc:
            log.info("stripe %s: card declined (%s, request %s)", what, exc.code, exc.request_id)
            message = AUTHENTICATION_REQUIRED if _needs_authentication(exc) else DECLINED
            raise PaymentProviderError(message, retryable=False) from exc
        except stripe.StripeError as exc:
            if _needs_authentication(exc):
                log.info(
                    "stripe %s: payment needs authentication (request %s)", what, exc.request_id
                )
                raise PaymentProviderError(AUTHENTICATION_REQUIRED, retryable=False) from exc
            # An object gone (a deleted draft, a customer deleted in the Dashboard) is an
            # answer its caller expects and handles; anything else Stripe refused is ours.
            gone = getattr(exc, "code", None) == "resource_missing"
            log.log(
                logging.INFO if gone else logging.ERROR,
                "stripe %s refused: %s %s (request %s)",
                what,
                type(exc).__name__,
                getattr(exc, "code", None),
                exc.request_id,
            )
            raise PaymentProviderError(REFUSED, retryable=False) from exc

    async def _list_all(
        self, what: str, list_page: Callable[..., Awaitable[Any]], params: dict[str, Any]
    ) -> list[Any]:
        """Every item of a list, page by page (100 a page), each page a call of its own."""
        items, _ = await self._list_pages(what, list_page, params)
        return items

    async def _list_pages(
        self, what: str, list_page: Callable[..., Awaitable[Any]], params: dict[str, Any]
    ) -> tuple[list[Any], bool]:
        """The items of a list, page by page, and whether the last page was reached (not
        when it stopped after `MAX_PAGES` pages)."""
        items: list[Any] = []
        page_params = {**params, "limit": 100}
        for _ in range(MAX_PAGES):
            page = await self._call(what, lambda: list_page(dict(page_params)))
            items.extend(page.data)
            if not page.has_more or not page.data:
                return items, True
            page_params["starting_after"] = page.data[-1].id
        log.warning("stripe %s: stopped after %d pages (%d items)", what, MAX_PAGES, len(items))
        return items, False

    @staticmethod
    def _gone(exc: BaseException, param: str) -> bool:
        cause = exc.__cause__
        return (
            isinstance(cause, stripe.InvalidRequestError)
            and cause.code == "resource_missing"
            and (cause.param or "") in (param, "id")
        )

    # --- customers ----------------------------------------------------------------------

    async def find_customers_by_email(self, email: str) -> list[StripeCustomer]:
        """Customers whose email is exactly `email` (Stripe's filter is case-sensitive)."""
        client = self.require()
        found = await self._list_all(
            "customers.list", client.v1.customers.list_async, {"email": email}
        )
        return [_customer(c) for c in found]

    async def create_customer(
        self,
        *,
        email: str | None,
        name: str | None,
        phone: str | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeCustomer:
        client = self.require()
        params: dict[str, Any] = {"metadata": dict(metadata)}
        if email:
            params["email"] = email
        if name:
            params["name"] = name
        if phone:
            params["phone"] = phone
        created = await self._call(
            "customers.create",
            lambda: client.v1.customers.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            ),
        )
        return _customer(created)

    async def retrieve_customer(self, customer_id: str) -> StripeCustomer:
        """The customer as Stripe holds it now; `CustomerGone` when deleted or unknown."""
        client = self.require()
        try:
            found = await self._call(
                "customers.retrieve", lambda: client.v1.customers.retrieve_async(customer_id)
            )
        except PaymentProviderError as exc:
            if self._gone(exc, "id"):
                raise CustomerGone(customer_id) from exc
            raise
        if getattr(found, "deleted", False):
            raise CustomerGone(customer_id)
        return _customer(found)

    async def update_customer(
        self, customer_id: str, params: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> StripeCustomer:
        client = self.require()
        options: stripe.RequestOptions = {}
        if idempotency_key:
            options["idempotency_key"] = idempotency_key
        try:
            updated = await self._call(
                "customers.update",
                lambda: client.v1.customers.update_async(customer_id, dict(params), options),  # type: ignore[arg-type]
            )
        except PaymentProviderError as exc:
            if self._gone(exc, "id"):
                raise CustomerGone(customer_id) from exc
            raise
        return _customer(updated)

    async def delete_customer(self, customer_id: str) -> None:
        client = self.require()
        try:
            await self._call(
                "customers.delete", lambda: client.v1.customers.delete_async(customer_id)
            )
        except PaymentProviderError as exc:
            if not self._gone(exc, "id"):
                raise

    # --- checkout and portal ------------------------------------------------------------

    async def create_checkout_session(
        self,
        *,
        customer_id: str,
        price_id: str,
        user_id: str,
        success_url: str,
        cancel_url: str,
        options: Mapping[str, Any] | None = None,
    ) -> CheckoutSession:
        """No key of ours: the SDK gives each call one key that all its retries share.
        `services.billing` keeps a user to one open session, so a second click reuses it.
        `options` are further Checkout parameters (a plan's trial, promotion codes, tax)."""
        client = self.require()
        metadata = {"userId": user_id}
        params: dict[str, Any] = {
            "mode": "subscription",
            "customer": customer_id,
            "line_items": [{"price": price_id, "quantity": 1}],
            "client_reference_id": user_id,
            "metadata": metadata,
            "subscription_data": {"metadata": metadata},
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        for key, value in (options or {}).items():
            if isinstance(value, Mapping) and isinstance(params.get(key), dict):
                params[key] = {**params[key], **value}
            else:
                params[key] = value
        try:
            session = await self._call(
                "checkout.sessions.create",
                lambda: client.v1.checkout.sessions.create_async(params),  # type: ignore[arg-type]
            )
        except PaymentProviderError as exc:
            if self._gone(exc, "customer"):
                raise CustomerGone(customer_id) from exc
            raise
        return _checkout_session(session)

    async def retrieve_checkout_session(self, session_id: str) -> CheckoutSession:
        """The session as Stripe holds it now, and whether its customer was deleted."""
        client = self.require()
        session = await self._call(
            "checkout.sessions.retrieve",
            lambda: client.v1.checkout.sessions.retrieve_async(
                session_id, {"expand": ["customer"]}
            ),
        )
        return _checkout_session(session)

    async def expire_checkout_session(self, session_id: str) -> None:
        """Expire an open session; `NotOpen` when it already completed or expired."""
        client = self.require()
        try:
            await self._call(
                "checkout.sessions.expire",
                lambda: client.v1.checkout.sessions.expire_async(session_id),
            )
        except PaymentProviderError as exc:
            cause = exc.__cause__
            if isinstance(cause, stripe.InvalidRequestError) and cause.http_status == 400:
                raise NotOpen(session_id) from exc
            raise

    async def create_portal_session(
        self, *, customer_id: str, return_url: str, configuration: str | None
    ) -> str:
        client = self.require()
        params: dict[str, Any] = {"customer": customer_id, "return_url": return_url}
        if configuration:
            params["configuration"] = configuration
        try:
            session = await self._call(
                "billing_portal.sessions.create",
                lambda: client.v1.billing_portal.sessions.create_async(params),  # type: ignore[arg-type]
            )
        except PaymentProviderError as exc:
            if self._gone(exc, "customer"):
                raise CustomerGone(customer_id) from exc
            raise
        url: str = session.url
        return url

    async def create_portal_configuration(self, params: Mapping[str, Any]) -> str:
        client = self.require()
        created = await self._call(
            "billing_portal.configurations.create",
            lambda: client.v1.billing_portal.configurations.create_async(dict(params)),  # type: ignore[arg-type]
        )
        configuration_id: str = created.id
        return configuration_id

    async def retrieve_price_product(self, price_id: str) -> str:
        client = self.require()
        price = await self._call(
            "prices.retrieve", lambda: client.v1.prices.retrieve_async(price_id)
        )
        product = price.product
        return product if isinstance(product, str) else str(product.id)

    # --- subscriptions ------------------------------------------------------------------

    async def list_subscriptions(self, customer_id: str) -> list[StripeSubscription]:
        """Every subscription of the customer, in every status, each with what its latest
        invoice had paid."""
        client = self.require()
        found = await self._list_all(
            "subscriptions.list",
            client.v1.subscriptions.list_async,
            {"customer": customer_id, "status": "all", "expand": ["data.latest_invoice"]},
        )
        return [subscription_from_dict(s.to_dict()) for s in found]

    async def update_subscription(
        self, subscription_id: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> StripeSubscription:
        """Change a subscription (cancellation, its item's price); a declined card on the
        proration invoice is `PAYMENT_PROVIDER_ERROR` with a message saying so."""
        client = self.require()
        updated = await self._call(
            "subscriptions.update",
            lambda: client.v1.subscriptions.update_async(
                subscription_id,
                dict(params),  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            ),
        )
        return subscription_from_dict(updated.to_dict())

    async def cancel_subscription(
        self,
        subscription_id: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> StripeSubscription | None:
        """Cancel at once; the canceled subscription, or None when it had ended already (or
        is unknown to Stripe), which counts as done."""
        client = self.require()
        options: stripe.RequestOptions = {}
        if idempotency_key:
            options["idempotency_key"] = idempotency_key
        try:
            canceled = await self._call(
                "subscriptions.cancel",
                lambda: client.v1.subscriptions.cancel_async(
                    subscription_id,
                    dict(params or {}),  # type: ignore[arg-type]
                    options,
                ),
            )
        except PaymentProviderError as exc:
            cause = exc.__cause__
            if self._gone(exc, "id"):
                return None
            if isinstance(cause, stripe.InvalidRequestError) and "canceled" in str(cause):
                return None  # already canceled
            raise
        return subscription_from_dict(canceled.to_dict())

    # --- invoices and entitlements ------------------------------------------------------

    async def list_invoices(
        self, customer_id: str, *, every_page: bool
    ) -> tuple[list[StripeInvoice], bool]:
        """The customer's invoices, newest first: the newest 100, or every one (up to
        `MAX_PAGES` pages); and whether that is all the customer has."""
        client = self.require()
        params = {"customer": customer_id}
        if every_page:
            found, complete = await self._list_pages(
                "invoices.list", client.v1.invoices.list_async, params
            )
        else:
            page = await self._call(
                "invoices.list",
                lambda: client.v1.invoices.list_async({**params, "limit": 100}),  # type: ignore[arg-type]
            )
            found, complete = list(page.data), not page.has_more
        return [invoice_from_dict(i.to_dict()) for i in found], complete

    async def retrieve_invoice(self, invoice_id: str) -> StripeInvoice | None:
        """The invoice, or None when Stripe has none by that ID (a draft deleted since)."""
        client = self.require()
        try:
            found = await self._call(
                "invoices.retrieve", lambda: client.v1.invoices.retrieve_async(invoice_id)
            )
        except PaymentProviderError as exc:
            if self._gone(exc, "invoice"):
                return None
            raise
        return invoice_from_dict(found.to_dict())

    async def preview_price_change(
        self,
        *,
        customer_id: str,
        subscription_id: str,
        item_id: str,
        price_id: str,
        proration_date: int,
    ) -> InvoicePreview:
        """What swapping the item to `price_id` at `proration_date` (Unix seconds) would
        invoice now, with the prorations (`proration_behavior=always_invoice`)."""
        client = self.require()
        params: dict[str, Any] = {
            "customer": customer_id,
            "subscription": subscription_id,
            "subscription_details": {
                "items": [{"id": item_id, "price": price_id}],
                "proration_behavior": "always_invoice",
                "proration_date": proration_date,
            },
        }
        preview = await self._call(
            "invoices.create_preview",
            lambda: client.v1.invoices.create_preview_async(params),  # type: ignore[arg-type]
        )
        return InvoicePreview(amount_due=int(preview.amount_due), currency=preview.currency)

    async def active_entitlements(self, customer_id: str) -> list[str]:
        """The lookup keys of the customer's active Stripe Entitlements."""
        client = self.require()
        found = await self._list_all(
            "entitlements.active_entitlements.list",
            client.v1.entitlements.active_entitlements.list_async,
            {"customer": customer_id},
        )
        return sorted({str(e.lookup_key) for e in found})

    # --- payments -----------------------------------------------------------------------

    async def invoice_payment_intents(self, invoice_id: str) -> list[str]:
        """The PaymentIntents that paid the invoice (its `InvoicePayment`s, paid ones)."""
        client = self.require()
        found = await self._list_all(
            "invoice_payments.list",
            client.v1.invoice_payments.list_async,
            {"invoice": invoice_id},
        )
        intents: list[str] = []
        for payment in found:
            data = _as_dict(payment)
            if data.get("status") != "paid":
                continue
            intent = _id_of((data.get("payment") or {}).get("payment_intent"))
            if intent:
                intents.append(intent)
        return intents

    async def refund_payment_intent(
        self, payment_intent_id: str, *, idempotency_key: str, metadata: Mapping[str, str]
    ) -> None:
        """Refund what remains of the payment, in full; one already refunded counts as done."""
        client = self.require()
        try:
            await self._call(
                "refunds.create",
                lambda: client.v1.refunds.create_async(
                    {"payment_intent": payment_intent_id, "metadata": dict(metadata)},
                    {"idempotency_key": idempotency_key},
                ),
            )
        except PaymentProviderError as exc:
            cause = exc.__cause__
            if isinstance(cause, stripe.InvalidRequestError) and cause.code in (
                "charge_already_refunded",
            ):
                return
            raise
