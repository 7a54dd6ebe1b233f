"""Everything we hold about one user, read in one snapshot for a data export."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from db import customers, invoices, subscriptions, usage, users
from db.connection import Pg
from db.customers import CustomerRecord
from db.invoices import InvoiceRecord
from db.subscriptions import SubscriptionRecord
from db.usage import UsageRecordRow
from db.users import UserRecord

# Public so that `bench/export.py` can time exactly these statements bare.
USER_SQL = f"SELECT {users.COLUMNS} FROM users WHERE id = $1"  # noqa: S608
CUSTOMER_SQL = f"SELECT {customers.COLUMNS} FROM customers WHERE user_id = $1"  # noqa: S608
SUBSCRIPTION_SQL = f"SELECT {subscriptions.COLUMNS} FROM subscriptions WHERE user_id = $1"  # noqa: S608
USAGE_SQL = usage.NEWEST_SQL
INVOICES_SQL = f"""
    SELECT {invoices.COLUMNS} FROM invoices WHERE user_id = $1 ORDER BY {invoices.NEWEST_FIRST}
"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    user: UserRecord | None
    customer: CustomerRecord | None
    subscriptions: list[SubscriptionRecord]
    usage_records: list[UsageRecordRow]
    invoices: list[InvoiceRecord]


async def snapshot(pg: Pg, user_id: str, usage_limit: int) -> Snapshot:
    """The user's rows as of one instant. Call it inside a REPEATABLE READ, read-only
    transaction (`Pool.transaction(isolation="repeatable_read", readonly=True)`), so the
    rows agree with each other; `taken_at` is the transaction's start, the instant they
    describe."""
    taken_at: datetime = await pg.fetchval("SELECT now()")
    user = await pg.fetchrow(USER_SQL, user_id)
    customer = await pg.fetchrow(CUSTOMER_SQL, user_id)
    subscription_rows = await pg.fetch(SUBSCRIPTION_SQL, user_id)
    usage_rows = await pg.fetch(USAGE_SQL, user_id, usage_limit)
    invoice_rows = await pg.fetch(INVOICES_SQL, user_id)
    return Snapshot(
        taken_at=taken_at,
        user=None if user is None else UserRecord.from_row(user),
        customer=None if customer is None else CustomerRecord.from_row(customer),
        subscriptions=[SubscriptionRecord.from_row(row) for row in subscription_rows],
        usage_records=[UsageRecordRow.from_row(row) for row in usage_rows],
        invoices=[InvoiceRecord.from_row(row) for row in invoice_rows],
    )
