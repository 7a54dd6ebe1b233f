"""Connections: the pool is `databases`'; every statement is asyncpg's own.

`Pool.connection()` lends one pooled connection for one unit of work and takes it back at
the end, so no request, job or event holds a connection while it waits on anything else
(Stripe above all). `Pool.transaction()` adds BEGIN/COMMIT; `db.locks.user_transaction`
adds the user's lock on top.

One SQL dialect: asyncpg's (`$1` parameters), on the connection `databases` lends
(`Database.connection()`, then `Connection.raw_connection`: `databases`' public API only).
Transactions are asyncpg's too: `databases`' own `Transaction` raises its connection's use
count on BEGIN and lowers it only after a successful COMMIT, so a COMMIT that fails on a
lost connection would keep that connection out of the pool for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Literal, TypeAlias

import asyncpg
from databases import Database

__all__ = ["Database", "Pg", "Pool", "PoolExhausted", "as_dict"]

# An asyncpg connection (a pool proxy); asyncpg ships no type hints.
Pg: TypeAlias = Any

Isolation = Literal["read_committed", "repeatable_read", "serializable"]


class PoolExhausted(Exception):
    """No pool connection became free in time."""


# What the database going away, or coming back, looks like to its client: the server's
# errors, a refused or broken socket, asyncpg's own errors about a connection the server
# closed under a statement (seen after a restart: "cannot switch to state 12; another
# operation is in progress"), or no connection free in time. Work that failed with one of
# these is worth trying again a moment later.
UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    PoolExhausted,
)


class Pool:
    """The process's connections: `databases`' pool with a bound on how long to wait.

    `acquire_timeout` (seconds) is how long a caller waits for a free connection before
    `PoolExhausted`: a saturated pool answers fast instead of queueing without end.
    """

    def __init__(self, database: Database, *, acquire_timeout: float, max_size: int) -> None:
        self.database = database
        self.acquire_timeout = acquire_timeout
        self.max_size = max_size
        self.in_use = 0  # lent by this object now, for the metrics

    async def connect(self) -> None:
        await self.database.connect()

    async def disconnect(self) -> None:
        await self.database.disconnect()

    @asynccontextmanager
    async def connection(self, within: float | None = None) -> AsyncIterator[Pg]:
        """A pooled asyncpg connection for one unit of work; `PoolExhausted` after `within`
        seconds (default: the pool's `acquire_timeout`) without one.

        `databases` lends one connection per asyncio task, so nested uses in one task share
        it; concurrent tasks (graphql-core resolves fields in tasks of their own) each get
        their own, and never interleave statements on one connection.
        """
        lent = self.database.connection()
        async with AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(self.acquire_timeout if within is None else within):
                    await stack.enter_async_context(lent)
            except TimeoutError as exc:
                wait = self.acquire_timeout if within is None else within
                raise PoolExhausted(f"no database connection free within {wait:g} s") from exc
            self.in_use += 1
            try:
                yield lent.raw_connection
            finally:
                self.in_use -= 1

    @asynccontextmanager
    async def transaction(
        self, *, isolation: Isolation | None = None, readonly: bool = False
    ) -> AsyncIterator[Pg]:
        """A connection inside one transaction: committed when the block ends normally,
        rolled back when it raises."""
        async with (
            self.connection() as pg,
            pg.transaction(isolation=isolation, readonly=readonly),
        ):
            yield pg

    def stats(self) -> dict[str, int]:
        """Connections lent now and the most there can be, for the metrics."""
        return {"in_use": self.in_use, "max": self.max_size}


def as_dict(record: Any) -> dict[str, Any]:
    """An asyncpg record as a plain dict."""
    mapping: Mapping[str, Any] = record
    return dict(mapping.items())
