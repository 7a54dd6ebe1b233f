"""What a user may use now: the feature keys of their plan, and Stripe's own entitlements.

A user's features are the `free` plan's (plans file `features`, everyone has them), plus
those of the plan of their entitled subscription — the one that matters (see
`services.subscriptions`) when it is `active`, `trialing` or `past_due` (a failed renewal
keeps access while Stripe retries; `canceled`, `unpaid` and `incomplete` do not) — plus the
customer's active Stripe Entitlements when the account uses them (mirrored from
`entitlements.active_entitlement_summary.updated`, re-read from Stripe).

A backend checks them with the user's own token: `me { entitlements }`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from db import customers as db_customers
from db.connection import Pg, Pool
from db.locks import user_transaction
from db.subscriptions import SubscriptionRecord
from services.plans import FREE_PLAN_ID, PlanCatalog
from services.stripe_gateway import StripeGateway
from services.subscriptions import ENTITLED, the_subscription


def features(
    plans: PlanCatalog, rows: Iterable[SubscriptionRecord], from_stripe: Iterable[str]
) -> list[str]:
    """The user's feature keys, sorted: see the module's docstring."""
    keys: set[str] = set(from_stripe)
    free = plans.get(FREE_PLAN_ID)
    if free is not None:
        keys.update(free.features)
    current = the_subscription(rows)
    if (
        current is not None
        and current.stripe_subscription_id is not None
        and current.status in ENTITLED
    ):
        plan = plans.get(current.plan_id)
        if plan is not None:
            keys.update(plan.features)
    return sorted(keys)


async def from_stripe(pool: Pool, user_ids: Sequence[str]) -> list[list[str]]:
    """Each user's mirrored Stripe Entitlements, for the DataLoaders."""
    async with pool.connection() as pg:
        found = await db_customers.entitlements_of(pg, user_ids)
    return [found.get(user_id, []) for user_id in user_ids]


async def apply(
    pg: Pg, customer_id: str, lookup_keys: list[str], read_started_at: datetime
) -> bool:
    """Store what a read of the customer's active entitlements found (inside the user's
    transaction, behind the read fence); True when they changed."""
    if not await db_customers.advance_fence(pg, customer_id, "entitlements", read_started_at):
        return False
    return await db_customers.set_entitlements(pg, customer_id, lookup_keys)


async def refresh(pool: Pool, stripe: StripeGateway, user_id: str, customer_id: str) -> bool:
    async with pool.connection() as pg:
        started_at = await db_customers.now(pg)
    found = await stripe.active_entitlements(customer_id)
    async with user_transaction(pool, user_id) as pg:
        return await apply(pg, customer_id, found, started_at)
