"""Stripe events: stored as received, processed from here, failures kept visible."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Pg

COLUMNS = (
    "id, type, created_at, payload, received_at, status, attempts, last_error, "
    "next_attempt_at, processed_at, customer_id, processings"
)


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: str
    type: str
    created_at: datetime | None  # Stripe's `created`; None when it was not a usable time
    payload: bytes  # the body exactly as Stripe signed it
    received_at: datetime
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    processed_at: datetime | None
    customer_id: str | None
    processings: int  # times it was finished (processed or ignored)

    @classmethod
    def from_row(cls, row: Any) -> EventRecord:
        return cls(*row)  # the columns in the fields' order (COLUMNS)


# Public so that `bench/reference.py` runs it bare.
INSERT_SQL = """
INSERT INTO stripe_events (id, type, created_at, payload, customer_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO NOTHING
RETURNING true
"""


async def insert(
    pg: Pg,
    *,
    event_id: str,
    event_type: str,
    created_at: datetime | None,
    payload: bytes,
    customer_id: str | None,
) -> bool:
    """Record an event once; False for a duplicate delivery. The hot path of ingestion."""
    inserted = await pg.fetchval(
        INSERT_SQL,
        event_id,
        event_type,
        created_at,
        payload,
        customer_id,
    )
    return inserted is True


_DUE = """
    status = 'pending' AND next_attempt_at <= now()
    AND (locked_until IS NULL OR locked_until < now())
"""


async def claim_due(pg: Pg, lease_seconds: float, limit: int) -> list[EventRecord]:
    """Lease the oldest due event and, with it, every other due event of the same customer
    (at most `limit`), so that one re-read from Stripe answers them all. Customers whose
    events another worker holds are skipped, so no two workers re-read one customer at once.
    """
    rows = await pg.fetch(
        f"""
        WITH first AS (
            SELECT e.id, e.customer_id FROM stripe_events e
            WHERE {_DUE}
              AND (e.customer_id IS NULL OR NOT EXISTS (
                  SELECT 1 FROM stripe_events held
                  WHERE held.customer_id = e.customer_id AND held.status = 'pending'
                    AND held.locked_until >= now()))
            ORDER BY e.next_attempt_at, e.created_at
            FOR UPDATE SKIP LOCKED
            LIMIT 1
        ), rest AS (
            SELECT e.id FROM stripe_events e JOIN first ON e.customer_id = first.customer_id
            WHERE e.id <> first.id AND {_DUE}
            ORDER BY e.created_at
            LIMIT $2 - 1
            FOR UPDATE OF e SKIP LOCKED
        )
        UPDATE stripe_events SET
            attempts = attempts + 1,
            locked_until = now() + make_interval(secs => $1)
        WHERE id IN (SELECT id FROM first) OR id IN (SELECT id FROM rest)
        RETURNING {COLUMNS}
        """,  # noqa: S608
        lease_seconds,
        limit,
    )
    return sorted(
        (EventRecord.from_row(row) for row in rows),
        key=lambda e: (e.created_at is None, e.created_at, e.received_at),
    )


async def finish(pg: Pg, event_id: str, status: str, reason: str | None = None) -> None:
    """Processed or ignored (`reason` says why an event was ignored or could not be)."""
    await pg.execute(
        """
        UPDATE stripe_events SET status = $2, processed_at = now(), locked_until = NULL,
            last_error = $3, processings = processings + 1
        WHERE id = $1
        """,
        event_id,
        status,
        None if reason is None else reason[:2000],
    )


async def retry_later(
    pg: Pg, event_id: str, error: str, delay_seconds: float, *, give_up: bool
) -> None:
    await pg.execute(
        """
        UPDATE stripe_events SET
            status = CASE WHEN $4 THEN 'failed' ELSE 'pending' END,
            last_error = $2,
            next_attempt_at = now() + make_interval(secs => $3),
            locked_until = NULL
        WHERE id = $1
        """,
        event_id,
        error[:2000],
        delay_seconds,
        give_up,
    )


async def listing(pg: Pg, status: str | None, limit: int) -> list[EventRecord]:
    rows = await pg.fetch(
        f"""
        SELECT {COLUMNS} FROM stripe_events
        WHERE $1::text IS NULL OR status = $1
        ORDER BY received_at DESC LIMIT $2
        """,  # noqa: S608
        status,
        limit,
    )
    return [EventRecord.from_row(row) for row in rows]


async def requeue(pg: Pg, event_ids: list[str] | None) -> int:
    """Put failed events (all, or the given ones) back in line with a fresh attempt count."""
    rows = await pg.fetch(
        """
        UPDATE stripe_events SET status = 'pending', attempts = 0, next_attempt_at = now(),
            locked_until = NULL
        WHERE ($1::text[] IS NULL AND status = 'failed') OR id = ANY($1::text[])
        RETURNING id
        """,
        event_ids,
    )
    return len(rows)
