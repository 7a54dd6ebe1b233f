"""Tombstones of deleted accounts, and the deletion of a user row itself.

A tombstone outlives the user so that a token issued before the deletion cannot provision
the account again, and so that the Stripe customer the account kept is never adopted or
linked again and its late webhooks change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Pg

COLUMNS = "user_id, stripe_customer_id, deleted_at"


@dataclass(frozen=True, slots=True)
class Tombstone:
    user_id: str
    stripe_customer_id: str | None
    deleted_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Tombstone:
        return cls(*row)  # the columns in the fields' order (COLUMNS)


async def get(pg: Pg, user_id: str) -> Tombstone | None:
    row = await pg.fetchrow(
        f"SELECT {COLUMNS} FROM deleted_users WHERE user_id = $1",  # noqa: S608
        user_id,
    )
    return None if row is None else Tombstone.from_row(row)


async def for_customer(pg: Pg, stripe_customer_id: str) -> Tombstone | None:
    row = await pg.fetchrow(
        f"""
        SELECT {COLUMNS} FROM deleted_users WHERE stripe_customer_id = $1
        ORDER BY deleted_at DESC LIMIT 1
        """,  # noqa: S608
        stripe_customer_id,
    )
    return None if row is None else Tombstone.from_row(row)


async def record(pg: Pg, user_id: str, stripe_customer_id: str | None) -> Tombstone:
    """Mark the user deleted as of now (the wall clock, not the transaction's start).

    `clock_timestamp()` because the deletion may have waited on Stripe: a token minted
    while it waited must still count as issued before the deletion. A user deleted a second
    time (after coming back with a newer token) keeps one tombstone, with the newer time
    and, when the new account had none, the old customer.
    """
    row = await pg.fetchrow(
        f"""
        INSERT INTO deleted_users (user_id, stripe_customer_id, deleted_at)
        VALUES ($1, $2, clock_timestamp())
        ON CONFLICT (user_id) DO UPDATE SET
            stripe_customer_id = COALESCE(EXCLUDED.stripe_customer_id,
                                          deleted_users.stripe_customer_id),
            deleted_at = EXCLUDED.deleted_at
        RETURNING {COLUMNS}
        """,  # noqa: S608
        user_id,
        stripe_customer_id,
    )
    return Tombstone.from_row(row)


async def delete_user(pg: Pg, user_id: str) -> bool:
    """Delete the user row; every table keyed on the user follows by `ON DELETE CASCADE`."""
    deleted = await pg.fetchval("DELETE FROM users WHERE id = $1 RETURNING true", user_id)
    return deleted is True
