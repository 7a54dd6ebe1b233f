"""What `/readyz` and the metrics ask the database."""

from __future__ import annotations

import asyncpg

from db.connection import Pg


async def migration_version(pg: Pg) -> str | None:
    """The applied Alembic revision; None when migrations never ran."""
    try:
        version: str | None = await pg.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return None
    return version


async def queue_depths(pg: Pg) -> dict[str, int]:
    """Work waiting in PostgreSQL, for the metrics."""
    row = await pg.fetchrow(
        """
        SELECT
            (SELECT count(*) FROM stripe_events WHERE status = 'pending') AS events_pending,
            (SELECT count(*) FROM stripe_events WHERE status = 'failed') AS events_failed,
            (SELECT count(*) FROM sync_jobs) AS jobs_pending
        """
    )
    return dict(row)
