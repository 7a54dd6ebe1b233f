"""Rate-limit state: one GCRA "theoretical arrival time" per (user, bucket).

GCRA with emission interval `e` (the period divided by the limit) and tolerance `t` (the
period less `e`): an attempt is allowed when the stored time is at most `now + t`, and then
moves it to `max(stored, now) + e`. Up to `limit` attempts pass at once; after that, one
more every `e`. The database's clock is the only clock, so processes whose clocks disagree
still agree on the limits.
"""

from __future__ import annotations

from datetime import timedelta

from db.connection import Connection, raw

# One statement, so one round trip and atomic under concurrency: the upsert takes the row
# lock, and a concurrent attempt waits for it and then decides on the row as the first left
# it (ON CONFLICT DO UPDATE works on the newest version even in READ COMMITTED). The clock is
# read once per attempt and only after the lock is held, so attempts see times in the order
# they decide; `now()`, the statement's start, could run backwards across that order and
# refuse an attempt that is within the limit. A refused attempt writes its row too (`tat`
# unchanged), so that RETURNING can say it was refused and for how long.
_HIT = """
INSERT INTO rate_limits AS r (user_id, bucket, tat, allowed)
VALUES ($1, $2, clock_timestamp() + $3::interval, true)
ON CONFLICT (user_id, bucket) DO UPDATE SET (tat, allowed) = (
    SELECT CASE WHEN r.tat <= c.now + $4::interval
                THEN greatest(r.tat, c.now) + $3::interval
                ELSE r.tat END,
           r.tat <= c.now + $4::interval
    FROM (SELECT clock_timestamp() AS now) AS c
)
RETURNING allowed, extract(epoch FROM tat - clock_timestamp() - $4::interval)::float8
"""


async def hit(
    conn: Connection, user_id: str, bucket: str, *, emission: timedelta, tolerance: timedelta
) -> float | None:
    """Count one attempt; None when allowed, else the seconds until one would be."""
    async with raw(conn) as pg:
        row = await pg.fetchrow(_HIT, user_id, bucket, emission, tolerance)
    allowed: bool = row[0]
    wait: float = row[1]
    return None if allowed else wait


async def purge_stale(conn: Connection) -> int:
    """Drop rows whose time has passed: such a row decides exactly as no row would.

    A concurrent attempt that moves a row forward is safe: DELETE re-checks its condition
    on the row's newest version and skips it.
    """
    async with raw(conn) as pg:
        status: str = await pg.execute("DELETE FROM rate_limits WHERE tat <= now()")
    return int(status.rsplit(" ", 1)[-1])
