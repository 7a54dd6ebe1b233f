"""Waking the workers: `NOTIFY` where work is queued, `LISTEN` in every worker process.

Whatever queues work for the worker (a Stripe event recorded, a job enqueued) notifies the
`billing_work` channel in the same transaction, so the notice goes out when, and only if,
the work is committed, and reaches every process, not just the one that took the request.
Each process with a worker keeps one connection of its own (outside the pool) listening;
when it is lost (a database restart) it reconnects with backoff, and the worker's polling
covers the gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, wait_exponential

from db.connection import Pg

log = logging.getLogger(__name__)

CHANNEL = "billing_work"
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', '')"


async def notify(pg: Pg) -> None:
    """Wake the workers once the surrounding transaction commits."""
    await pg.execute(NOTIFY_SQL)


async def listen(database_url: str, on_wake: Callable[[], None]) -> None:
    """Until cancelled: call `on_wake` at each notice on the channel, reconnecting whenever
    the listening connection is lost."""
    async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.2, max=5)):
        with attempt:
            await _listen_once(database_url, on_wake)


async def _listen_once(database_url: str, on_wake: Callable[[], None]) -> None:
    lost = asyncio.Event()
    try:
        conn = await asyncpg.connect(database_url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        log.warning("cannot listen for work (%s); polling meanwhile", type(exc).__name__)
        raise

    def wake(*_: Any) -> None:
        on_wake()

    try:
        conn.add_termination_listener(lambda _: lost.set())
        await conn.add_listener(CHANNEL, wake)
        on_wake()  # work may have been queued while nobody listened
        await lost.wait()
    finally:
        if not conn.is_closed():
            await conn.close()
    log.warning("the connection listening for work was lost; listening again")
    raise ConnectionError("listening connection lost")
