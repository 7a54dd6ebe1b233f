"""Users: one row per identity-provider subject."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from db.connection import Pg
from db.jobs import PROFILE_SYNC
from db.rate_limits import HIT

COLUMNS = (
    "id, email, email_verified, first_name, last_name, phone, profile_updated_at, "
    "tokens_not_before, created_at, updated_at"
)
PROFILE_COLUMNS = frozenset({"first_name", "last_name", "phone"})


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
        return cls(*row)  # the columns in the fields' order (COLUMNS)


_GET = f"SELECT {COLUMNS} FROM users WHERE id = $1"  # noqa: S608
# The caller's row and one request counted against their limit, in one round trip: every
# authenticated request starts here. Public so that `bench/reference.py` runs it bare.
GET_COUNTING_SQL = f"""
WITH hit AS ({HIT})
SELECT hit.allowed, hit.wait, {", ".join(f"u.{c.strip()}" for c in COLUMNS.split(","))}
FROM hit LEFT JOIN users u ON u.id = $1
"""  # noqa: S608


async def get(pg: Pg, user_id: str) -> UserRecord | None:
    row = await pg.fetchrow(_GET, user_id)
    return None if row is None else UserRecord.from_row(row)


async def get_counting_request(
    pg: Pg, user_id: str, bucket: str, *, emission: timedelta, tolerance: timedelta
) -> tuple[UserRecord | None, float | None]:
    """The user's row (None when absent), and None when this request is within the user's
    `bucket` limit, else the seconds until one would be (see `db.rate_limits`)."""
    row = await pg.fetchrow(GET_COUNTING_SQL, user_id, bucket, emission, tolerance, 1)
    wait: float | None = None if row[0] else row[1]
    user = None if row[2] is None else UserRecord.from_row(tuple(row)[2:])
    return user, wait


async def insert_if_absent(
    pg: Pg,
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
    row = await pg.fetchrow(
        f"""
        INSERT INTO users (id, email, email_verified, first_name, last_name, phone,
            tokens_not_before)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (id) DO NOTHING
        RETURNING {COLUMNS}
        """,  # noqa: S608
        user_id,
        email,
        email_verified,
        first_name,
        last_name,
        phone,
        tokens_not_before,
    )
    return None if row is None else UserRecord.from_row(row)


async def update_identity(
    pg: Pg, user_id: str, *, email: str | None, email_verified: bool
) -> UserRecord | None:
    row = await pg.fetchrow(
        f"""
        UPDATE users SET email = $2, email_verified = $3, updated_at = now()
        WHERE id = $1
        RETURNING {COLUMNS}
        """,  # noqa: S608
        user_id,
        email,
        email_verified,
    )
    return None if row is None else UserRecord.from_row(row)


async def update_profile(pg: Pg, user_id: str, values: dict[str, str | None]) -> UserRecord | None:
    """Set the given profile columns (first_name, last_name, phone) as the user's own."""
    assert set(values) <= PROFILE_COLUMNS, values
    columns = sorted(values)
    assignments = "".join(f"{column} = ${i}, " for i, column in enumerate(columns, start=2))
    row = await pg.fetchrow(
        f"""
        UPDATE users SET {assignments}profile_updated_at = now(), updated_at = now()
        WHERE id = $1
        RETURNING {COLUMNS}
        """,  # noqa: S608
        user_id,
        *(values[column] for column in columns),
    )
    return None if row is None else UserRecord.from_row(row)


async def apply_stripe_profile(
    pg: Pg,
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
    changed = await pg.fetchval(
        """
        UPDATE users SET first_name = $2, last_name = $3, phone = $4, updated_at = now()
        WHERE id = $1
          AND (profile_updated_at IS NULL OR profile_updated_at <= $5)
          AND NOT EXISTS (
              SELECT 1 FROM sync_jobs WHERE sync_jobs.user_id = users.id
                AND sync_jobs.kind = $6
          )
          AND (first_name, last_name, phone) IS DISTINCT FROM ($2, $3, $4)
        RETURNING true
        """,
        user_id,
        first_name,
        last_name,
        phone,
        changed_at,
        PROFILE_SYNC,
    )
    return changed is True
