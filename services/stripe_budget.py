"""Stripe's rate limit, shared by every process of the service.

Stripe allows 100 operations a second in live mode and 25 in a sandbox, and 25 requests a
second to most single endpoints; over that it answers 429. A burst of webhooks (the renewal
wave at the start of a month) re-reads thousands of customers through one list endpoint, so
the service keeps all its processes under one budget (`STRIPE_MAX_REQUESTS_PER_SECOND`,
default 20): each Stripe call first takes its turn from a GCRA bucket in PostgreSQL (the
rate-limit table, under a key no user can have), waiting when the budget is spent. A 429
from Stripe holds the whole budget back for a second, in every process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from db import rate_limits as db_rate_limits
from db.connection import Pool
from services.errors import PaymentProviderError

log = logging.getLogger(__name__)

KEY = ""  # no user ID is empty
BUCKET = "stripe-api"
BUSY = "Our payment provider is busy right now. Please try again in a minute."


class PgStripeBudget:
    """`rate` calls a second across processes, evenly spaced (no bursts: any one second
    sees at most `rate` + 1 of them); a caller waits at most `max_wait` seconds for its
    turn, then gets `PAYMENT_PROVIDER_ERROR` (retryable)."""

    def __init__(self, pool: Pool, *, rate: float, max_wait: float) -> None:
        self._pool = pool
        self._emission = timedelta(seconds=1 / rate)
        self._tolerance = timedelta(0)
        self._max_wait = max_wait

    async def take(self) -> None:
        deadline = time.monotonic() + self._max_wait
        while True:
            async with self._pool.connection() as pg:
                wait = await db_rate_limits.hit(
                    pg, KEY, BUCKET, emission=self._emission, tolerance=self._tolerance
                )
            if wait is None:
                return
            if time.monotonic() + wait > deadline:
                log.warning("stripe budget spent: a call waited %.1f s", self._max_wait)
                raise PaymentProviderError(BUSY, retryable=True)
            await asyncio.sleep(max(wait, 0.001))

    async def back_off(self, seconds: float) -> None:
        async with self._pool.connection() as pg:
            await db_rate_limits.delay(pg, KEY, BUCKET, seconds)
