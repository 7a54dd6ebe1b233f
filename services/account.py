"""What a user sees of their own account: customer link, subscription, notifications, usage."""

from __future__ import annotations

from collections.abc import Sequence

from db import customers as db_customers
from db import notifications as db_notifications
from db import subscriptions as db_subscriptions
from db import usage as db_usage
from db.connection import Connection
from db.customers import CustomerRecord
from db.notifications import NotificationRecord
from db.subscriptions import SubscriptionRecord
from db.usage import UsageRecordRow
from services.errors import BadUserInput

# `first` on any list the API serves: 1 to MAX_PAGE (the contract's limit; the query cost
# counts a list whose `first` is a variable at this size).
MAX_PAGE = 100


def _page_size(first: int) -> int:
    if not 1 <= first <= MAX_PAGE:
        raise BadUserInput(f"first must be between 1 and {MAX_PAGE}", field="first")
    return first


async def customers(conn: Connection, user_ids: Sequence[str]) -> list[CustomerRecord | None]:
    found = await db_customers.for_users(conn, user_ids)
    return [found.get(user_id) for user_id in user_ids]


async def subscriptions(
    conn: Connection, user_ids: Sequence[str]
) -> list[SubscriptionRecord | None]:
    found = await db_subscriptions.for_users(conn, user_ids)
    return [found.get(user_id) for user_id in user_ids]


async def notifications(conn: Connection, user_id: str, first: int) -> list[NotificationRecord]:
    return await db_notifications.newest(conn, user_id, _page_size(first))


async def usage_records(conn: Connection, user_id: str, first: int) -> list[UsageRecordRow]:
    return await db_usage.newest(conn, user_id, _page_size(first))
