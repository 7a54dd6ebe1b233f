"""What in-app subscription management keeps between requests: the change sent to Stripe
whose answer is not known yet, and the plan-change previews a user may confirm."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Pg


@dataclass(frozen=True, slots=True)
class SentChange:
    """A change sent to Stripe, kept until Stripe's answer to it is known."""

    action: str  # cancel-at-period-end, cancel-now, resume or change-plan:<price>:<date>
    params: dict[str, Any]  # the request's parameters, sent again as they were
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class PreviewRecord:
    subscription_id: str
    from_price_id: str | None
    current_period_end: datetime | None
    amount_due: int  # the currency's smallest unit


async def unanswered(pg: Pg, user_id: str, max_age_seconds: int) -> list[tuple[str, SentChange]]:
    """The user's changes whose answer is unknown, by subscription, if sent less than
    `max_age_seconds` ago. Older ones, anyone's, are forgotten here (Stripe keeps a key 24
    hours)."""
    await pg.execute(
        "DELETE FROM sent_changes WHERE sent_at < now() - make_interval(secs => $1)",
        max_age_seconds,
    )
    rows = await pg.fetch(
        """
        SELECT subscription_id, action, params, idempotency_key FROM sent_changes
        WHERE user_id = $1 ORDER BY sent_at
        """,
        user_id,
    )
    return [
        (
            row["subscription_id"],
            SentChange(row["action"], json.loads(row["params"]), row["idempotency_key"]),
        )
        for row in rows
    ]


async def sending(pg: Pg, user_id: str, subscription_id: str, change: SentChange) -> None:
    """Keep `change` as sent, before it is sent (a crash in between leaves it unanswered)."""
    await pg.execute(
        """
        INSERT INTO sent_changes (user_id, subscription_id, action, params, idempotency_key)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (user_id, subscription_id) DO UPDATE SET
            action = EXCLUDED.action, params = EXCLUDED.params,
            idempotency_key = EXCLUDED.idempotency_key, sent_at = now()
        """,
        user_id,
        subscription_id,
        change.action,
        json.dumps(change.params, sort_keys=True),
        change.idempotency_key,
    )


async def answered(pg: Pg, user_id: str, subscription_id: str) -> None:
    """Stripe's answer to the subscription's sent change is known: nothing to send again."""
    await pg.execute(
        "DELETE FROM sent_changes WHERE user_id = $1 AND subscription_id = $2",
        user_id,
        subscription_id,
    )


async def save_preview(
    pg: Pg,
    user_id: str,
    *,
    subscription_id: str,
    from_price_id: str | None,
    to_price_id: str,
    current_period_end: datetime | None,
    proration_date: int,
    amount_due: int,
    currency: str,
    max_age_seconds: int,
) -> None:
    """Keep a preview the user may confirm (`proration_date` in Unix seconds); previews
    older than `max_age_seconds`, anyone's, go. Nothing is kept for an account deleted
    meanwhile."""
    await pg.execute(
        "DELETE FROM plan_change_previews WHERE created_at < now() - make_interval(secs => $1)",
        max_age_seconds,
    )
    await pg.execute(
        """
        INSERT INTO plan_change_previews (user_id, subscription_id, from_price_id, to_price_id,
            current_period_end, proration_date, amount_due, currency)
        SELECT $1, $2, $3, $4, $5, $6, $7, $8
        WHERE EXISTS (SELECT 1 FROM users WHERE id = $1)  -- not for an account deleted since
        ON CONFLICT (user_id, to_price_id, proration_date) DO UPDATE SET
            subscription_id = EXCLUDED.subscription_id,
            from_price_id = EXCLUDED.from_price_id,
            current_period_end = EXCLUDED.current_period_end,
            amount_due = EXCLUDED.amount_due, currency = EXCLUDED.currency,
            created_at = now()
        """,
        user_id,
        subscription_id,
        from_price_id,
        to_price_id,
        current_period_end,
        proration_date,
        amount_due,
        currency,
    )


async def preview(
    pg: Pg, user_id: str, to_price_id: str, proration_date: int
) -> PreviewRecord | None:
    row = await pg.fetchrow(
        """
        SELECT subscription_id, from_price_id, current_period_end, amount_due
        FROM plan_change_previews
        WHERE user_id = $1 AND to_price_id = $2 AND proration_date = $3
        """,
        user_id,
        to_price_id,
        proration_date,
    )
    return None if row is None else PreviewRecord(*row)
