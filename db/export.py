"""Everything we hold about one user, read in one snapshot for a data export."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from db.connection import Connection, raw
from db.customers import CustomerRecord
from db.subscriptions import SubscriptionRecord
from db.usage import UsageRecordRow
from db.users import UserRecord


def _columns(record: type) -> str:
    """The SELECT list of a record class, so a column added to the class is exported too."""
    return ", ".join(field.name for field in fields(record))


# Public so that `bench/export.py` can time exactly these statements bare.
USER_SQL = f"SELECT {_columns(UserRecord)} FROM users WHERE id = $1"  # noqa: S608
CUSTOMER_SQL = f"SELECT {_columns(CustomerRecord)} FROM customers WHERE user_id = $1"  # noqa: S608
SUBSCRIPTION_SQL = f"SELECT {_columns(SubscriptionRecord)} FROM subscriptions WHERE user_id = $1"  # noqa: S608
USAGE_SQL = f"""
    SELECT {_columns(UsageRecordRow)} FROM usage_records
    WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2
"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    user: UserRecord | None
    customer: CustomerRecord | None
    subscription: SubscriptionRecord | None
    usage_records: list[UsageRecordRow]


async def snapshot(conn: Connection, user_id: str, usage_limit: int) -> Snapshot:
    """One REPEATABLE READ, read-only transaction: the rows agree with each other.

    It runs on asyncpg directly while holding the connection's query lock, so another
    resolver of the same request cannot slip a statement into this transaction.
    `taken_at` is the transaction's start, the instant the rows describe.
    """
    async with raw(conn) as pg, pg.transaction(isolation="repeatable_read", readonly=True):
        taken_at: datetime = await pg.fetchval("SELECT now()")
        user = await pg.fetchrow(USER_SQL, user_id)
        customer = await pg.fetchrow(CUSTOMER_SQL, user_id)
        subscription = await pg.fetchrow(SUBSCRIPTION_SQL, user_id)
        usage = await pg.fetch(USAGE_SQL, user_id, usage_limit)
    return Snapshot(
        taken_at=taken_at,
        user=None if user is None else UserRecord.from_row(user),
        customer=None if customer is None else CustomerRecord.from_row(customer),
        subscription=None if subscription is None else SubscriptionRecord.from_row(subscription),
        usage_records=[UsageRecordRow.from_row(row) for row in usage],
    )
