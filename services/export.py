"""A user's data export: our rows in one snapshot, and their Stripe customer as Stripe has it.

The two parts fail separately: our rows come from our database in one consistent read;
the Stripe customer is fetched on its own (after the connection is given back), so an
unreachable Stripe costs the export that one part and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db import export as db_export
from db.connection import Pool
from db.customers import CustomerRecord
from db.invoices import InvoiceRecord
from db.subscriptions import SubscriptionRecord
from db.usage import UsageRecordRow
from db.users import UserRecord
from services import rate_limits, subscriptions
from services.errors import Unauthenticated
from services.stripe_gateway import CustomerGone, StripeGateway

EXPORT_VERSION = "1.0"
MAX_USAGE_RECORDS = 1000


@dataclass(frozen=True, slots=True)
class AccountExport:
    user: UserRecord
    customer: CustomerRecord | None
    subscription_rows: list[SubscriptionRecord]  # every row: Stripe subscriptions, free row
    usage_records: list[UsageRecordRow]  # newest first, at most MAX_USAGE_RECORDS
    invoices: list[InvoiceRecord]  # newest first, every one
    exported_at: datetime
    version: str = EXPORT_VERSION

    @property
    def subscription(self) -> SubscriptionRecord | None:
        """The one that matters (`services.subscriptions`)."""
        return subscriptions.the_subscription(self.subscription_rows)

    @property
    def subscriptions(self) -> list[SubscriptionRecord]:
        """Every Stripe subscription, by the rule."""
        return subscriptions.ordered(self.subscription_rows)


async def snapshot(
    pool: Pool, user: UserRecord, *, rate_limit: rate_limits.Bucket
) -> AccountExport:
    """Everything we hold about the user, as of one instant. Both the GraphQL `export` and
    the download come here, so they share one limit (`RATE_LIMITED`); `UNAUTHENTICATED`
    when the account was deleted by a request that finished after ours began."""
    await rate_limits.check(pool, user.id, rate_limit)
    async with pool.transaction(isolation="repeatable_read", readonly=True) as pg:
        snapshot = await db_export.snapshot(pg, user.id, MAX_USAGE_RECORDS)
    if snapshot.user is None:
        raise Unauthenticated("This account was deleted")
    return AccountExport(
        user=snapshot.user,
        customer=snapshot.customer,
        subscription_rows=snapshot.subscriptions,
        usage_records=snapshot.usage_records,
        invoices=snapshot.invoices,
        exported_at=snapshot.taken_at,
    )


async def stripe_customer(
    pool: Pool,
    stripe: StripeGateway,
    user: UserRecord,
    stripe_customer_id: str | None,
    *,
    rate_limit: rate_limits.Bucket,
) -> Mapping[str, Any] | None:
    """The customer object as Stripe holds it now; None when the user has none. Asking
    Stripe counts against the user's Stripe bucket (`RATE_LIMITED`).

    Without a customer there is nothing to ask Stripe. A customer Stripe no longer has is
    None too: Stripe holds nothing about the user. With a customer but no Stripe key this
    raises `StripeNotConfigured` rather than answering None, because None would tell the
    user that Stripe holds no data about them, which we cannot know.
    """
    if stripe_customer_id is None:
        return None
    await rate_limits.check(pool, user.id, rate_limit)
    try:
        customer = await stripe.retrieve_customer(stripe_customer_id)
    except CustomerGone:
        return None
    return customer.raw
