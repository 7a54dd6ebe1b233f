"""The per-user unit of work, and leases that serialise a user's billing operations.

`user_transaction(pool, user_id)` is the one way services write a user's rows: a short
transaction holding the user's advisory lock, so that writers of one user (requests,
webhook processing, the worker's jobs) are ordered. Nothing waits on Stripe inside it:
Stripe is asked before or after, never during (see the README's "Who owns transactions").

A lease (`user_leases`) orders a user's billing operations across processes without
holding a connection, a transaction or a lock while they wait on Stripe: it is a row with
an expiry, taken with one statement and given back with another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from db.connection import Pg, Pool


async def lock_user(pg: Pg, user_id: str) -> None:
    """The user's lock, until the surrounding transaction ends."""
    await pg.execute("SELECT pg_advisory_xact_lock(hashtextextended('user:' || $1, 0))", user_id)


@asynccontextmanager
async def user_transaction(pool: Pool, user_id: str) -> AsyncIterator[Pg]:
    """One short transaction on the user's rows, under the user's lock."""
    async with pool.transaction() as pg:
        await lock_user(pg, user_id)
        yield pg


async def take_lease(pg: Pg, user_id: str, name: str, holder: str, seconds: float) -> bool:
    """Take the user's `name` lease for `seconds` unless someone else holds it unexpired."""
    taken = await pg.fetchval(
        """
        INSERT INTO user_leases AS l (user_id, name, holder, expires_at)
        VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4))
        ON CONFLICT (user_id, name) DO UPDATE SET
            holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
        WHERE l.expires_at < clock_timestamp() OR l.holder = EXCLUDED.holder
        RETURNING true
        """,
        user_id,
        name,
        holder,
        seconds,
    )
    return taken is True


async def give_back_lease(pg: Pg, user_id: str, name: str, holder: str) -> None:
    await pg.execute(
        "DELETE FROM user_leases WHERE user_id = $1 AND name = $2 AND holder = $3",
        user_id,
        name,
        holder,
    )
