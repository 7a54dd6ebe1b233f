"""Checkout, the Billing Portal and `syncSubscription`: where a user starts paying, manages
what they pay, and sees it at once.

Each runs in the user's turn (`services.single_flight`): one billing operation per user at a
time, across processes, with no connection held while Stripe is asked. Rate limits are
counted first, outside any transaction.

**One checkout at a time** (contract): a user has at most one open Checkout session. Asked
again for the plan (and price) of the open session, `create_checkout_session` returns that
same session once Stripe confirms it is still open; for another plan it expires the open
one first. A session that completed meanwhile (its webhook not yet processed) means the
user may be subscribed now: their subscriptions are re-read and the rule of
`ALREADY_SUBSCRIBED` applied again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from db import checkout_sessions as db_checkout
from db import customers as db_customers
from db.checkout_sessions import CheckoutSessionRecord
from db.connection import Pool
from db.locks import user_transaction
from db.subscriptions import SubscriptionRecord
from db.users import UserRecord
from services import customers, invoices, rate_limits, subscriptions
from services.errors import AlreadySubscribed, BadUserInput, EmailNotVerified, NotFound
from services.plans import Plan, PlanCatalog
from services.single_flight import SingleFlight
from services.stripe_gateway import CustomerGone, NotOpen, StripeGateway

log = logging.getLogger(__name__)

ALREADY_SUBSCRIBED = "You already have a subscription; change it in the billing portal."


def checkout_urls(app_url: str) -> tuple[str, str]:
    """Where Stripe sends the user back; the SPA reads `checkout` and `session_id`."""
    success = f"{app_url}/billing?checkout=success&session_id={{CHECKOUT_SESSION_ID}}"
    return success, f"{app_url}/billing?checkout=canceled"


def portal_return_url(app_url: str) -> str:
    return f"{app_url}/billing"


def had_subscription(rows: list[SubscriptionRecord]) -> bool:
    """Whether the user has had a Stripe subscription: a trial, or one that started (an
    incomplete one whose first payment never went through does not count; nor does the free
    plan)."""
    return any(
        row.stripe_subscription_id is not None
        and (row.trial_end is not None or row.status not in ("incomplete", "incomplete_expired"))
        for row in rows
    )


def checkout_options(plan: Plan, *, trial_allowed: bool) -> dict[str, Any]:
    """The plan's own Checkout parameters (plans file: trial, promotion codes, tax); the
    trial only when `trial_allowed` (one trial per user: see `had_subscription`)."""
    options: dict[str, Any] = {}
    if plan.trial_days and trial_allowed:
        options["subscription_data"] = {"trial_period_days": plan.trial_days}
    if plan.allow_promotion_codes:
        options["allow_promotion_codes"] = True
    if plan.automatic_tax:
        options["automatic_tax"] = {"enabled": True}
        # Stripe Tax needs the customer's address; Checkout refuses automatic tax for a
        # customer without one unless it may save the address entered (and later renewals
        # are taxed from it).
        options["customer_update"] = {"address": "auto"}
    return options


async def create_checkout_session(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    single_flight: SingleFlight,
    app_url: str,
    user: UserRecord,
    plan_id: str,
    *,
    rate_limit: rate_limits.Bucket,
) -> CheckoutSessionRecord:
    """The user's open Checkout session for the plan, new or reused.

    Raises `RATE_LIMITED`, `STRIPE_NOT_CONFIGURED`, `EMAIL_NOT_VERIFIED`, `BAD_USER_INPUT`
    (unknown plan, or one without a price), `ALREADY_SUBSCRIBED` (by the rule of
    `services.subscriptions`), `PAYMENT_PROVIDER_ERROR`; nothing is changed by a refusal.
    """
    await rate_limits.check(pool, user.id, rate_limit)
    stripe.require()
    if not user.email_verified:
        raise EmailNotVerified("Verify your email address before subscribing.")
    plan = plans.get(plan_id)
    if plan is None:
        raise BadUserInput(f"Unknown plan {plan_id!r}.", field="planId")
    if plan.price_id is None:
        raise BadUserInput(f"The {plan.name} plan cannot be bought.", field="planId")
    price_id = plan.price_id
    async with single_flight.turn(user.id):
        await _refuse_if_subscribed(pool, user.id)
        async with pool.connection() as pg:
            open_sessions = await db_checkout.open_for(pg, user.id)
            linked = await db_customers.get(pg, user.id)
        for session in open_sessions:
            if (
                (session.plan_id, session.price_id) == (plan.id, price_id)
                and linked is not None
                and session.stripe_customer_id == linked.stripe_customer_id
                and await _still_open(pool, stripe, plans, user.id, session)
            ):
                return session
        async with pool.connection() as pg:
            open_sessions = await db_checkout.open_for(pg, user.id)
        customer = await customers.get_or_create(pool, stripe, plans, user)
        # An adopted customer may pay already, or have had its trial.
        rows = await _refuse_if_subscribed(pool, user.id)
        for session in open_sessions:
            await _expire(pool, stripe, plans, user.id, session)
        success_url, cancel_url = checkout_urls(app_url)
        for _ in range(2):
            try:
                created = await stripe.create_checkout_session(
                    customer_id=customer.stripe_customer_id,
                    price_id=price_id,
                    user_id=user.id,
                    success_url=success_url,
                    cancel_url=cancel_url,
                    options=checkout_options(plan, trial_allowed=not had_subscription(rows)),
                )
                break
            except CustomerGone as gone:
                customer = await customers.get_or_create(
                    pool, stripe, plans, user, replacing=gone.customer_id
                )
        else:  # pragma: no cover
            raise AssertionError("a customer created a moment ago cannot be gone")
        async with user_transaction(pool, user.id) as pg:
            await db_checkout.record(
                pg,
                session_id=created.id,
                user_id=user.id,
                stripe_customer_id=customer.stripe_customer_id,
                plan_id=plan.id,
                price_id=price_id,
                url=created.url,
                expires_at=datetime.fromtimestamp(created.expires_at, UTC),
            )
            found = await db_checkout.get(pg, created.id)
        assert found is not None
        return found


async def _still_open(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    user_id: str,
    session: CheckoutSessionRecord,
) -> bool:
    """Whether Stripe still holds the session open for a customer it still has. A session
    paid meanwhile (its webhook not yet here) may have subscribed the user: their
    subscriptions are re-read and checkout refused if so; a deleted customer is ended as
    its `customer.deleted` would end it."""
    found = await stripe.retrieve_checkout_session(session.id)
    if found.status == "open" and not found.customer_deleted:
        return True
    async with user_transaction(pool, user_id) as pg:
        if found.status != "open":
            await db_checkout.finish(pg, session.id, found.status)
        if found.customer_deleted:
            await customers.customer_gone(pg, user_id, session.stripe_customer_id)
    if found.status == "complete" and not found.customer_deleted:
        await subscriptions.refresh(pool, stripe, plans, user_id, session.stripe_customer_id)
        await _refuse_if_subscribed(pool, user_id)
    return False


async def _refuse_if_subscribed(pool: Pool, user_id: str) -> list[SubscriptionRecord]:
    """The user's subscriptions; `ALREADY_SUBSCRIBED` when one blocks checkout."""
    rows = await subscriptions.of_user(pool, user_id)
    if subscriptions.blocks_checkout(rows):
        raise AlreadySubscribed(ALREADY_SUBSCRIBED)
    return rows


