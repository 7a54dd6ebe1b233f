"""The per-request connection type, and the escape hatch to asyncpg for hot paths."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from databases import Database
from databases.core import Connection

__all__ = [
    "Connection",
    "Database",
    "PoolExhausted",
    "acquire",
    "as_dict",
    "connect",
    "pool_stats",
    "pooled",
    "raw",
    "release",
]


class PoolExhausted(Exception):
    """No pool connection became free in time."""


async def acquire(database: Database, within: float) -> Connection:
    """A pool connection within `within` seconds, so a saturated pool fails fast, not hangs.

    Always a fresh `Connection`, never `databases`' task-bound one: a long-lived task (the
    worker) would otherwise keep reusing one whose use count a failed COMMIT left raised,
    with a dead connection inside. Give it back with `release`.
    """
    connection = Connection(database, database._backend)
    async with _at_most(within):
        await connection.__aenter__()
    return connection


@asynccontextmanager
async def _at_most(within: float) -> AsyncIterator[None]:
    """Waiting for the pool: `PoolExhausted` after `within` seconds. (Around the wait only:
    asyncpg's own acquire timeout would start a task per acquisition.)"""
    try:
        async with asyncio.timeout(within):
            yield
    except TimeoutError as exc:
        raise PoolExhausted(f"no database connection free within {within:g} s") from exc


async def release(connection: Connection) -> None:
    """Back to the pool, even when a COMMIT or ROLLBACK that failed on a lost connection
    left `databases`' use count raised (the pool then replaces the dead connection)."""
    while connection._connection_counter > 0:
        await connection.__aexit__(None, None, None)


@asynccontextmanager
async def connect(database: Database, within: float) -> AsyncIterator[Connection]:
    connection = await acquire(database, within)
    try:
        yield connection
    finally:
        await release(connection)


@asynccontextmanager
async def pooled(database: Database, within: float) -> AsyncIterator[Any]:
    """An asyncpg connection straight from the pool under `databases`, for the one-query read
    every authenticated request starts with: no `databases` connection, task lookup or query
    lock to pay for. Nothing that needs a transaction belongs here."""
    pool = database._backend._pool
    async with _at_most(within):
        pg = await pool.acquire()
    try:
        yield pg
    finally:
        await pool.release(pg)


def pool_stats(database: Database) -> dict[str, int]:
    """Sizes of the asyncpg pool under `databases` (for metrics)."""
    pool = getattr(database._backend, "_pool", None)
    if pool is None:
        return {}
    size, idle = pool.get_size(), pool.get_idle_size()
    return {"in_use": size - idle, "idle": idle, "max": pool.get_max_size()}


@asynccontextmanager
async def raw(conn: Connection) -> AsyncIterator[Any]:
    """The asyncpg connection under `databases`, for queries where its SQL compilation costs.

    It takes the lock `databases` takes for its own queries, so resolvers running
    concurrently on one request's connection never interleave on the wire.
    """
    async with conn._query_lock:
        yield conn.raw_connection


def as_dict(record: Any) -> dict[str, Any]:
    """A row from either `databases` or asyncpg as a plain dict."""
    mapping: Mapping[str, Any] = getattr(record, "_mapping", record)
    return dict(mapping.items())
