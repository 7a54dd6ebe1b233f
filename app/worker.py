"""The background worker the lifespan starts: Stripe events, then profile pushes.

Work lives in PostgreSQL (`stripe_events`, `sync_jobs`) and is claimed with a lease taken by
`SELECT … FOR UPDATE SKIP LOCKED`, so any number of server processes can run a worker and
each item is handled by one at a time; a worker that dies mid-item loses its lease and
another picks the item up. Each item is processed in its own transaction, which this
worker (the edge for background work) owns. Failures are recorded with the attempt count
and last error and retried with capped exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from contextlib import suppress
from dataclasses import dataclass

from db import events as db_events
from db import jobs as db_jobs
from db.connection import Connection, Database, connect
from services import profile, rate_limits, webhooks
from services.metrics import Metrics
from services.plans import PlanCatalog
from services.stripe_gateway import StripeGateway

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    poll_interval: float = 1.0
    lease_seconds: float = 120.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    max_event_attempts: int = 15
    acquire_seconds: float = 30.0
    rate_limit_purge_interval: float = 600.0


def backoff(attempts: int, base: float, cap: float) -> float:
    """Exponential with full jitter in its upper half: 1, 2, 4, … up to `cap` seconds."""
    delay = min(cap, base * 2.0 ** max(0, attempts - 1))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311


class Worker:
    def __init__(
        self,
        database: Database,
        stripe: StripeGateway,
        plans: PlanCatalog,
        settings: WorkerSettings | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._database = database
        self._stripe = stripe
        self._plans = plans
        self._settings = settings or WorkerSettings()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="billing-worker")

    async def stop(self) -> None:
        """Finish the item in hand, then stop; an abandoned lease simply expires."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except TimeoutError:
                self._task.cancel()
                with suppress(asyncio.CancelledError):
                    await self._task

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        next_purge = time.monotonic()
        failing = False
        while not self._stopping:
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self._settings.rate_limit_purge_interval
                try:
                    await self.purge_rate_limits()
                except Exception:
                    log.exception("rate-limit purge failed")
            try:
                busy = await self.run_once()
                failing = False
            except Exception as exc:
                # One traceback per outage; while it lasts, a line per poll is enough.
                if failing:
                    log.warning("worker iteration failed again: %s", _describe(exc))
                else:
                    log.exception("worker iteration failed")
                failing, busy = True, False
            if not busy and not self._stopping:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval)
                self._wake.clear()

    async def purge_rate_limits(self) -> int:
        """Housekeeping: rows of rate limits that no longer limit anyone, also of deleted
        accounts. Harmless in any number of processes at once."""
        async with connect(self._database, self._settings.acquire_seconds) as conn:
            return await rate_limits.purge_stale(conn)

    async def run_once(self) -> bool:
        """Handle one due event or, if none, one due job; False when nothing was due."""
        async with connect(self._database, self._settings.acquire_seconds) as conn:
            event = await db_events.claim_due(conn, self._settings.lease_seconds)
            if event is not None:
                await self._process_event(conn, event)
                return True
            job = await db_jobs.claim_due(conn, self._settings.lease_seconds)
            if job is not None:
                await self._run_job(conn, job)
                return True
        return False

    async def drain(self) -> int:
        """Everything due now, one after another (tests and the CLI); returns how many."""
        handled = 0
        while await self.run_once():
            handled += 1
        return handled

    async def _process_event(self, conn: Connection, event: db_events.EventRecord) -> None:
        try:
            async with conn.transaction():
                outcome = await webhooks.process(conn, self._stripe, self._plans, event)
                await db_events.finish(conn, event.id, outcome)
            self._count_event(event.type, outcome)
        except Exception as exc:
            give_up = event.attempts >= self._settings.max_event_attempts
            delay = backoff(event.attempts, self._settings.backoff_base, self._settings.backoff_cap)
            level = logging.WARNING if isinstance(exc, webhooks.NotYetLinkable) else logging.ERROR
            log.log(
                level,
                "event %s (%s) attempt %d failed: %s%s",
                event.id,
                event.type,
                event.attempts,
                _describe(exc),
                "; giving up, replay it with `python -m app events --replay`" if give_up else "",
                exc_info=level == logging.ERROR,
            )
            # On a fresh connection: the failure may have been this connection dying, and the
            # item must not sit out its whole lease before anyone retries it.
            async with connect(self._database, self._settings.acquire_seconds) as fresh:
                await db_events.retry_later(fresh, event.id, _describe(exc), delay, give_up=give_up)
            self._count_event(event.type, "failed" if give_up else "retry")

    async def _run_job(self, conn: Connection, job: db_jobs.JobRecord) -> None:
        try:
            async with conn.transaction():
                await profile.push_to_stripe(conn, self._stripe, job)
            await db_jobs.complete(conn, job)
        except Exception as exc:
            # Never given up: the user's edit must reach Stripe once Stripe is back.
            delay = backoff(job.attempts, self._settings.backoff_base, self._settings.backoff_cap)
            log.warning(
                "job %s for %s attempt %d failed: %s",
                job.kind,
                job.user_id,
                job.attempts,
                _describe(exc),
            )
            async with connect(self._database, self._settings.acquire_seconds) as fresh:
                await db_jobs.retry_later(fresh, job, _describe(exc), delay)
            if self._metrics is not None:
                self._metrics.job_failures.labels(job.kind).inc()

    def _count_event(self, event_type: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.webhook_events.labels(event_type, outcome).inc()


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}"[:2000]
