"""Checkout and the Billing Portal: where a user starts paying and manages what they pay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from db import customers as db_customers
from db import subscriptions as db_subscriptions
from db.connection import Connection
from db.users import UserRecord
from services import customers, rate_limits
from services.errors import AlreadySubscribed, BadUserInput, EmailNotVerified, NotFound
from services.plans import PlanCatalog
from services.stripe_gateway import CheckoutSessionCreated, CustomerGone, StripeGateway

PAID_STATUSES = frozenset({"active", "trialing", "past_due"})


def checkout_urls(app_url: str) -> tuple[str, str]:
    """Where Stripe sends the user back; the SPA reads `checkout` and `session_id`."""
    success = f"{app_url}/billing?checkout=success&session_id={{CHECKOUT_SESSION_ID}}"
    return success, f"{app_url}/billing?checkout=canceled"


def portal_return_url(app_url: str) -> str:
    return f"{app_url}/billing"


async def create_checkout_session(
    conn: Connection,
    stripe: StripeGateway,
    plans: PlanCatalog,
    app_url: str,
    user: UserRecord,
    plan_id: str,
    *,
    rate_limit: rate_limits.Bucket,
) -> CheckoutSessionCreated:
    await rate_limits.check(conn, user.id, rate_limit)
    stripe.require()
    if not user.email_verified:
        raise EmailNotVerified("Verify your email address before subscribing.")
    plan = plans.get(plan_id)
    if plan is None:
        raise BadUserInput(f"Unknown plan {plan_id!r}.", field="planId")
    if plan.price_id is None:
        raise BadUserInput(f"The {plan.name} plan cannot be bought.", field="planId")
    current = await db_subscriptions.get(conn, user.id)
    if current and current.stripe_subscription_id and current.status in PAID_STATUSES:
        raise AlreadySubscribed("You already have a subscription; change it in the billing portal.")
    success_url, cancel_url = checkout_urls(app_url)
    customer = await customers.get_or_create(conn, stripe, user)
    for _ in range(2):
        try:
            return await stripe.create_checkout_session(
                customer_id=customer.stripe_customer_id,
                price_id=plan.price_id,
                user_id=user.id,
                success_url=success_url,
                cancel_url=cancel_url,
            )
        except CustomerGone as gone:
            customer = await customers.get_or_create(conn, stripe, user, replacing=gone.customer_id)
    raise AssertionError("a customer created a moment ago cannot be gone")  # pragma: no cover


async def create_portal_session(
    conn: Connection,
    stripe: StripeGateway,
    app_url: str,
    configuration_id: str | None,
    user: UserRecord,
    *,
    rate_limit: rate_limits.Bucket,
) -> str:
    await rate_limits.check(conn, user.id, rate_limit)
    stripe.require()
    customer = await db_customers.get(conn, user.id)
    if customer is None:
        raise NotFound("You have no billing account yet: subscribe to a plan first.")
    try:
        return await stripe.create_portal_session(
            customer_id=customer.stripe_customer_id,
            return_url=portal_return_url(app_url),
            configuration=configuration_id,
        )
    except CustomerGone as gone:
        async with conn.transaction():  # as if its `customer.deleted` had come
            await db_customers.lock_for_user(conn, user.id)
            await customers.forget_gone(conn, user.id, gone.customer_id)
        raise NotFound(
            "Your billing account no longer exists: subscribe to a plan to create a new one."
        ) from gone


CANCELLATION_REASONS = [
    "too_expensive",
    "missing_features",
    "switched_service",
    "unused",
    "customer_service",
    "too_complex",
    "low_quality",
    "other",
]


async def portal_configuration_params(
    stripe: StripeGateway, plans: PlanCatalog, app_url: str
) -> Mapping[str, Any]:
    """What the portal lets a customer do; plan switching among the configured plans."""
    products: dict[str, list[str]] = {}
    for plan in plans.all:
        if plan.price_id:
            product = await stripe.retrieve_price_product(plan.price_id)
            products.setdefault(product, []).append(plan.price_id)
    features: dict[str, Any] = {
        "payment_method_update": {"enabled": True},
        "invoice_history": {"enabled": True},
        "customer_update": {
            "enabled": True,
            "allowed_updates": ["email", "name", "phone", "address", "tax_id"],
        },
        "subscription_cancel": {
            "enabled": True,
            "mode": "at_period_end",
            "cancellation_reason": {"enabled": True, "options": CANCELLATION_REASONS},
        },
    }
    if products:
        features["subscription_update"] = {
            "enabled": True,
            "default_allowed_updates": ["price"],
            "proration_behavior": "create_prorations",
            "products": [
                {"product": product, "prices": prices} for product, prices in products.items()
            ],
        }
    return {
        "business_profile": {"headline": "Manage your subscription, payment method and invoices"},
        "default_return_url": portal_return_url(app_url),
        "features": features,
    }


async def create_portal_configuration(
    stripe: StripeGateway, plans: PlanCatalog, app_url: str
) -> str:
    stripe.require()
    return await stripe.create_portal_configuration(
        await portal_configuration_params(stripe, plans, app_url)
    )
