"""Bring our copy of a user's subscription in line with what Stripe holds now.

Every path that learns "something changed" (webhooks, `syncSubscription`, the recovery
command) re-reads the customer's subscriptions from Stripe under the user's lock, so the
order in which events arrive cannot make older state win.
"""

from __future__ import annotations

from datetime import UTC, datetime

from db import customers as db_customers
from db import subscriptions as db_subscriptions
from db.connection import Connection
from db.subscriptions import SubscriptionRecord
from db.users import UserRecord
from services import rate_limits
from services.plans import FREE_PLAN_ID, PlanCatalog
from services.stripe_gateway import StripeGateway, StripeSubscription

ENDED = frozenset({"canceled", "incomplete_expired"})


def current_subscription(subscriptions: list[StripeSubscription]) -> StripeSubscription | None:
    """The one that matters: a live subscription before an ended one, newest first."""
    if not subscriptions:
        return None
    return max(subscriptions, key=lambda s: (s.status not in ENDED, s.created, s.id))


async def sync_customer(
    conn: Connection, stripe: StripeGateway, plans: PlanCatalog, user_id: str, customer_id: str
) -> bool:
    """Write the current state; the caller holds the user's lock inside a transaction."""
    current = current_subscription(await stripe.list_subscriptions(customer_id))
    if current is None:
        return await db_subscriptions.write_state(
            conn,
            user_id,
            plan_id=FREE_PLAN_ID,
            status="active",
            stripe_subscription_id=None,
            price_id=None,
            cancel_at_period_end=False,
            current_period_end=None,
        )
    plan = plans.for_price(current.price_id)
    return await db_subscriptions.write_state(
        conn,
        user_id,
        # A price no plan knows still shows as what it is rather than as free.
        plan_id=plan.id if plan else (current.price_id or FREE_PLAN_ID),
        status=current.status,
        stripe_subscription_id=current.id,
        price_id=current.price_id,
        cancel_at_period_end=current.cancel_at_period_end,
        current_period_end=(
            datetime.fromtimestamp(current.current_period_end, UTC)
            if current.current_period_end
            else None
        ),
    )


async def sync_for_user(
    conn: Connection,
    stripe: StripeGateway,
    plans: PlanCatalog,
    user: UserRecord,
    *,
    rate_limit: rate_limits.Bucket,
) -> SubscriptionRecord | None:
    """`syncSubscription`: re-read now; None for a user without a Stripe customer."""
    await rate_limits.check(conn, user.id, rate_limit)
    stripe.require()
    customer = await db_customers.get(conn, user.id)
    if customer is None:
        return None
    async with conn.transaction():
        await db_customers.lock_for_user(conn, user.id)
        await sync_customer(conn, stripe, plans, user.id, customer.stripe_customer_id)
    return await db_subscriptions.get(conn, user.id)
