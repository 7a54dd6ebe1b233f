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
