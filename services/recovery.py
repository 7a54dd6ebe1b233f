"""After missed webhooks: re-read every linked customer and its subscriptions from Stripe."""

from __future__ import annotations

from dataclasses import dataclass

from db import customers as db_customers
from db.connection import Connection
from services import customers
from services.plans import PlanCatalog
from services.stripe_gateway import CustomerGone, StripeGateway
from services.subscription_sync import sync_customer


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


async def resync_all(conn: Connection, stripe: StripeGateway, plans: PlanCatalog) -> list[Resynced]:
    stripe.require()
    results = []
    for link in await db_customers.all_links(conn):
        async with conn.transaction():
            await db_customers.lock_for_user(conn, link.user_id)
            results.append(
                await _resync_one(conn, stripe, plans, link.user_id, link.stripe_customer_id)
            )
    return results


async def _resync_one(
    conn: Connection, stripe: StripeGateway, plans: PlanCatalog, user_id: str, customer_id: str
) -> Resynced:
    try:
        customer = await stripe.retrieve_customer(customer_id)
    except CustomerGone:
        await customers.forget_gone(conn, user_id, customer_id)
        return Resynced(user_id, customer_id, customer_gone=True)
    customer_changed = await db_customers.mirror(
        conn, customer_id, email=customer.email, name=customer.name, phone=customer.phone
    )
    subscription_changed = await sync_customer(conn, stripe, plans, user_id, customer_id)
    return Resynced(user_id, customer_id, customer_changed, subscription_changed)
