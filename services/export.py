"""A user's data export: our rows in one snapshot, and their Stripe customer as Stripe has it.

The two parts fail separately: our rows come from our database in one consistent read;
the Stripe customer is fetched on its own, so an unreachable Stripe costs the export that
one part and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db import export as db_export
from db.connection import Connection
from db.customers import CustomerRecord
from db.subscriptions import SubscriptionRecord
from db.usage import UsageRecordRow
from db.users import UserRecord
from services import rate_limits
from services.errors import Unauthenticated
from services.stripe_gateway import CustomerGone, StripeGateway

EXPORT_VERSION = "1.0"
MAX_USAGE_RECORDS = 1000


@dataclass(frozen=True, slots=True)
class AccountExport:
    user: UserRecord
    customer: CustomerRecord | None
    subscription: SubscriptionRecord | None
    usage_records: list[UsageRecordRow]
    exported_at: datetime
    version: str = EXPORT_VERSION


async def our_data(
    conn: Connection, user: UserRecord, *, rate_limit: rate_limits.Bucket
) -> AccountExport:
    """Everything we hold about the user, as of one instant. Both the GraphQL `export` and
    the download come here, so they share one limit; its Stripe part follows only this."""
    await rate_limits.check(conn, user.id, rate_limit)
    snapshot = await db_export.snapshot(conn, user.id, MAX_USAGE_RECORDS)
    if snapshot.user is None:  # deleted by a request that finished after ours began
        raise Unauthenticated("This account was deleted")
    return AccountExport(
        user=snapshot.user,
        customer=snapshot.customer,
        subscription=snapshot.subscription,
        usage_records=snapshot.usage_records,
        exported_at=snapshot.taken_at,
    )


async def stripe_customer(
    stripe: StripeGateway, stripe_customer_id: str | None
) -> Mapping[str, Any] | None:
    """The customer object as Stripe holds it now; None when the user has none.

    Without a customer there is nothing to ask Stripe. A customer Stripe no longer has is
    None too: Stripe holds nothing about the user. With a customer but no Stripe key this
    raises `StripeNotConfigured` rather than answering None, because None would tell the
    user that Stripe holds no data about them, which we cannot know.
    """
    if stripe_customer_id is None:
        return None
    try:
        customer = await stripe.retrieve_customer(stripe_customer_id)
    except CustomerGone:
        return None
    return customer.raw
