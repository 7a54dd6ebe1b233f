"""Usage records the rest of a backend reports for a user, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Connection, as_dict


@dataclass(frozen=True, slots=True)
class UsageRecordRow:
    id: int
    user_id: str
    metric: str
    quantity: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> UsageRecordRow:
        return cls(**as_dict(row))


async def newest(conn: Connection, user_id: str, limit: int) -> list[UsageRecordRow]:
    rows = await conn.fetch_all(
        """
        SELECT id, user_id, metric, quantity, created_at FROM usage_records
        WHERE user_id = :user_id ORDER BY created_at DESC, id DESC LIMIT :limit
        """,
        {"user_id": user_id, "limit": limit},
    )
    return [UsageRecordRow.from_row(row) for row in rows]


async def insert(
    conn: Connection, user_id: str, metric: str, quantity: int
) -> UsageRecordRow | None:
    """Record usage for an existing user; None when there is no such user."""
    row = await conn.fetch_one(
        """
        INSERT INTO usage_records (user_id, metric, quantity)
        SELECT id, :metric, :quantity FROM users WHERE id = :user_id
        RETURNING id, user_id, metric, quantity, created_at
        """,
        {"user_id": user_id, "metric": metric, "quantity": quantity},
    )
    return None if row is None else UsageRecordRow.from_row(row)
