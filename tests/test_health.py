"""Liveness and readiness as an orchestrator sees them."""

from __future__ import annotations

import asyncpg
import httpx

from db.urls import database_name


async def test_healthz_says_the_process_is_up(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_is_ready_when_migrations_are_at_head(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_readyz_is_503_when_migrations_are_behind(
    client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    await pg.execute("UPDATE alembic_version SET version_num = '0000'")
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == "migrations not current"


async def test_readyz_is_503_when_the_database_is_gone(
    client: httpx.AsyncClient, pg_server_url: str, database_url: str
) -> None:
    name = database_name(database_url)
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reason"] == "database unreachable"

        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        recovered = await client.get("/readyz")
        assert recovered.status_code == 200
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


def test_the_head_revision_read_from_the_files_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config, head_revision

    assert head_revision() == ScriptDirectory.from_config(alembic_config("")).get_current_head()
