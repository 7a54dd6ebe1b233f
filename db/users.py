"""Users: one row per identity-provider subject."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Connection, Database, as_dict, pooled, raw
from db.jobs import PROFILE_SYNC

_COLUMNS = (
    "id, email, email_verified, first_name, last_name, phone, profile_updated_at, "
    "tokens_not_before, created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    email: str | None
    email_verified: bool
    first_name: str | None
    last_name: str | None
    phone: str | None
    profile_updated_at: datetime | None
    tokens_not_before: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> UserRecord:
        return cls(**as_dict(row))


async def get(conn: Connection, user_id: str) -> UserRecord | None:
    """Every authenticated request starts here, so it skips `databases`' SQL compilation."""
    async with raw(conn) as pg:
        row = await pg.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)  # noqa: S608
    return None if row is None else UserRecord.from_row(row)


async def get_pooled(database: Database, user_id: str, within: float) -> UserRecord | None:
    """`get` without a request connection: one pooled asyncpg query, the common case's only."""
    async with pooled(database, within) as pg:
        row = await pg.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)  # noqa: S608
    return None if row is None else UserRecord(*row)  # the columns in the fields' order


async def insert_if_absent(
    conn: Connection,
    *,
    user_id: str,
    email: str | None,
    email_verified: bool,
    first_name: str | None,
    last_name: str | None,
    phone: str | None,
    tokens_not_before: datetime | None = None,
) -> UserRecord | None:
    """Insert a new user; None when another request inserted it first."""
    row = await conn.fetch_one(
        f"""
        INSERT INTO users (id, email, email_verified, first_name, last_name, phone,
            tokens_not_before)
        VALUES (:id, :email, :email_verified, :first_name, :last_name, :phone,
            :tokens_not_before)
        ON CONFLICT (id) DO NOTHING
        RETURNING {_COLUMNS}
        """,  # noqa: S608
        {
            "id": user_id,
            "email": email,
            "email_verified": email_verified,
            "first_name": first_name,
            "last_name": last_name,
            "phone": phone,
            "tokens_not_before": tokens_not_before,
        },
    )
    return None if row is None else UserRecord.from_row(row)


async def update_identity(
    conn: Connection, user_id: str, *, email: str | None, email_verified: bool
) -> UserRecord | None:
    row = await conn.fetch_one(
        f"""
        UPDATE users SET email = :email, email_verified = :email_verified, updated_at = now()
        WHERE id = :id
        RETURNING {_COLUMNS}
        """,  # noqa: S608
        {"id": user_id, "email": email, "email_verified": email_verified},
    )
    return None if row is None else UserRecord.from_row(row)


async def update_profile(
    conn: Connection, user_id: str, values: dict[str, str | None]
) -> UserRecord | None:
    """Set the given profile columns (first_name, last_name, phone) as the user's own."""
    allowed = {"first_name", "last_name", "phone"}
    assert set(values) <= allowed, values
    assignments = "".join(f"{column} = :{column}, " for column in sorted(values))
    row = await conn.fetch_one(
        f"""
        UPDATE users SET {assignments}profile_updated_at = now(), updated_at = now()
        WHERE id = :id
        RETURNING {_COLUMNS}
        """,  # noqa: S608
        {"id": user_id, **values},
    )
    return None if row is None else UserRecord.from_row(row)


async def apply_stripe_profile(
    conn: Connection,
    user_id: str,
    *,
    first_name: str | None,
    last_name: str | None,
    phone: str | None,
    changed_at: datetime,
) -> bool:
    """Take Stripe's name and phone unless the user edited their profile after `changed_at`,
    or has an edit still waiting to be pushed (then ours is the newer one: Stripe's
    timestamps are whole seconds, too coarse to order an echo against a fresh edit)."""
    changed = await conn.fetch_val(
        """
        UPDATE users SET first_name = :first_name, last_name = :last_name, phone = :phone,
            updated_at = now()
        WHERE id = :id
          AND (profile_updated_at IS NULL OR profile_updated_at <= :changed_at)
          AND NOT EXISTS (
              SELECT 1 FROM sync_jobs WHERE sync_jobs.user_id = users.id
                AND sync_jobs.kind = :kind
          )
          AND (first_name, last_name, phone) IS DISTINCT FROM (:first_name, :last_name, :phone)
        RETURNING true
        """,
        {
            "id": user_id,
            "first_name": first_name,
            "last_name": last_name,
            "phone": phone,
            "changed_at": changed_at,
            "kind": PROFILE_SYNC,
        },
    )
    return changed is True
