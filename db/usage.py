"""Usage records the rest of a backend reports for a user, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Pg

COLUMNS = "id, user_id, metric, quantity, created_at"
NEWEST_SQL = f"""
    SELECT {COLUMNS} FROM usage_records
    WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2
"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class UsageRecordRow:
    id: int
    user_id: str
    metric: str
    quantity: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> UsageRecordRow:
        return cls(*row)  # the columns in the fields' order (COLUMNS)


async def newest(pg: Pg, user_id: str, limit: int) -> list[UsageRecordRow]:
    rows = await pg.fetch(NEWEST_SQL, user_id, limit)
    return [UsageRecordRow.from_row(row) for row in rows]


async def insert(pg: Pg, user_id: str, metric: str, quantity: int) -> UsageRecordRow | None:
    """Record usage for an existing user; None when there is no such user."""
    row = await pg.fetchrow(
        f"""
        INSERT INTO usage_records (user_id, metric, quantity)
        SELECT id, $2, $3 FROM users WHERE id = $1
        RETURNING {COLUMNS}
        """,  # noqa: S608
        user_id,
        metric,
        quantity,
    )
    return None if row is None else UsageRecordRow.from_row(row)
