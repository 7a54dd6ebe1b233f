"""Durable jobs (today: pushing a profile to the Stripe customer), one per user and kind.

Re-enqueueing a pending job bumps its version instead of adding a row, which coalesces
repeated updates; the worker completes a job only if no newer version arrived meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Connection, as_dict

PROFILE_SYNC = "profile_sync"


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: int
    user_id: str
    kind: str
    version: int
    attempts: int
    last_error: str | None
    next_attempt_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        return cls(**as_dict(row))


_COLUMNS = "id, user_id, kind, version, attempts, last_error, next_attempt_at"


async def enqueue(conn: Connection, user_id: str, kind: str) -> None:
    await conn.execute(
        """
        INSERT INTO sync_jobs (user_id, kind) VALUES (:user_id, :kind)
        ON CONFLICT (user_id, kind) DO UPDATE SET
            version = sync_jobs.version + 1,
            attempts = 0,
            next_attempt_at = now(),
            updated_at = now()
        """,
        {"user_id": user_id, "kind": kind},
    )


async def claim_due(conn: Connection, lease_seconds: float) -> JobRecord | None:
    row = await conn.fetch_one(
        f"""
        UPDATE sync_jobs SET
            attempts = attempts + 1,
            locked_until = now() + make_interval(secs => :lease)
        WHERE id = (
            SELECT id FROM sync_jobs
            WHERE next_attempt_at <= now() AND (locked_until IS NULL OR locked_until < now())
            ORDER BY next_attempt_at
            FOR UPDATE SKIP LOCKED
            LIMIT 1
        )
        RETURNING {_COLUMNS}
        """,  # noqa: S608
        {"lease": lease_seconds},
    )
    return None if row is None else JobRecord.from_row(row)


async def complete(conn: Connection, job: JobRecord) -> bool:
    """Remove the job unless a newer version was enqueued while it ran (then it runs again)."""
    done = await conn.fetch_val(
        "DELETE FROM sync_jobs WHERE id = :id AND version = :version RETURNING true",
        {"id": job.id, "version": job.version},
    )
    if done is None:
        await conn.execute(
            "UPDATE sync_jobs SET locked_until = NULL WHERE id = :id", {"id": job.id}
        )
    return done is True


async def retry_later(conn: Connection, job: JobRecord, error: str, delay_seconds: float) -> None:
    await conn.execute(
        """
        UPDATE sync_jobs SET last_error = :error, locked_until = NULL,
            next_attempt_at = CASE WHEN version = :version
                THEN now() + make_interval(secs => :delay) ELSE now() END
        WHERE id = :id
        """,
        {"id": job.id, "version": job.version, "error": error[:2000], "delay": delay_seconds},
    )
