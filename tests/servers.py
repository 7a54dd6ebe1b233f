"""Real server processes for the scale-out and fault tests: `python -m app serve` subprocesses.

Each runs migrations, the HTTP server and its worker exactly as in production, on its own
loopback port, against the test's database and the fake Stripe. The processes are stopped
(SIGTERM, then SIGKILL) when the test ends, before its database is dropped; their logs are
printed then, so a failing test shows them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.helpers import post_webhook
from tests.support.processes import ServerProcess
from tests.support.tokens import TEST_JWT_SECRET

WEBHOOK_SECRET = "whsec_servers"


def server_env(
    database_url: str, stripe_settings: Mapping[str, Any], tmp_dir: str, **extra: str
) -> dict[str, str]:
    """The environment of a server process on the test's database and the fake Stripe."""
    return {
        "DATABASE_URL": database_url,
        "DATA_DIR": tmp_dir,
        "AUTH_JWT_SECRET": TEST_JWT_SECRET,
        "STRIPE_SECRET_KEY": str(stripe_settings["stripe_secret_key"]),
        "STRIPE_API_BASE": str(stripe_settings["stripe_api_base"]),
        "STRIPE_PRICE_PRO": str(stripe_settings["stripe_price_pro"]),
        "STRIPE_TIMEOUT_SECONDS": str(stripe_settings["stripe_timeout_seconds"]),
        "STRIPE_MAX_NETWORK_RETRIES": str(stripe_settings["stripe_max_network_retries"]),
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WORKER_POLL_SECONDS": "0.05",
        "DB_POOL_MAX_SIZE": "5",
        "ACCESS_LOG": "false",
        **extra,
    }


class Farm:
    """Starts server processes side by side; stops them all at the end."""

    def __init__(self) -> None:
        self.started: list[ServerProcess] = []

    async def start(self, *envs: Mapping[str, str]) -> list[ServerProcess]:
        servers = [ServerProcess(env) for env in envs]
        self.started.extend(servers)
        for server in servers:
            server.start()
        await asyncio.gather(*(asyncio.to_thread(server.wait_ready, 60) for server in servers))
        return servers

    async def stop_all(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(server.stop) for server in self.started))
        for server in self.started:
            print(f"--- log of the server on port {server.port} ---\n{server.log()[-6000:]}")
            server.close()


@asynccontextmanager
async def farm() -> AsyncIterator[Farm]:
    servers = Farm()
    try:
        yield servers
    finally:
        await servers.stop_all()


@asynccontextmanager
async def clients(
    *servers: ServerProcess, timeout: float = 30
) -> AsyncIterator[list[httpx.AsyncClient]]:
    made = [httpx.AsyncClient(base_url=server.base, timeout=timeout) for server in servers]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


async def deliver(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    """POST a webhook body as Stripe would, signed now."""
    return await post_webhook(client, body, WEBHOOK_SECRET)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0, interval: float = 0.05
) -> float:
    """Poll `check` until true; fails naming `what` after `timeout` s. Returns the seconds taken."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - started
