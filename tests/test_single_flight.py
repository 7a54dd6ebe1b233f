"""A user's billing operations take turns across processes (`services.single_flight`).

Two `SingleFlight` instances on one database stand for two processes.
"""

from __future__ import annotations

import asyncio

import pytest

from app.runtime import Runtime
from db import locks as db_locks
from services.errors import RateLimited
from services.single_flight import LEASE, SingleFlight


async def test_a_turn_longer_than_its_lease_keeps_it(runtime: Runtime) -> None:
    """The holder lives, Stripe is slow: the lease is renewed, so no other process enters
    the user's turn however long the operation takes."""
    first = SingleFlight(runtime.pool, lease_seconds=0.3, wait_seconds=0.2)
    second = SingleFlight(runtime.pool, lease_seconds=0.3, wait_seconds=0.2)
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def slow_operation() -> None:
        async with first.turn("ada"):
            inside.set()
            await leave.wait()

    holder = asyncio.create_task(slow_operation())
    try:
        await inside.wait()
        for _ in range(4):  # 1.2 s in all: four times the lease
            with pytest.raises(RateLimited):
                async with second.turn("ada"):
                    pytest.fail("entered a turn another process holds")
            await asyncio.sleep(0.1)
        async with second.turn("bob"):  # other users are not held up
            pass
    finally:
        leave.set()
        await holder
    async with second.turn("ada"):  # given back at once when done
        pass


async def test_a_dead_holders_lease_runs_out(runtime: Runtime) -> None:
    """A process that died holding a turn (its lease row left, nothing renewing it) frees
    it once the lease ends."""
    async with runtime.pool.connection() as pg:
        assert await db_locks.take_lease(pg, "ada", LEASE, "a-dead-process:1", 0.3)
    alive = SingleFlight(runtime.pool, lease_seconds=0.3, wait_seconds=1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with alive.turn("ada"):
        waited = loop.time() - started
    assert 0.1 < waited < 1.0
