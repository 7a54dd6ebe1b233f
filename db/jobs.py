"""Durable jobs, one per user, kind and subject: pushing a profile to the Stripe customer
(subject ''), ending a duplicate subscription (subject: its ID).

Re-enqueueing a pending job bumps its version instead of adding a row, which coalesces
repeated updates (the changed fields are merged); the worker completes a job only if no
newer version arrived meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Pg

PROFILE_SYNC = "profile_sync"
DUPLICATE_SUBSCRIPTION = "duplicate_subscription"


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: int
    user_id: str
    kind: str
    subject: str
    version: int
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    fields: tuple[str, ...]  # profile columns changed since the last push ("email" included)
    previous_email: str | None  # the login email Stripe was last given, for an email change

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        values = list(row)
        values[8] = tuple(values[8])
        return cls(*values)  # the columns in the fields' order (COLUMNS)


COLUMNS = (
    "id, user_id, kind, subject, version, attempts, last_error, next_attempt_at, fields, "
    "previous_email"
)


async def enqueue(
    pg: Pg,
    user_id: str,
    kind: str,
    *,
    subject: str = "",
    fields: Iterable[str] = (),
    previous_email: str | None = None,
) -> None:
    """Queue the job, or merge into the one already queued: changed fields add up, and the
    earliest `previous_email` stays (it is what Stripe may still hold)."""
    await pg.execute(
        """
        INSERT INTO sync_jobs (user_id, kind, subject, fields, previous_email)
        VALUES ($1, $2, $3, $4::text[], $5)
        ON CONFLICT (user_id, kind, subject) DO UPDATE SET
            version = sync_jobs.version + 1,
            attempts = 0,
            next_attempt_at = now(),
            updated_at = now(),
            fields = ARRAY(
                SELECT DISTINCT f FROM unnest(sync_jobs.fields || EXCLUDED.fields) AS f ORDER BY f
            ),
            previous_email = COALESCE(sync_jobs.previous_email, EXCLUDED.previous_email)
        """,
        user_id,
        kind,
        subject,
        sorted(set(fields)),
        previous_email,
    )


async def claim_due(pg: Pg, lease_seconds: float) -> JobRecord | None:
    row = await pg.fetchrow(
        f"""
        UPDATE sync_jobs SET
            attempts = attempts + 1,
            locked_until = now() + make_interval(secs => $1)
        WHERE id = (
            SELECT id FROM sync_jobs
            WHERE next_attempt_at <= now() AND (locked_until IS NULL OR locked_until < now())
            ORDER BY next_attempt_at
            FOR UPDATE SKIP LOCKED
            LIMIT 1
        )
        RETURNING {COLUMNS}
        """,  # noqa: S608
        lease_seconds,
    )
    return None if row is None else JobRecord.from_row(row)


async def complete(pg: Pg, job: JobRecord, *, pushed_email: str | None = None) -> bool:
    """Remove the job unless a newer version was enqueued while it ran (then it runs again,
    knowing that Stripe now holds `pushed_email` when one was pushed)."""
    done = await pg.fetchval(
        "DELETE FROM sync_jobs WHERE id = $1 AND version = $2 RETURNING true",
        job.id,
        job.version,
    )
    if done is None:
        await pg.execute(
            """
            UPDATE sync_jobs SET locked_until = NULL,
                previous_email = COALESCE($2, previous_email)
            WHERE id = $1
            """,
            job.id,
            pushed_email,
        )
    return done is True


async def retry_later(pg: Pg, job: JobRecord, error: str, delay_seconds: float) -> None:
    await pg.execute(
        """
        UPDATE sync_jobs SET last_error = $3, locked_until = NULL,
            next_attempt_at = CASE WHEN version = $2
                THEN now() + make_interval(secs => $4) ELSE now() END
        WHERE id = $1
        """,
        job.id,
        job.version,
        error[:2000],
        delay_seconds,
    )


async def pending(pg: Pg, user_id: str, kind: str) -> bool:
    found = await pg.fetchval(
        "SELECT true FROM sync_jobs WHERE user_id = $1 AND kind = $2 LIMIT 1", user_id, kind
    )
    return found is True