async def _expire(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    user_id: str,
    session: CheckoutSessionRecord,
) -> None:
    """Expire the user's other open session; if it completed meanwhile, the user may be
    subscribed now, and checkout is refused when they are."""
    try:
        await stripe.expire_checkout_session(session.id)
        status = "expired"
    except NotOpen:
        status = (await stripe.retrieve_checkout_session(session.id)).status
    async with user_transaction(pool, user_id) as pg:
        await db_checkout.finish(pg, session.id, status)
    if status == "complete":
        await subscriptions.refresh(pool, stripe, plans, user_id, session.stripe_customer_id)
        await _refuse_if_subscribed(pool, user_id)


async def expire_open_sessions(pool: Pool, stripe: StripeGateway, user_id: str) -> None:
    """Expire every open session of the user (their account is being deleted)."""
    async with pool.connection() as pg:
        open_sessions = await db_checkout.open_for(pg, user_id)
    for session in open_sessions:
        try:
            await stripe.expire_checkout_session(session.id)
        except NotOpen:
            continue


async def create_portal_session(
    pool: Pool,
    stripe: StripeGateway,
    app_url: str,
    configuration_id: str | None,
    user: UserRecord,
    *,
    rate_limit: rate_limits.Bucket,
) -> str:
    """A Billing Portal URL for the user's customer. Raises `RATE_LIMITED`,
    `STRIPE_NOT_CONFIGURED`, `NOT_FOUND` (no customer, or Stripe no longer has it: then it
    is ended as its `customer.deleted` would), `PAYMENT_PROVIDER_ERROR`."""
    await rate_limits.check(pool, user.id, rate_limit)
    stripe.require()
    customer = await customers.current(pool, user.id)
    if customer is None:
        raise NotFound("You have no billing account yet: subscribe to a plan first.")
    try:
        return await stripe.create_portal_session(
            customer_id=customer.stripe_customer_id,
            return_url=portal_return_url(app_url),
            configuration=configuration_id,
        )
    except CustomerGone as gone:
        async with user_transaction(pool, user.id) as pg:
            await customers.customer_gone(pg, user.id, gone.customer_id)
        raise NotFound(
            "Your billing account no longer exists: subscribe to a plan to create a new one."
        ) from gone


async def sync_subscription(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    single_flight: SingleFlight,
    user: UserRecord,
    *,
    rate_limit: rate_limits.Bucket,
) -> SubscriptionRecord | None:
    """`syncSubscription`: the user's subscriptions, and their newest invoices (the first
    one of a Checkout just paid), re-read from Stripe now; the subscription that matters, or
    None for a user without a Stripe customer. Concurrent calls of one user share one read.
    Raises `RATE_LIMITED`, `STRIPE_NOT_CONFIGURED`, `PAYMENT_PROVIDER_ERROR`.
    """
    await rate_limits.check(pool, user.id, rate_limit)
    stripe.require()

    async def read() -> SubscriptionRecord | None:
        async with pool.connection() as pg:
            customer = await db_customers.get(pg, user.id)
        if customer is None:
            return None
        await subscriptions.refresh(pool, stripe, plans, user.id, customer.stripe_customer_id)
        await invoices.refresh(pool, stripe, user.id, customer.stripe_customer_id)
        return subscriptions.the_subscription(await subscriptions.of_user(pool, user.id))

    return await single_flight.shared(user.id, "sync", read)


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
