"""What `/readyz` asks the database."""

from __future__ import annotations

import asyncpg

from db.connection import Connection, raw


async def migration_version(conn: Connection) -> str | None:
    """The applied Alembic revision; None when migrations never ran."""
    async with raw(conn) as pg:
        try:
            version: str | None = await pg.fetchval("SELECT version_num FROM alembic_version")
        except asyncpg.UndefinedTableError:
            return None
    return version


async def queue_depths(conn: Connection) -> dict[str, int]:
    """Work waiting in PostgreSQL, for the metrics."""
    async with raw(conn) as pg:
        row = await pg.fetchrow(
            """
            SELECT
                (SELECT count(*) FROM stripe_events WHERE status = 'pending') AS events_pending,
                (SELECT count(*) FROM stripe_events WHERE status = 'failed') AS events_failed,
                (SELECT count(*) FROM sync_jobs) AS jobs_pending
            """
        )
    return dict(row)
