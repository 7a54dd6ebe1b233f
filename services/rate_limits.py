"""Per-user rate limits on what costs us or Stripe most: Stripe-backed mutations, exports,
account deletions.

Every bucket and its period is defined here (`RateLimits.configured`); the numbers come from
settings. A limit of N per period lets N attempts through at once and then one more every
period/N (GCRA, see `db.rate_limits`), so a user who pauses gets their allowance back
gradually rather than at a window's edge. The state lives in PostgreSQL, so the limits hold
across every server process. Every attempt counts, also one that then fails: hammering a
failing Stripe call is still hammering. A refused attempt counts for nothing and changes
nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from db import rate_limits as db_rate_limits
from db.connection import Connection
from services.errors import RateLimited

MINUTE = 60
HOUR = 60 * MINUTE


@dataclass(frozen=True, slots=True)
class Bucket:
    name: str  # the key in `rate_limits`; never rename one without migrating its rows
    what: str  # in the message: "Too many {what} requests"
    limit: int  # attempts per period, all of them at once if need be; 0 turns the bucket off
    period_seconds: int


@dataclass(frozen=True, slots=True)
class RateLimits:
    stripe: Bucket  # createCheckoutSession, createPortalSession, syncSubscription
    export: Bucket  # the GraphQL `export` and GET /account/export, together
    deletion: Bucket  # deleteAccount

    @classmethod
    def configured(
        cls, *, stripe_per_minute: int, export_per_hour: int, delete_per_hour: int
    ) -> RateLimits:
        return cls(
            stripe=Bucket("stripe", "billing", stripe_per_minute, MINUTE),
            export=Bucket("export", "data export", export_per_hour, HOUR),
            deletion=Bucket("delete", "account deletion", delete_per_hour, HOUR),
        )


async def check(conn: Connection, user_id: str, bucket: Bucket) -> None:
    """Count this attempt against the user's bucket; raises `RateLimited` when over.

    Call it first, before anything else the attempt does, and outside any transaction: a
    refused attempt must change nothing, and a counted one stays counted even when what
    follows fails and rolls back.
    """
    if bucket.limit <= 0:
        return
    period = timedelta(seconds=bucket.period_seconds)
    # Whole microseconds, rounded down, as PostgreSQL stores them: `limit` of them then fit
    # in the period exactly, so the limit-th attempt of a burst is never refused by rounding.
    emission = timedelta(microseconds=(period // timedelta(microseconds=1)) // bucket.limit)
    wait = await db_rate_limits.hit(
        conn, user_id, bucket.name, emission=emission, tolerance=period - emission
    )
    if wait is None:
        return
    seconds = max(1, math.ceil(wait))
    unit = "second" if seconds == 1 else "seconds"
    raise RateLimited(
        f"Too many {bucket.what} requests; try again in {seconds} {unit}.", retryAfter=seconds
    )


async def purge_stale(conn: Connection) -> int:
    """Forget state that no longer limits anyone (also of deleted accounts); returns how many."""
    return await db_rate_limits.purge_stale(conn)
