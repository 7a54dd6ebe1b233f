"""What a user reads of their own account: customer link, subscriptions, notifications,
usage. Each read borrows a connection for itself (the DataLoaders batch the first two)."""

from __future__ import annotations

from collections.abc import Sequence

from db import customers as db_customers
from db import notifications as db_notifications
from db import usage as db_usage
from db.connection import Pool
from db.customers import CustomerRecord
from db.notifications import NotificationRecord
from db.usage import UsageRecordRow
from services.errors import BadUserInput

MAX_PAGE = 100


def page_size(first: int) -> int:
    """`first` on any list: 1 to 100, else `BadUserInput`."""
    if not 1 <= first <= MAX_PAGE:
        raise BadUserInput(f"first must be between 1 and {MAX_PAGE}", field="first")
    return first


async def customers(pool: Pool, user_ids: Sequence[str]) -> list[CustomerRecord | None]:
    async with pool.connection() as pg:
        found = await db_customers.for_users(pg, user_ids)
    return [found.get(user_id) for user_id in user_ids]


async def notifications(pool: Pool, user_id: str, first: int) -> list[NotificationRecord]:
    """Newest first; `BadUserInput` for `first` outside 1 to 100."""
    limit = page_size(first)
    async with pool.connection() as pg:
        return await db_notifications.newest(pg, user_id, limit)


async def usage_records(pool: Pool, user_id: str, first: int) -> list[UsageRecordRow]:
    """Newest first; `BadUserInput` for `first` outside 1 to 100."""
    limit = page_size(first)
    async with pool.connection() as pg:
        return await db_usage.newest(pg, user_id, limit)
