"""Real PostgreSQL for every test: one migrated template, cloned into a fresh database per test.

A clone (not a rolled-back transaction) lets tests run truly concurrent requests on
separate pool connections, which the race tests need.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp

from app import logging as log_setup
from app.edge import Edge
from app.main import create_app
from app.runtime import Runtime
from app.settings import Settings
from db import embedded, migrate
from db.urls import with_database
from tests.servers import Farm, farm
from tests.support.processes import cloned_database
from tests.support.stripe import FakeStripe
from tests.support.tokens import TEST_JWT_SECRET, make_token


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """DATABASE_URL when given (its database is used only to create test databases)."""
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="billing-test-pg-") as tmp:
        server = embedded.start(Path(tmp) / "pg", throwaway=True)
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
async def template_db(pg_server_url: str) -> AsyncIterator[str]:
    name = f"billing_template_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await asyncio.to_thread(migrate.upgrade, with_database(pg_server_url, name))
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database_url(pg_server_url: str, template_db: str) -> AsyncIterator[str]:
    async with cloned_database(pg_server_url, template_db) as url:
        yield url


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for arranging and asserting on rows, outside the app."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override per test module or test to configure the app under test."""
    return {}


@pytest.fixture
def settings(database_url: str, tmp_path: Path, settings_overrides: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "auth_jwt_secret": TEST_JWT_SECRET,
        "app_env": "development",
        "data_dir": tmp_path / "data",
        "stripe_secret_key": None,
        "stripe_webhook_secret": None,
        "run_worker": False,
        "stripe_api_base": None,
        "stripe_price_pro": None,
        "stripe_portal_configuration_id": None,
        "auth_jwks_url": None,
        "auth_issuer": None,
        "auth_audience": None,
        "cors_origins": None,
        "plans_file": None,
        "app_url": "http://localhost:3000",
    }
    values.update(settings_overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def edge(settings: Settings) -> Edge:
    """The app as `create_app` built it (the lifespan manager wraps it)."""
    return create_app(settings)


@pytest.fixture
async def lifespan(edge: Edge) -> AsyncIterator[LifespanManager]:
    async with LifespanManager(edge) as manager:
        yield manager


@pytest.fixture
def app(lifespan: LifespanManager) -> ASGIApp:
    return lifespan.app


@pytest.fixture
def runtime(lifespan: LifespanManager) -> Runtime:
    """What the lifespan built (pool, Stripe gateway, worker), for driving the worker."""
    runtime: Runtime = lifespan._state["runtime"]
    return runtime


@pytest.fixture
async def two_processes(settings: Settings) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two apps on one database, each with its own pool, as two server processes would be."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            manager = await stack.enter_async_context(LifespanManager(create_app(settings)))
            transport = httpx.ASGITransport(app=manager.app)
            clients.append(
                await stack.enter_async_context(
                    httpx.AsyncClient(transport=transport, base_url="http://testserver")
                )
            )
        yield clients


@pytest.fixture
async def client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def token() -> Callable[..., str]:
    return make_token


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """JSON logging to the stream `capsys` captures (so it is set up first)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    log_setup.configure(json_format=True)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def fake_stripe(stripe_server: FakeStripe) -> FakeStripe:
    """The fake Stripe, emptied for this test."""
    stripe_server.reset()
    return stripe_server


@pytest.fixture
def pro_price(fake_stripe: FakeStripe) -> str:
    price_id: str = fake_stripe.add_price(unit_amount=1500, currency="usd", interval="month")["id"]
    return price_id


@pytest.fixture
def stripe_settings(fake_stripe: FakeStripe, pro_price: str) -> dict[str, Any]:
    """Settings that point the app's real Stripe SDK at the fake; short timeouts."""
    return {
        "stripe_secret_key": "sk_test_fake",
        "stripe_api_base": fake_stripe.url,
        "stripe_price_pro": pro_price,
        "stripe_timeout_seconds": 2.0,
        "stripe_max_network_retries": 2,
    }


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, stripe_settings: dict[str, Any]
) -> None:
    """The environment `python -m app …` (the operator commands) reads, pointed at this
    test's database and the fake Stripe."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", stripe_settings["stripe_secret_key"])
    monkeypatch.setenv("STRIPE_API_BASE", stripe_settings["stripe_api_base"])
    monkeypatch.setenv("STRIPE_PRICE_PRO", stripe_settings["stripe_price_pro"])
    monkeypatch.setenv("STRIPE_MAX_NETWORK_RETRIES", "0")


@pytest.fixture
async def servers(database_url: str) -> AsyncIterator[Farm]:
    """Real `python -m app serve` processes on the test's database, stopped afterwards."""
    async with farm() as started:
        yield started
