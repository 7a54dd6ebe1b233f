"""One billing operation at a time per user, across every process, holding nothing idle.

A user's Stripe-backed operations (checkout, subscription sync, plan changes, deletion)
change the same things at Stripe, so they take turns: in this process on an asyncio lock,
across processes on a lease row (`db.locks.take_lease`). Neither holds a database
connection, a transaction or a lock while the operation waits on Stripe, so a user who
sends many at once, while Stripe is slow, cannot starve anyone else of the pool.

The lease lasts `lease_seconds` if its holder dies, and is renewed every third of that while
its holder lives, so an operation that outlasts it (Stripe slow on every call) keeps its
turn. A caller that waits longer than `wait_seconds` for its turn is refused with `RATE_LIMITED`
(too many billing requests from one user at once). `shared` goes further for reads: calls
that arrive while the same read is in flight get its result instead of a turn of their own.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from db import locks as db_locks
from db.connection import Pool
from services.errors import RateLimited

T = TypeVar("T")

log = logging.getLogger(__name__)

LEASE = "billing"
POLL_SECONDS = 0.05


@dataclass
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class SingleFlight:
    def __init__(self, pool: Pool, *, lease_seconds: float, wait_seconds: float) -> None:
        """`lease_seconds`: how long a lease lasts if its holder dies (it gives it back when
        done); `wait_seconds`: how long a caller waits for its turn before `RATE_LIMITED`."""
        self._pool = pool
        self._lease_seconds = lease_seconds
        self._wait_seconds = wait_seconds
        self._turns: dict[str, _Turn] = {}
        self._in_flight: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._process = secrets.token_hex(8)
        self._taken = 0

    @asynccontextmanager
    async def turn(self, user_id: str) -> AsyncIterator[None]:
        """The user's turn: waits for this process's and every other process's current one."""
        turn = self._turns.setdefault(user_id, _Turn())
        turn.users += 1
        try:
            deadline = time.monotonic() + self._wait_seconds
            try:
                async with asyncio.timeout(self._wait_seconds):
                    await turn.lock.acquire()
            except TimeoutError as exc:
                raise _busy() from exc
            try:
                self._taken += 1
                holder = f"{self._process}:{self._taken}"
                await self._take_lease(user_id, holder, deadline)
                done = asyncio.Event()
                renewing = asyncio.create_task(self._renew(user_id, holder, done))
                try:
                    yield
                finally:
                    done.set()  # a renewal under way finishes first, then the lease goes back
                    await renewing
                    async with self._pool.connection() as pg:
                        await db_locks.give_back_lease(pg, user_id, LEASE, holder)
            finally:
                turn.lock.release()
        finally:
            turn.users -= 1
            if turn.users == 0:
                del self._turns[user_id]

    async def _take_lease(self, user_id: str, holder: str, deadline: float) -> None:
        while True:
            async with self._pool.connection() as pg:
                if await db_locks.take_lease(pg, user_id, LEASE, holder, self._lease_seconds):
                    return
            if time.monotonic() >= deadline:
                raise _busy()
            await asyncio.sleep(POLL_SECONDS)

    async def _renew(self, user_id: str, holder: str, done: asyncio.Event) -> None:
        """Keep the lease until `done`. A lease lost meanwhile (this process stalled past
        it, e.g. a paused machine) is logged: another process may then be in the user's
        turn beside this one, which the turn exists to prevent."""
        while True:
            try:
                await asyncio.wait_for(done.wait(), self._lease_seconds / 3)
                return
            except TimeoutError:
                pass
            try:
                async with self._pool.connection() as pg:
                    kept = await db_locks.take_lease(
                        pg, user_id, LEASE, holder, self._lease_seconds
                    )
            except Exception:  # the database is away: the next renewal may reach it
                log.warning("billing lease not renewed: the database did not answer")
                continue
            if not kept:
                log.warning("billing lease lost to another holder while still in use")
                return

    async def shared(self, user_id: str, name: str, read: Callable[[], Awaitable[T]]) -> T:
        """`read` in the user's turn, or the result of the same read already in flight."""
        key = (user_id, name)
        running = self._in_flight.get(key)
        if running is not None:
            result: T = await asyncio.shield(running)
            return result
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            async with self.turn(user_id):
                value = await read()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(value)
            return value
        finally:
            del self._in_flight[key]


def _busy() -> RateLimited:
    return RateLimited(
        "Another billing request of yours is still in progress; try again in a few seconds.",
        retryAfter=2,
    )
