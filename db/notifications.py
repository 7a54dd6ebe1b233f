"""In-app notifications, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Pg

COLUMNS = "id, user_id, kind, message, url, created_at"


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    id: int
    user_id: str
    kind: str
    message: str
    url: str | None  # where the user acts on it, if anywhere
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> NotificationRecord:
        return cls(*row)  # the columns in the fields' order (COLUMNS)


async def newest(pg: Pg, user_id: str, limit: int) -> list[NotificationRecord]:
    rows = await pg.fetch(
        f"""
        SELECT {COLUMNS} FROM notifications
        WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2
        """,  # noqa: S608
        user_id,
        limit,
    )
    return [NotificationRecord.from_row(row) for row in rows]


async def add(
    pg: Pg,
    user_id: str,
    kind: str,
    message: str,
    *,
    url: str | None = None,
    event_id: str | None = None,
) -> bool:
    """Add a notification; one caused by a Stripe event (`event_id`) is added once per
    kind, however often the event is processed. False when it was there already."""
    added = await pg.fetchval(
        """
        INSERT INTO notifications (user_id, kind, message, url, event_id)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (event_id, kind) WHERE event_id IS NOT NULL DO NOTHING
        RETURNING true
        """,
        user_id,
        kind,
        message,
        url,
        event_id,
    )
    return added is True
