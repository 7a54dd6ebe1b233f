"""Rate-limit state: one GCRA "theoretical arrival time" per (user, bucket).

GCRA with emission interval `e` (the period divided by the limit) and tolerance `t` (the
period less `e`): an attempt costing `n` units is allowed when the stored time, or now if
later, plus `(n - 1)·e` is at most `now + t`, and then moves the stored time to
`max(stored, now) + n·e`. Up to `limit` units pass at once; after that, one more every `e`.
The database's clock is the only clock, so processes whose clocks disagree still agree on
the limits. The table is UNLOGGED (migration 0008): a crash forgets the limits, which is
harmless, and in exchange a check never waits for the write-ahead log to reach the disk.
"""

from __future__ import annotations

from datetime import timedelta

from db.connection import Pg

# One statement, so one round trip and atomic under concurrency: the upsert takes the row
# lock, and a concurrent attempt waits for it and then decides on the row as the first left
# it (ON CONFLICT DO UPDATE works on the newest version even in READ COMMITTED). The clock is
# read once per attempt and only after the lock is held, so attempts see times in the order
# they decide; `now()`, the statement's start, could run backwards across that order and
# refuse an attempt that is within the limit. A refused attempt writes its row too (`tat`
# unchanged), so that RETURNING can say it was refused and for how long.
# $1 user, $2 bucket, $3 emission, $4 tolerance, $5 cost (units).
HIT = """
INSERT INTO rate_limits AS r (user_id, bucket, tat, allowed)
SELECT $1, $2, CASE WHEN k.ok THEN c.now + $3::interval * $5::int ELSE c.now END, k.ok
FROM (SELECT clock_timestamp() AS now) AS c,
     (SELECT $3::interval * ($5::int - 1) <= $4::interval AS ok) AS k
ON CONFLICT (user_id, bucket) DO UPDATE SET (tat, allowed) = (
    SELECT CASE WHEN greatest(r.tat, c.now) + $3::interval * ($5::int - 1) <= c.now + $4::interval
                THEN greatest(r.tat, c.now) + $3::interval * $5::int
                ELSE r.tat END,
           greatest(r.tat, c.now) + $3::interval * ($5::int - 1) <= c.now + $4::interval
    FROM (SELECT clock_timestamp() AS now) AS c
)
RETURNING allowed, extract(
    epoch FROM tat + $3::interval * ($5::int - 1) - clock_timestamp() - $4::interval
)::float8 AS wait
"""


async def hit(
    pg: Pg,
    user_id: str,
    bucket: str,
    *,
    emission: timedelta,
    tolerance: timedelta,
    cost: int = 1,
) -> float | None:
    """Count one attempt of `cost` units; None when allowed, else the seconds until it
    would be."""
    row = await pg.fetchrow(HIT, user_id, bucket, emission, tolerance, cost)
    allowed: bool = row[0]
    wait: float = row[1]
    return None if allowed else wait


async def purge_stale(pg: Pg) -> int:
    """Drop rows whose time has passed: such a row decides exactly as no row would.

    A concurrent attempt that moves a row forward is safe: DELETE re-checks its condition
    on the row's newest version and skips it.
    """
    status: str = await pg.execute("DELETE FROM rate_limits WHERE tat <= now()")
    return int(status.rsplit(" ", 1)[-1])


async def delay(pg: Pg, user_id: str, bucket: str, seconds: float) -> None:
    """Hold the bucket back: nothing more passes for `seconds` beyond what it allowed."""
    await pg.execute(
        """
        INSERT INTO rate_limits AS r (user_id, bucket, tat, allowed)
        VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3), false)
        ON CONFLICT (user_id, bucket) DO UPDATE SET
            tat = greatest(r.tat, clock_timestamp()) + make_interval(secs => $3)
        """,
        user_id,
        bucket,
        seconds,
    )
