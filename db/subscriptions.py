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


async def write_state(
    conn: Connection,
    user_id: str,
    *,
    plan_id: str,
    status: str,
    stripe_subscription_id: str | None,
    price_id: str | None,
    cancel_at_period_end: bool,
    current_period_end: datetime | None,
) -> bool:
    """Store the subscription as Stripe holds it now; True when something changed."""
    changed = await conn.fetch_val(
        """
        INSERT INTO subscriptions AS s (user_id, plan_id, status, stripe_subscription_id,
            price_id, cancel_at_period_end, current_period_end)
        VALUES (:user_id, :plan_id, :status, :sub, :price, :cape, :cpe)
        ON CONFLICT (user_id) DO UPDATE SET
            plan_id = EXCLUDED.plan_id,
            status = EXCLUDED.status,
            stripe_subscription_id = EXCLUDED.stripe_subscription_id,
            price_id = EXCLUDED.price_id,
            cancel_at_period_end = EXCLUDED.cancel_at_period_end,
            current_period_end = EXCLUDED.current_period_end,
            updated_at = now()
        WHERE (s.plan_id, s.status, s.stripe_subscription_id, s.price_id,
               s.cancel_at_period_end, s.current_period_end)
          IS DISTINCT FROM (EXCLUDED.plan_id, EXCLUDED.status, EXCLUDED.stripe_subscription_id,
               EXCLUDED.price_id, EXCLUDED.cancel_at_period_end, EXCLUDED.current_period_end)
        RETURNING true
        """,
        {
            "user_id": user_id,
            "plan_id": plan_id,
            "status": status,
            "sub": stripe_subscription_id,
            "price": price_id,
            "cape": cancel_at_period_end,
            "cpe": current_period_end,
        },
    )
    return changed is True


async def mark_canceled(conn: Connection, user_id: str) -> bool:
    changed = await conn.fetch_val(
        """
        UPDATE subscriptions SET status = 'canceled', cancel_at_period_end = false,
            updated_at = now()
        WHERE user_id = :user_id AND status <> 'canceled'
        RETURNING true
        """,
        {"user_id": user_id},
    )
    return changed is True
