"""Faults a deployment meets, on real server processes: a crash while webhooks stream in, the
database going away and coming back, a graceful shutdown mid-request, a worker killed
holding a job.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.helpers import error_codes, gql
from tests.servers import Farm, clients, deliver, eventually, server_env
from tests.support.stripe import FakeStripe
from tests.support.tokens import make_token

KEY_A, KEY_B = "sk_test_server_a", "sk_test_server_b"
CHECKOUT = "mutation { createCheckoutSession { id url } }"
UPDATE = "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { firstName } }"
ME = "{ me { id } }"


@pytest.fixture
def env(
    database_url: str, stripe_settings: dict[str, Any], tmp_path: Path
) -> Callable[..., dict[str, str]]:
    return partial(server_env, database_url, stripe_settings, str(tmp_path))


async def checkout(client: httpx.AsyncClient, user: str) -> dict[str, Any]:
    body = await gql(client, CHECKOUT, token=make_token(user))
    assert "errors" not in body, body
    session: dict[str, Any] = body["data"]["createCheckoutSession"]
    return session


async def no_work_left(database_url: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return bool(
            await conn.fetchval(
                "SELECT NOT EXISTS (SELECT FROM sync_jobs) AND NOT EXISTS "
                "(SELECT FROM stripe_events WHERE status = 'pending')"
            )
        )
    finally:
        await conn.close()


# --- a crash while webhooks stream in --------------------------------------------------------


async def test_a_server_killed_mid_stream_acknowledged_only_what_it_had_recorded(
    servers: Farm,
    env: Callable[..., dict[str, str]],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    database_url: str,
) -> None:
    victim, survivor = await servers.start(env(RUN_WORKER="false"), env(RUN_WORKER="false"))
    events = [
        fake_stripe.event("product.created", {"id": f"prod_{n}", "object": "product"})
        for n in range(200)
    ]
    bodies = {event["id"]: json.dumps(event).encode() for event in events}
    queue = list(bodies.items())
    outcomes: dict[str, int | str] = {}  # HTTP status, or the transport error's name

    async def sender(client: httpx.AsyncClient) -> None:
        while queue:
            event_id, body = queue.pop()
            try:
                outcomes[event_id] = (await deliver(client, body)).status_code
            except httpx.TransportError as exc:
                outcomes[event_id] = type(exc).__name__

    async def acknowledged_some() -> bool:
        return list(outcomes.values()).count(200) >= 40

    blocker = await asyncpg.connect(database_url)
    try:
        async with clients(victim, timeout=10) as (client,):
            senders = [asyncio.create_task(sender(client)) for _ in range(8)]
            await eventually(acknowledged_some, "40 deliveries acknowledged")
            # Hold the INSERTs back, so that deliveries are truly in flight at the kill.
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("LOCK TABLE stripe_events IN SHARE MODE")
            waiting: list[int] = []

            async def inserts_waiting() -> bool:
                waiting[:] = [
                    row["pid"]
                    for row in await pg.fetch(
                        "SELECT pid FROM pg_locks WHERE NOT granted AND relation = "
                        "'stripe_events'::regclass"
                    )
                ]
                return len(waiting) >= 3

            await eventually(inserts_waiting, "deliveries waiting on their INSERT")
            await asyncio.sleep(0.3)  # whatever else arrives meanwhile is in flight too
            assert await asyncio.to_thread(victim.kill) == -signal.SIGKILL
            await asyncio.gather(*senders)
            await transaction.rollback()
    finally:
        await blocker.close()

    async def in_flight_inserts_resolved() -> bool:
        # Every backend that was waiting at the kill is gone, and no statement on the table
        # is still running (one that arrived after that snapshot commits or fails on its own
        # after the client died; read what is recorded only once it has).
        return not await pg.fetchval(
            """
            SELECT count(*) FROM pg_stat_activity
            WHERE pid <> pg_backend_pid() AND (
                pid = ANY($1::int[])
                OR (datname = current_database() AND state <> 'idle'
                    AND query ILIKE '%stripe_events%')
            )
            """,
            waiting,
        )

    await eventually(in_flight_inserts_resolved, "the killed server's backends gone")
    recorded = {row["id"] for row in await pg.fetch("SELECT id FROM stripe_events")}
    acked = {event_id for event_id, outcome in outcomes.items() if outcome == 200}
    dropped = {event_id for event_id, outcome in outcomes.items() if isinstance(outcome, str)}
    assert set(outcomes) == set(bodies)  # every delivery got an answer or an error, none hung
    assert acked <= recorded  # the promise: 2xx only once durably recorded
    unexpected = {o for o in outcomes.values() if o != 200 and not isinstance(o, str)}
    assert all(status >= 500 for status in unexpected if isinstance(status, int)), unexpected
    # The kill fell mid-stream: some were acknowledged, some dropped in flight, some refused.
    assert len(acked) >= 40
    assert "ConnectError" in outcomes.values()
    assert {o for o in outcomes.values() if isinstance(o, str)} - {"ConnectError"}, outcomes
    print(
        f"{len(acked)} acknowledged, {len(dropped)} dropped or refused "
        f"({len(dropped & recorded)} of them recorded anyway), "
        f"{len(set(bodies) - acked - dropped)} answered non-2xx"
    )

    # Stripe retries everything not acknowledged; the survivor takes them, once each.
    async with clients(survivor) as (client,):
        for event_id in sorted(set(bodies) - acked):
            response = await deliver(client, bodies[event_id])
            assert response.status_code == 200
            assert response.json()["duplicate"] is (event_id in recorded)
    assert await pg.fetchval("SELECT count(*) FROM stripe_events") == len(bodies)


# --- the database going away and coming back -------------------------------------------------


async def test_the_database_going_away_and_back_needs_no_restart(
    servers: Farm,
    env: Callable[..., dict[str, str]],
    fake_stripe: FakeStripe,
    database_url: str,
    pg_server_url: str,
) -> None:
    [server] = await servers.start(env())
    conn = await asyncpg.connect(database_url)
    name = await conn.fetchval("SELECT current_database()")
    await conn.close()
    admin = await asyncpg.connect(pg_server_url)  # another database of the same server
    token = make_token("u1")

    async def terminate_all() -> None:
        pids = [
            row["pid"]
            for row in await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1", name
            )
        ]
        await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", pids)

        async def gone() -> bool:
            return not await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids
            )

        await eventually(gone, "terminated backends gone")
        await asyncio.sleep(0.1)

    async def me(client: httpx.AsyncClient) -> dict[str, Any]:
        return await gql(client, ME, token=token)

    try:
        async with clients(server, timeout=10) as (client,):
            assert await me(client) == {"data": {"me": {"id": "u1"}}}
            # Every connection cut (an admin, a failover): the pool notices, none is reused.
            await asyncio.gather(*(me(client) for _ in range(6)))  # several pool connections
            await terminate_all()
            assert (
                await asyncio.gather(*(me(client) for _ in range(6)))
                == [{"data": {"me": {"id": "u1"}}}] * 6
            )

            # The database refuses connections: requests fail fast and say so plainly.
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await terminate_all()
            started = time.monotonic()
            body = await me(client)
            assert error_codes(body) == ["INTERNAL_SERVER_ERROR"]
            assert body["errors"][0]["message"] == "Internal server error"
            assert time.monotonic() - started < 3
            started = time.monotonic()
            assert (await client.get("/readyz")).status_code == 503
            assert time.monotonic() - started < 3
            assert (await client.get("/healthz")).status_code == 200
            update = await gql(client, UPDATE, {"input": {"firstName": "Lost"}}, token=token)
            assert error_codes(update) == ["INTERNAL_SERVER_ERROR"]
            event = fake_stripe.event("product.created", {"id": "prod_1", "object": "product"})
            body_bytes = json.dumps(event).encode()
            assert (await deliver(client, body_bytes)).status_code == 503  # Stripe retries

            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            # Back, in the same process: the very next requests work.
            assert await me(client) == {"data": {"me": {"id": "u1"}}}
            assert (await client.get("/readyz")).status_code == 200
            retried = await deliver(client, body_bytes)
            assert retried.json() == {"received": True, "duplicate": False}
            await eventually(partial(no_work_left, database_url), "the worker processed it")
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    assert server.process is not None
    assert server.process.poll() is None  # never restarted


async def test_a_worker_cut_off_mid_transaction_carries_on(
    servers: Farm,
    env: Callable[..., dict[str, str]],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    database_url: str,
    pg_server_url: str,
) -> None:
    [server] = await servers.start(env())
    async with clients(server) as (client,):
        session = await checkout(client, "u1")
        subscription = fake_stripe.complete_checkout(session["id"])
        await eventually(partial(no_work_left, database_url), "set-up done")
        fake_stripe.latency = 0.6  # the worker waits on Stripe inside its transaction
        first = fake_stripe.event("customer.subscription.updated", subscription)
        assert (await deliver(client, json.dumps(first).encode())).status_code == 200

        async def claimed() -> bool:
            return bool(await pg.fetchval("SELECT locked_until > now() FROM stripe_events"))

        await eventually(claimed, "the event claimed")
        await asyncio.sleep(0.2)
        admin = await asyncpg.connect(pg_server_url)
        try:
            name = await pg.fetchval("SELECT current_database()")
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                name,
            )
        finally:
            await admin.close()
        fake_stripe.latency = 0.0
        await asyncio.sleep(1.0)  # the worker's transaction has failed by now

        second = fake_stripe.event("customer.subscription.updated", subscription)
        assert (await deliver(client, json.dumps(second).encode())).status_code == 200
    db = await asyncpg.connect(database_url)
    try:

        async def second_processed() -> bool:
            status = await db.fetchval(
                "SELECT status FROM stripe_events WHERE id = $1", second["id"]
            )
            return bool(status == "processed")

        await eventually(second_processed, "a new event processed by the same worker", timeout=3)
    finally:
        await db.close()


# --- graceful shutdown -----------------------------------------------------------------------


async def test_sigterm_finishes_the_request_in_flight_and_loses_no_job(
    servers: Farm,
    env: Callable[..., dict[str, str]],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    database_url: str,
) -> None:
    [first] = await servers.start(env(STRIPE_SECRET_KEY=KEY_A))
    users = [f"user-{n}" for n in range(20)]
    async with clients(first) as (client,):
        await asyncio.gather(*(checkout(client, user) for user in users))
        await eventually(partial(no_work_left, database_url), "set-up done")
        fake_stripe.latency = 0.25  # every Stripe call; a checkout makes three or more
        for n, user in enumerate(users):
            body = await gql(
                client, UPDATE, {"input": {"firstName": f"Name{n}"}}, token=make_token(user)
            )
            assert "errors" not in body
        in_flight = asyncio.create_task(checkout(client, "late-user"))
        await asyncio.sleep(0.3)
        assert not in_flight.done()
        signalled = time.monotonic()
        first.terminate()
        session = await in_flight
        answered = time.monotonic()
    assert session["id"].startswith("cs_")
    assert answered > signalled  # it was in flight when SIGTERM came, and still completed
    exit_code = await asyncio.to_thread(first.wait, 15)
    assert exit_code == 0, exit_code  # a clean shutdown, as a supervisor wants to see it
    assert "Application shutdown complete" in first.log()
    assert "Traceback" not in first.log()

    # The job in the worker's hands was finished, not abandoned: no lease is left behind.
    assert await pg.fetchval("SELECT count(*) FROM sync_jobs WHERE locked_until > now()") == 0
    left = await pg.fetchval("SELECT count(*) FROM sync_jobs")
    assert left > 0  # the shutdown came mid-queue: work is left for the other server
    assert fake_stripe.checkout_sessions[session["id"]]["client_reference_id"] == "late-user"

    fake_stripe.latency = 0.0
    await servers.start(env(STRIPE_SECRET_KEY=KEY_B))
    await eventually(partial(no_work_left, database_url), "the other server did the rest")
    customer_of = dict(await pg.fetch("SELECT user_id, stripe_customer_id FROM customers"))
    for n, user in enumerate(users):
        assert fake_stripe.customers[customer_of[user]]["name"] == f"Name{n}", user
    pushes = fake_stripe.requests_to("POST", "/v1/customers/")
    keys = [push.idempotency_key for push in pushes if push.status == 200]
    assert len(keys) == len(set(keys)) == len(users)  # each edit pushed once, none lost
    assert sum(push.api_key == KEY_B for push in pushes) == left


# --- a worker killed holding a job -----------------------------------------------------------


async def test_a_job_held_by_a_killed_worker_runs_elsewhere_when_its_lease_ends(
    servers: Farm,
    env: Callable[..., dict[str, str]],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    database_url: str,
) -> None:
    [first] = await servers.start(env(STRIPE_SECRET_KEY=KEY_A))
    token = make_token("u1")
    async with clients(first) as (client,):
        await checkout(client, "u1")
        await eventually(partial(no_work_left, database_url), "set-up done")
        fake_stripe.latency = 1.0
        body = await gql(client, UPDATE, {"input": {"firstName": "Held"}}, token=token)
        assert "errors" not in body

    async def claimed() -> bool:
        return bool(await pg.fetchval("SELECT locked_until > now() FROM sync_jobs"))

    await eventually(claimed, "the job claimed by the first server")
    await asyncio.sleep(0.2)  # its push to Stripe is under way
    await asyncio.to_thread(first.kill)
    held = await pg.fetchrow("SELECT attempts, locked_until > now() AS leased FROM sync_jobs")
    assert (held["attempts"], held["leased"]) == (1, True)

    fake_stripe.latency = 0.0
    await servers.start(env(STRIPE_SECRET_KEY=KEY_B))
    await asyncio.sleep(0.5)  # many polls of the second worker
    assert await pg.fetchval("SELECT attempts FROM sync_jobs") == 1  # leased: left alone
    assert not [r for r in fake_stripe.requests if r.api_key == KEY_B]

    # The 120 s lease runs out (moved forward here rather than waited for).
    await pg.execute("UPDATE sync_jobs SET locked_until = now() - interval '1 second'")
    await eventually(partial(no_work_left, database_url), "the other server ran the job")
    customer = await pg.fetchval("SELECT stripe_customer_id FROM customers WHERE user_id = 'u1'")
    assert fake_stripe.customers[customer]["name"] == "Held"
    assert [r.status for r in fake_stripe.requests if r.api_key == KEY_B] == [200]
