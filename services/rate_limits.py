"""Per-user rate limits: every request, Stripe-backed work, exports, account deletions.

Every bucket and its period is defined here (`RateLimits.configured`); the numbers come from
settings. A limit of N per period lets N units through at once and then one more every
period/N (GCRA, see `db.rate_limits`), so a user who pauses gets their allowance back
gradually rather than at a window's edge. The state lives in PostgreSQL, so the limits hold
across every server process. Every attempt counts, also one that then fails: hammering a
failing Stripe call is still hammering. A refused attempt counts for nothing and changes
nothing else. Checks run outside any transaction, before the work they guard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from db import rate_limits as db_rate_limits
from db.connection import Pool
from services.errors import RateLimited

MINUTE = 60
HOUR = 60 * MINUTE


@dataclass(frozen=True, slots=True)
class Bucket:
    name: str  # the key in `rate_limits`; never rename one without migrating its rows
    what: str  # in the message: "Too many {what} requests" ("" for every request)
    limit: int  # units per period, all of them at once if need be; 0 turns the bucket off
    period_seconds: int

    @property
    def emission(self) -> timedelta:
        """The period divided by the limit, in whole microseconds rounded down, as
        PostgreSQL stores them: `limit` of them then fit in the period exactly, so the
        limit-th attempt of a burst is never refused by rounding."""
        period = timedelta(seconds=self.period_seconds)
        return timedelta(microseconds=(period // timedelta(microseconds=1)) // self.limit)

    @property
    def tolerance(self) -> timedelta:
        return timedelta(seconds=self.period_seconds) - self.emission

    def refusal(self, wait_seconds: float) -> RateLimited:
        seconds = max(1, math.ceil(wait_seconds))
        unit = "second" if seconds == 1 else "seconds"
        return RateLimited(
            f"Too many {self.what}{' ' if self.what else ''}requests; "
            f"try again in {seconds} {unit}.",
            retryAfter=seconds,
        )


@dataclass(frozen=True, slots=True)
class RateLimits:
    requests: Bucket  # every authenticated request
    stripe: Bucket  # each Stripe-backed field or mutation in a request
    export: Bucket  # the GraphQL `export` and GET /account/export, together
    deletion: Bucket  # deleteAccount

    @classmethod
    def configured(
        cls,
        *,
        requests_per_minute: int,
        stripe_per_minute: int,
        export_per_hour: int,
        delete_per_hour: int,
    ) -> RateLimits:
        return cls(
            requests=Bucket("request", "", requests_per_minute, MINUTE),
            stripe=Bucket("stripe", "billing", stripe_per_minute, MINUTE),
            export=Bucket("export", "data export", export_per_hour, HOUR),
            deletion=Bucket("delete", "account deletion", delete_per_hour, HOUR),
        )


async def check(pool: Pool, user_id: str, bucket: Bucket, *, cost: int = 1) -> None:
    """Count `cost` units of this attempt against the user's bucket; `RateLimited` when
    over (a cost above the whole limit is always over).

    Call it first, before anything else the attempt does, and outside any transaction: a
    refused attempt must change nothing, and a counted one stays counted even when what
    follows fails and rolls back.
    """
    if bucket.limit <= 0 or cost <= 0:
        return
    if cost > bucket.limit:
        raise RateLimited(
            f"This request needs {cost} {bucket.what} calls at once; at most "
            f"{bucket.limit} are allowed in {bucket.period_seconds} seconds.",
            retryAfter=bucket.period_seconds,
        )
    async with pool.connection() as pg:
        wait = await db_rate_limits.hit(
            pg,
            user_id,
            bucket.name,
            emission=bucket.emission,
            tolerance=bucket.tolerance,
            cost=cost,
        )
    if wait is not None:
        raise bucket.refusal(wait)


async def purge_stale(pool: Pool) -> int:
    """Forget state that no longer limits anyone (also of deleted accounts); returns how many."""
    async with pool.connection() as pg:
        return await db_rate_limits.purge_stale(pg)
