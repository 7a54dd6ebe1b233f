"""Each user's current subscription state as last learned from Stripe."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Connection, as_dict

_COLUMNS = (
    "user_id, plan_id, status, stripe_subscription_id, price_id, cancel_at_period_end, "
    "current_period_end, updated_at"
)


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    user_id: str
    plan_id: str
    status: str
    stripe_subscription_id: str | None
    price_id: str | None
    cancel_at_period_end: bool
    current_period_end: datetime | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> SubscriptionRecord:
        return cls(**as_dict(row))


async def for_users(conn: Connection, user_ids: Sequence[str]) -> dict[str, SubscriptionRecord]:
    rows = await conn.fetch_all(
        f"SELECT {_COLUMNS} FROM subscriptions WHERE user_id = ANY(:ids)",  # noqa: S608
        {"ids": list(user_ids)},
    )
    return {row["user_id"]: SubscriptionRecord.from_row(row) for row in rows}


async def get(conn: Connection, user_id: str) -> SubscriptionRecord | None:
    found = await for_users(conn, [user_id])
    return found.get(user_id)


async def ensure_free(conn: Connection, user_id: str) -> None:
    """The row every linked user has; an existing row (even CANCELED) is kept as it is."""
    await conn.execute(
        """
        INSERT INTO subscriptions (user_id, plan_id, status) VALUES (:user_id, 'free', 'active')
        ON CONFLICT (user_id) DO NOTHING
        """,
        {"user_id": user_id},
    )
