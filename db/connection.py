"""The per-request connection type, and the escape hatch to asyncpg for hot paths."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from databases import Database
from databases.core import Connection

__all__ = ["Connection", "Database", "as_dict", "raw"]


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
