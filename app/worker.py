"""The background worker the lifespan starts: Stripe events, then jobs.

Work lives in PostgreSQL (`stripe_events`, `sync_jobs`) and is claimed with a lease taken by
`SELECT … FOR UPDATE SKIP LOCKED`, so any number of server processes can run a worker and
each item is handled by one at a time; a worker that dies mid-item loses its lease and
another picks the item up. Events are claimed a customer at a time (every due event of
one customer, answered by one re-read from Stripe). The claim is a short statement of its
own: no connection is held while a service asks Stripe, and services own their short
transactions. Failures are recorded with the attempt count and last error and retried with
capped exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from contextlib import suppress
from dataclasses import dataclass

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from db import events as db_events
from db import jobs as db_jobs
from db.connection import UNAVAILABLE, Pool
from services import duplicates, profile, rate_limits, webhooks
from services.metrics import Metrics
from services.plans import PlanCatalog
from services.stripe_gateway import StripeGateway

log = logging.getLogger(__name__)

RECORDING_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    poll_interval: float = 1.0
    lease_seconds: float = 120.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    max_event_attempts: int = 15
    acquire_seconds: float = 30.0
    rate_limit_purge_interval: float = 600.0
    events_per_claim: int = 100  # of one customer, answered by one Stripe re-read
    concurrency: int = 4  # items handled at once (each mostly waits on Stripe)


def backoff(attempts: int, base: float, cap: float) -> float:
    """Exponential with full jitter in its upper half: 1, 2, 4, … up to `cap` seconds."""
    delay = min(cap, base * 2.0 ** max(0, attempts - 1))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311


class Worker:
    def __init__(
        self,
        pool: Pool,
        stripe: StripeGateway,
        plans: PlanCatalog,
        settings: WorkerSettings | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._pool = pool
        self._stripe = stripe
        self._plans = plans
        self._settings = settings or WorkerSettings()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(lane), name=f"billing-worker-{lane}")
            for lane in range(max(1, self._settings.concurrency))
        ]

    async def stop(self) -> None:
        """Finish the items in hand, then stop; an abandoned lease simply expires."""
        self._stopping = True
        self._wake.set()
        if not self._tasks:
            return
        await asyncio.wait([asyncio.shield(t) for t in self._tasks], timeout=10)
        for task in self._tasks:
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    def wake(self) -> None:
        self._wake.set()

    async def _run(self, lane: int) -> None:
        """One of the worker's lanes: claims and handles items until stopped; lane 0 also
        keeps house."""
        next_purge = time.monotonic() if lane == 0 else float("inf")
        failing = False
        while not self._stopping:
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self._settings.rate_limit_purge_interval
                try:
                    await self.purge_rate_limits()
                except Exception:
                    log.exception("rate-limit purge failed")
            try:
                busy = await self.run_once() > 0
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
        return await rate_limits.purge_stale(self._pool)

    async def run_once(self) -> int:
        """Handle one customer's due events or, if none, one due job; returns how many items
        (events or the job) it handled, 0 when nothing was due."""
        within = self._settings.acquire_seconds
        async with self._pool.connection(within) as pg:
            events = await db_events.claim_due(
                pg, self._settings.lease_seconds, self._settings.events_per_claim
            )
        if events:
            await self._process_events(events)
            return len(events)
        async with self._pool.connection(within) as pg:
            job = await db_jobs.claim_due(pg, self._settings.lease_seconds)
        if job is not None:
            await self._run_job(job)
            return 1
        return 0

    async def drain(self) -> int:
        """Everything due now, one after another (tests and the CLI); returns how many items
        (events and jobs) it handled."""
        handled = 0
        while done := await self.run_once():
            handled += done
        return handled

    async def _process_events(self, events: list[db_events.EventRecord]) -> None:
        try:
            outcomes = await webhooks.process(self._pool, self._stripe, self._plans, events)
            async with self._pool.transaction() as pg:
                for event in events:
                    outcome = outcomes[event.id]
                    await db_events.finish(pg, event.id, outcome.status, outcome.reason)
            for event in events:
                self._count_event(event.type, outcomes[event.id].status)
        except Exception as exc:
            quiet = isinstance(exc, webhooks.EXPECTED_FAILURES)
            for event in events:
                give_up = event.attempts >= self._settings.max_event_attempts
                log.log(
                    logging.WARNING if quiet else logging.ERROR,
                    "event %s (%s) attempt %d failed: %s%s",
                    event.id,
                    event.type,
                    event.attempts,
                    _describe(exc),
                    "; giving up, replay it with `python -m app events --replay`"
                    if give_up
                    else "",
                    exc_info=exc if not quiet and event is events[0] else None,
                )
            # Retried while the database comes back: the failure may have been the database
            # going away, and the events must not sit out their whole lease before anyone
            # retries them.
            async for attempt in _recording():
                with attempt:
                    async with self._pool.connection(self._settings.acquire_seconds) as pg:
                        for event in events:
                            give_up = event.attempts >= self._settings.max_event_attempts
                            delay = backoff(
                                event.attempts,
                                self._settings.backoff_base,
                                self._settings.backoff_cap,
                            )
                            await db_events.retry_later(
                                pg, event.id, _describe(exc), delay, give_up=give_up
                            )
            for event in events:
                give_up = event.attempts >= self._settings.max_event_attempts
                self._count_event(event.type, "failed" if give_up else "retry")

    async def _run_job(self, job: db_jobs.JobRecord) -> None:
        try:
            pushed_email = None
            if job.kind == db_jobs.PROFILE_SYNC:
                pushed_email = await profile.push_to_stripe(self._pool, self._stripe, job)
            elif job.kind == db_jobs.DUPLICATE_SUBSCRIPTION:
                await duplicates.end_duplicate(
                    self._pool, self._stripe, self._plans, job, self._metrics
                )
            else:
                log.error("job %s of unknown kind %r dropped", job.id, job.kind)
            async for attempt in _recording():
                with attempt:
                    async with self._pool.connection(self._settings.acquire_seconds) as pg:
                        await db_jobs.complete(pg, job, pushed_email=pushed_email)
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
            async for attempt in _recording():
                with attempt:
                    async with self._pool.connection(self._settings.acquire_seconds) as pg:
                        await db_jobs.retry_later(pg, job, _describe(exc), delay)
            if self._metrics is not None:
                self._metrics.job_failures.labels(job.kind).inc()

    def _count_event(self, event_type: str, outcome: str) -> None:
        if self._metrics is not None:
            label = event_type if event_type in webhooks.HANDLED else "other"
            self._metrics.webhook_events.labels(label, outcome).inc()


def _recording() -> AsyncRetrying:
    """Recording an item's outcome: retried for a while (the database restarting takes a
    moment), else the item waits for its lease to end."""
    return AsyncRetrying(
        stop=stop_after_delay(RECORDING_SECONDS),
        wait=wait_exponential(multiplier=0.1, max=2),
        retry=retry_if_exception_type(UNAVAILABLE),
        reraise=True,
    )


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}"[:2000]
