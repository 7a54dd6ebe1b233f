"""After missed webhooks: re-read every linked customer and its subscriptions from Stripe.

Each customer is re-read as a `customer.updated` and a subscription event would have it:
Stripe's copy of the customer is mirrored, its name and phone reach the profile unless the
user has an edit of their own not yet pushed, and every subscription is stored. No
connection is held while Stripe is asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from db import customers as db_customers
from db.connection import Pool
from db.locks import user_transaction
from services import customers, subscriptions, webhooks
from services.plans import PlanCatalog
from services.stripe_gateway import CustomerGone, StripeGateway


@dataclass(frozen=True, slots=True)
class Resynced:
    user_id: str
    customer_id: str
    customer_changed: bool = False
    subscription_changed: bool = False
    customer_gone: bool = False

    @property
    def changed(self) -> bool:
        return self.customer_changed or self.subscription_changed or self.customer_gone


async def resync_all(pool: Pool, stripe: StripeGateway, plans: PlanCatalog) -> list[Resynced]:
    """Every linked customer, one after another; `STRIPE_NOT_CONFIGURED` without a key."""
    stripe.require()
    async with pool.connection() as pg:
        links = await db_customers.all_links(pg)
    return [
        await _resync_one(pool, stripe, plans, link.user_id, link.stripe_customer_id)
        for link in links
    ]


async def _resync_one(
    pool: Pool, stripe: StripeGateway, plans: PlanCatalog, user_id: str, customer_id: str
) -> Resynced:
    started_at = await subscriptions.read_clock(pool)
    try:
        customer = await stripe.retrieve_customer(customer_id)
    except CustomerGone:
        async with user_transaction(pool, user_id) as pg:
            await customers.customer_gone(pg, user_id, customer_id)
        return Resynced(user_id, customer_id, customer_gone=True)
    before = await customers.current(pool, user_id)
    await webhooks.mirror_customer(pool, user_id, customer, started_at)
    after = await customers.current(pool, user_id)
    customer_changed = (
        before is not None
        and after is not None
        and (before.email, before.name, before.phone) != (after.email, after.name, after.phone)
    )
    subscription_changed = await subscriptions.refresh(pool, stripe, plans, user_id, customer_id)
    return Resynced(user_id, customer_id, customer_changed, subscription_changed)
