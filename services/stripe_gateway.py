"""The one adapter to Stripe: the official SDK's async methods over HTTPX.

No other module imports `stripe`. Calls return plain dataclasses, and every Stripe failure
leaves here as a domain error a user can act on (`PAYMENT_PROVIDER_ERROR`,
`STRIPE_NOT_CONFIGURED`) or as `CustomerGone` for a customer Stripe no longer has.
The SDK's own network retries (with its backoff and idempotency keys) are kept; each try
has a short timeout so a GraphQL request never hangs on Stripe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import stripe

from services.errors import PaymentProviderError, StripeNotConfigured
from services.metrics import Metrics

log = logging.getLogger(__name__)

WEBHOOK_TOLERANCE_SECONDS = 300


class InvalidWebhook(Exception):
    """A webhook body that is not provably from Stripe, or too old, or too far ahead."""


def verify_webhook(
    payload: bytes,
    signature_header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int = WEBHOOK_TOLERANCE_SECONDS,
) -> None:
    """Stripe's `t=…,v1=…` scheme, checked by the SDK against each configured secret.

    Several secrets are accepted during a rotation. The SDK rejects stale timestamps; we
    also reject ones from beyond the tolerance in the future.
    """
    if not signature_header:
        raise InvalidWebhook("missing Stripe-Signature header")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidWebhook("body is not UTF-8") from exc
    timestamps = [part[2:] for part in signature_header.split(",") if part.strip().startswith("t=")]
    if len(timestamps) != 1 or not timestamps[0].strip().isdigit():
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


@dataclass(frozen=True, slots=True)
class StripeCustomer:
    id: str
    email: str | None
    name: str | None
    phone: str | None
    created: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StripeSubscription:
    id: str
    status: str
    price_id: str | None
    cancel_at_period_end: bool
    current_period_end: int | None
    created: int


@dataclass(frozen=True, slots=True)
class CheckoutSessionCreated:
    id: str
    url: str


def _customer(obj: Any) -> StripeCustomer:
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return StripeCustomer(
        id=data["id"],
        email=data.get("email"),
        name=data.get("name"),
        phone=data.get("phone"),
        created=int(data.get("created") or 0),
        metadata=dict(data.get("metadata") or {}),
        raw=data,
    )


def subscription_from_dict(data: Mapping[str, Any]) -> StripeSubscription:
    """A subscription as this API version shapes it: the period end lives on its items."""
    items = (data.get("items") or {}).get("data") or []
    first = items[0] if items else {}
    price = first.get("price") or {}
    period_ends = [item["current_period_end"] for item in items if item.get("current_period_end")]
    return StripeSubscription(
        id=data["id"],
        status=data["status"],
        price_id=price.get("id") if isinstance(price, Mapping) else price,
        cancel_at_period_end=bool(data.get("cancel_at_period_end")),
        current_period_end=max(period_ends) if period_ends else None,
        created=int(data.get("created") or 0),
    )


UNREACHABLE = "We could not reach our payment provider. Please try again in a few minutes."
BUSY = "Our payment provider is busy right now. Please try again in a minute."
REFUSED = "Our payment provider could not process this request. Please contact support."


class StripeGateway:
    def __init__(
        self,
        api_key: str | None,
        *,
        api_base: str | None = None,
        timeout_seconds: float = 8.0,
        max_network_retries: int = 2,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._http: stripe.HTTPXClient | None = None
        self._client: stripe.StripeClient | None = None
        # Bounds the whole call, the SDK's retries and backoff included.
        self._deadline = timeout_seconds * (max_network_retries + 1) + 2 * max_network_retries
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

    async def _call(self, what: str, call: Any) -> Any:
        """Run one SDK call, timed and counted; failures become errors a user can act on."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await self._translate(what, call)
        except PaymentProviderError as exc:
            outcome = type(exc.__cause__).__name__ if exc.__cause__ else "error"
            raise
        finally:
            if self._metrics is not None:
                self._metrics.stripe_calls.labels(what, outcome).inc()
                self._metrics.stripe_seconds.labels(what).observe(time.perf_counter() - started)

    async def _translate(self, what: str, call: Any) -> Any:
        try:
            async with asyncio.timeout(self._deadline):
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
        except stripe.StripeError as exc:
            log.error(
                "stripe %s refused: %s %s (request %s)",
                what,
                type(exc).__name__,
                getattr(exc, "code", None),
                exc.request_id,
            )
            raise PaymentProviderError(REFUSED, retryable=False) from exc

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
        client = self.require()
        found = await self._call(
            "customers.list", client.v1.customers.list_async({"email": email, "limit": 10})
        )
        return [_customer(c) for c in found.data]

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
            client.v1.customers.create_async(
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
                "customers.retrieve", client.v1.customers.retrieve_async(customer_id)
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
                client.v1.customers.update_async(customer_id, dict(params), options),  # type: ignore[arg-type]
            )
        except PaymentProviderError as exc:
            if self._gone(exc, "id"):
                raise CustomerGone(customer_id) from exc
            raise
        return _customer(updated)

    async def delete_customer(self, customer_id: str) -> None:
        client = self.require()
        try:
            await self._call("customers.delete", client.v1.customers.delete_async(customer_id))
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
    ) -> CheckoutSessionCreated:
        """No key of ours: the SDK gives each call one key that all its retries share.

        A deterministic key would replay an old session (even for a customer deleted since)
        for as long as Stripe keeps the key; two clicks making two open sessions is harmless.
        """
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
        try:
            session = await self._call(
                "checkout.sessions.create",
                client.v1.checkout.sessions.create_async(params),  # type: ignore[arg-type]
            )
        except PaymentProviderError as exc:
            if self._gone(exc, "customer"):
                raise CustomerGone(customer_id) from exc
            raise
        return CheckoutSessionCreated(id=session.id, url=session.url)

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
                client.v1.billing_portal.sessions.create_async(params),  # type: ignore[arg-type]
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
            client.v1.billing_portal.configurations.create_async(dict(params)),  # type: ignore[arg-type]
        )
        configuration_id: str = created.id
        return configuration_id

    async def retrieve_price_product(self, price_id: str) -> str:
        client = self.require()
        price = await self._call("prices.retrieve", client.v1.prices.retrieve_async(price_id))
        product = price.product
        return product if isinstance(product, str) else str(product.id)

    # --- subscriptions ------------------------------------------------------------------

    async def list_subscriptions(self, customer_id: str) -> list[StripeSubscription]:
        client = self.require()
        found = await self._call(
            "subscriptions.list",
            client.v1.subscriptions.list_async(
                {"customer": customer_id, "status": "all", "limit": 100}
            ),
        )
        return [subscription_from_dict(s.to_dict()) for s in found.data]

    async def cancel_subscription(self, subscription_id: str) -> None:
        client = self.require()
        try:
            await self._call(
                "subscriptions.cancel", client.v1.subscriptions.cancel_async(subscription_id)
            )
        except PaymentProviderError as exc:
            if not self._gone(exc, "id"):
                raise
