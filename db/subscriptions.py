"""Every Stripe subscription of each user's customer as last read from Stripe, and each
linked user's `free` row (`stripe_subscription_id IS NULL`: no paid plan).

Which row is "the" subscription is a billing rule, kept in `services.subscriptions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Pg

COLUMNS = (
    "id, user_id, plan_id, status, stripe_subscription_id, stripe_customer_id, price_id, "
    "cancel_at_period_end, cancel_at, current_period_end, trial_end, created_at, "
    "metadata_user_id, paid, duplicate_refunded_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    id: int
    user_id: str
    plan_id: str
    status: str
    stripe_subscription_id: str | None  # None: the free row
    stripe_customer_id: str | None
    price_id: str | None
    cancel_at_period_end: bool
    cancel_at: datetime | None
    current_period_end: datetime | None
    trial_end: datetime | None
    created_at: datetime  # Stripe's `created` for a Stripe subscription
    metadata_user_id: str | None  # Stripe's `metadata.userId` on the subscription
    paid: bool  # its latest invoice had money paid
    duplicate_refunded_at: datetime | None  # canceled and refunded as a duplicate, then
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> SubscriptionRecord:
        return cls(*row)  # the columns in the fields' order (COLUMNS)


@dataclass(frozen=True, slots=True)
class StripeState:
    """One Stripe subscription as it is to be stored."""

    stripe_subscription_id: str
    plan_id: str
    status: str
    price_id: str | None
    cancel_at_period_end: bool
    cancel_at: datetime | None
    current_period_end: datetime | None
    trial_end: datetime | None
    created_at: datetime
    metadata_user_id: str | None
    paid: bool


async def for_users(pg: Pg, user_ids: Sequence[str]) -> dict[str, list[SubscriptionRecord]]:
    """Every row of each user, in no particular order."""
    rows = await pg.fetch(
        f"SELECT {COLUMNS} FROM subscriptions WHERE user_id = ANY($1::text[])",  # noqa: S608
        list(user_ids),
    )
    found: dict[str, list[SubscriptionRecord]] = {user_id: [] for user_id in user_ids}
    for row in rows:
        found[row["user_id"]].append(SubscriptionRecord.from_row(row))
    return found


async def of_user(pg: Pg, user_id: str) -> list[SubscriptionRecord]:
    return (await for_users(pg, [user_id]))[user_id]


async def ensure_free(pg: Pg, user_id: str) -> None:
    """The free row every linked user has; an existing one (even CANCELED) is kept as is."""
    await pg.execute(
        """
        INSERT INTO subscriptions (user_id, plan_id, status) VALUES ($1, 'free', 'active')
        ON CONFLICT (user_id) WHERE stripe_subscription_id IS NULL DO NOTHING
        """,
        user_id,
    )


async def set_free_status(pg: Pg, user_id: str, status: str) -> bool:
    changed = await pg.fetchval(
        """
        UPDATE subscriptions SET status = $2, updated_at = now()
        WHERE user_id = $1 AND stripe_subscription_id IS NULL AND status <> $2
        RETURNING true
        """,
        user_id,
        status,
    )
    return changed is True


async def write_state(pg: Pg, user_id: str, stripe_customer_id: str, state: StripeState) -> bool:
    """Store one Stripe subscription as Stripe holds it now; True when something changed."""
    changed = await pg.fetchval(
        """
        INSERT INTO subscriptions AS s (user_id, stripe_customer_id, stripe_subscription_id,
            plan_id, status, price_id, cancel_at_period_end, cancel_at, current_period_end,
            trial_end, created_at, metadata_user_id, paid)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        ON CONFLICT (stripe_subscription_id) DO UPDATE SET
            user_id = EXCLUDED.user_id,
            stripe_customer_id = EXCLUDED.stripe_customer_id,
            plan_id = EXCLUDED.plan_id,
            status = EXCLUDED.status,
            price_id = EXCLUDED.price_id,
            cancel_at_period_end = EXCLUDED.cancel_at_period_end,
            cancel_at = EXCLUDED.cancel_at,
            current_period_end = EXCLUDED.current_period_end,
            trial_end = EXCLUDED.trial_end,
            created_at = EXCLUDED.created_at,
            metadata_user_id = EXCLUDED.metadata_user_id,
            paid = EXCLUDED.paid,
            updated_at = now()
        WHERE (s.user_id, s.stripe_customer_id, s.plan_id, s.status, s.price_id,
               s.cancel_at_period_end, s.cancel_at, s.current_period_end, s.trial_end,
               s.created_at, s.metadata_user_id, s.paid)
          IS DISTINCT FROM (EXCLUDED.user_id, EXCLUDED.stripe_customer_id, EXCLUDED.plan_id,
               EXCLUDED.status, EXCLUDED.price_id, EXCLUDED.cancel_at_period_end,
               EXCLUDED.cancel_at, EXCLUDED.current_period_end, EXCLUDED.trial_end,
               EXCLUDED.created_at, EXCLUDED.metadata_user_id, EXCLUDED.paid)
        RETURNING true
        """,
        user_id,
        stripe_customer_id,
        state.stripe_subscription_id,
        state.plan_id,
        state.status,
        state.price_id,
        state.cancel_at_period_end,
        state.cancel_at,
        state.current_period_end,
        state.trial_end,
        state.created_at,
        state.metadata_user_id,
        state.paid,
    )
    return changed is True


async def mark_canceled(pg: Pg, user_id: str) -> bool:
    """Every row of the user ends (their customer is gone: Stripe ended its subscriptions)."""
    rows = await pg.fetch(
        """
        UPDATE subscriptions SET status = 'canceled', cancel_at_period_end = false,
            cancel_at = NULL, updated_at = now()
        WHERE user_id = $1 AND status NOT IN ('canceled', 'incomplete_expired')
        RETURNING 1
        """,
        user_id,
    )
    return bool(rows)


async def mark_duplicate_refunded(pg: Pg, stripe_subscription_id: str) -> bool:
    """Once: True the first time, False if it was marked already."""
    marked = await pg.fetchval(
        """
        UPDATE subscriptions SET duplicate_refunded_at = now()
        WHERE stripe_subscription_id = $1 AND duplicate_refunded_at IS NULL
        RETURNING true
        """,
        stripe_subscription_id,
    )
    return marked is True
