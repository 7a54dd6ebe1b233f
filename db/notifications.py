"""In-app notifications, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Connection, as_dict


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    id: int
    user_id: str
    kind: str
    message: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> NotificationRecord:
        return cls(**as_dict(row))


async def newest(conn: Connection, user_id: str, limit: int) -> list[NotificationRecord]:
    rows = await conn.fetch_all(
        """
        SELECT id, user_id, kind, message, created_at FROM notifications
        WHERE user_id = :user_id ORDER BY created_at DESC, id DESC LIMIT :limit
        """,
        {"user_id": user_id, "limit": limit},
    )
    return [NotificationRecord.from_row(row) for row in rows]


async def add(conn: Connection, user_id: str, kind: str, message: str) -> None:
    await conn.execute(
        "INSERT INTO notifications (user_id, kind, message) VALUES (:user_id, :kind, :message)",
        {"user_id": user_id, "kind": kind, "message": message},
    )
