"""Tombstones of deleted accounts, and the deletion of a user row itself.

A tombstone outlives the user so that a token issued before the deletion cannot provision
the account again, and so that Stripe's late webhooks about the old customer can be told
apart from a stranger's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Connection, as_dict

_COLUMNS = "user_id, stripe_customer_id, deleted_at"


@dataclass(frozen=True, slots=True)
class Tombstone:
    user_id: str
    stripe_customer_id: str | None
    deleted_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Tombstone:
        return cls(**as_dict(row))


async def get(conn: Connection, user_id: str) -> Tombstone | None:
    row = await conn.fetch_one(
        f"SELECT {_COLUMNS} FROM deleted_users WHERE user_id = :user_id",  # noqa: S608
        {"user_id": user_id},
    )
    return None if row is None else Tombstone.from_row(row)


async def for_customer(conn: Connection, stripe_customer_id: str) -> Tombstone | None:
    row = await conn.fetch_one(
        f"""
        SELECT {_COLUMNS} FROM deleted_users WHERE stripe_customer_id = :id
        ORDER BY deleted_at DESC LIMIT 1
        """,  # noqa: S608
        {"id": stripe_customer_id},
    )
    return None if row is None else Tombstone.from_row(row)


async def record(conn: Connection, user_id: str, stripe_customer_id: str | None) -> Tombstone:
    """Mark the user deleted as of now (the wall clock, not the transaction's start).

    `clock_timestamp()` because the deletion's transaction may have waited on Stripe: a
    token minted while it waited must still count as issued before the deletion. A user
    deleted a second time (after coming back with a newer token) keeps one tombstone, with
    the newer time and, when the new account had none, the old customer.
    """
    row = await conn.fetch_one(
        f"""
        INSERT INTO deleted_users (user_id, stripe_customer_id, deleted_at)
        VALUES (:user_id, :stripe_customer_id, clock_timestamp())
        ON CONFLICT (user_id) DO UPDATE SET
            stripe_customer_id = COALESCE(EXCLUDED.stripe_customer_id,
                                          deleted_users.stripe_customer_id),
            deleted_at = EXCLUDED.deleted_at
        RETURNING {_COLUMNS}
        """,  # noqa: S608
        {"user_id": user_id, "stripe_customer_id": stripe_customer_id},
    )
    assert row is not None
    return Tombstone.from_row(row)


async def delete_user(conn: Connection, user_id: str) -> bool:
    """Delete the user row; every table keyed on the user follows by `ON DELETE CASCADE`."""
    deleted = await conn.fetch_val(
        "DELETE FROM users WHERE id = :user_id RETURNING true", {"user_id": user_id}
    )
    return deleted is True
