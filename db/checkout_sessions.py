"""The Checkout sessions this service created: the user's open one, and who they were for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Pg

COLUMNS = "id, user_id, stripe_customer_id, plan_id, price_id, url, status, expires_at, created_at"


@dataclass(frozen=True, slots=True)
class CheckoutSessionRecord:
    id: str
    user_id: str
    stripe_customer_id: str
    plan_id: str
    price_id: str
    url: str | None
    status: str  # open, complete or expired
    expires_at: datetime
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> CheckoutSessionRecord:
        return cls(*row)  # the columns in the fields' order (COLUMNS)


async def open_for(pg: Pg, user_id: str) -> list[CheckoutSessionRecord]:
    """The user's sessions still open as far as we know (not past their expiry), newest
    first."""
    rows = await pg.fetch(
        f"""
        SELECT {COLUMNS} FROM checkout_sessions
        WHERE user_id = $1 AND status = 'open' AND expires_at > now()
        ORDER BY created_at DESC
        """,  # noqa: S608
        user_id,
    )
    return [CheckoutSessionRecord.from_row(row) for row in rows]


async def get(pg: Pg, session_id: str) -> CheckoutSessionRecord | None:
    row = await pg.fetchrow(
        f"SELECT {COLUMNS} FROM checkout_sessions WHERE id = $1",  # noqa: S608
        session_id,
    )
    return None if row is None else CheckoutSessionRecord.from_row(row)


async def user_for_customer(pg: Pg, stripe_customer_id: str) -> str | None:
    """The user a session of ours was created for with this customer, if any."""
    found: str | None = await pg.fetchval(
        """
        SELECT user_id FROM checkout_sessions WHERE stripe_customer_id = $1
        ORDER BY created_at DESC LIMIT 1
        """,
        stripe_customer_id,
    )
    return found


async def record(
    pg: Pg,
    *,
    session_id: str,
    user_id: str,
    stripe_customer_id: str,
    plan_id: str,
    price_id: str,
    url: str | None,
    expires_at: datetime,
) -> None:
    await pg.execute(
        """
        INSERT INTO checkout_sessions (id, user_id, stripe_customer_id, plan_id, price_id, url,
            expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (id) DO NOTHING
        """,
        session_id,
        user_id,
        stripe_customer_id,
        plan_id,
        price_id,
        url,
        expires_at,
    )


async def finish(pg: Pg, session_id: str, status: str) -> bool:
    """An open session completes or expires, once: a finished one never reopens."""
    changed = await pg.fetchval(
        """
        UPDATE checkout_sessions SET status = $2, url = NULL, updated_at = now()
        WHERE id = $1 AND status = 'open'
        RETURNING true
        """,
        session_id,
        status,
    )
    return changed is True
