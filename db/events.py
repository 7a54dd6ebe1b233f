"""Stripe events: stored first, processed from here, failures kept visible."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Connection, as_dict, raw

_COLUMNS = (
    "id, type, created_at, payload, received_at, status, attempts, last_error, "
    "next_attempt_at, processed_at"
)


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: str
    type: str
    created_at: datetime
    payload: dict[str, Any]
    received_at: datetime
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    processed_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> EventRecord:
        data = as_dict(row)
        if isinstance(data["payload"], str):
            data["payload"] = json.loads(data["payload"])
        return cls(**data)


async def insert(
    conn: Connection, *, event_id: str, event_type: str, created_at: datetime, payload: str
) -> bool:
    """Record an event once; False for a duplicate delivery. The hot path of ingestion."""
    async with raw(conn) as pg:
        inserted = await pg.fetchval(
            """
            INSERT INTO stripe_events (id, type, created_at, payload)
            VALUES ($1, $2, $3, $4::jsonb)
            ON CONFLICT (id) DO NOTHING
            RETURNING true
            """,
            event_id,
            event_type,
            created_at,
            payload,
        )
    return inserted is True


async def claim_due(conn: Connection, lease_seconds: float) -> EventRecord | None:
    """Lease the oldest due event so no other worker, in any process, takes it meanwhile."""
    row = await conn.fetch_one(
        f"""
        UPDATE stripe_events SET
            attempts = attempts + 1,
            locked_until = now() + make_interval(secs => :lease)
        WHERE id = (
            SELECT id FROM stripe_events
            WHERE status = 'pending' AND next_attempt_at <= now()
              AND (locked_until IS NULL OR locked_until < now())
            ORDER BY next_attempt_at, created_at
            FOR UPDATE SKIP LOCKED
            LIMIT 1
        )
        RETURNING {_COLUMNS}
        """,  # noqa: S608
        {"lease": lease_seconds},
    )
    return None if row is None else EventRecord.from_row(row)


async def finish(conn: Connection, event_id: str, status: str) -> None:
    await conn.execute(
        """
        UPDATE stripe_events SET status = :status, processed_at = now(), locked_until = NULL,
            last_error = NULL
        WHERE id = :id
        """,
        {"id": event_id, "status": status},
    )


async def retry_later(
    conn: Connection, event_id: str, error: str, delay_seconds: float, *, give_up: bool
) -> None:
    await conn.execute(
        """
        UPDATE stripe_events SET
            status = CASE WHEN :give_up THEN 'failed' ELSE 'pending' END,
            last_error = :error,
            next_attempt_at = now() + make_interval(secs => :delay),
            locked_until = NULL
        WHERE id = :id
        """,
        {"id": event_id, "error": error[:2000], "delay": delay_seconds, "give_up": give_up},
    )


async def listing(conn: Connection, status: str | None, limit: int) -> list[EventRecord]:
    rows = await conn.fetch_all(
        f"""
        SELECT {_COLUMNS} FROM stripe_events
        WHERE CAST(:status AS text) IS NULL OR status = :status
        ORDER BY received_at DESC LIMIT :limit
        """,  # noqa: S608
        {"status": status, "limit": limit},
    )
    return [EventRecord.from_row(row) for row in rows]


async def requeue(conn: Connection, event_ids: list[str] | None) -> int:
    """Put failed events (all, or the given ones) back in line with a fresh attempt count."""
    rows = await conn.fetch_all(
        """
        UPDATE stripe_events SET status = 'pending', attempts = 0, next_attempt_at = now(),
            locked_until = NULL
        WHERE (CAST(:ids AS text[]) IS NULL AND status = 'failed') OR id = ANY(:ids)
        RETURNING id
        """,
        {"ids": event_ids},
    )
    return len(rows)
