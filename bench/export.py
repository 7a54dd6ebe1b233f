"""`export` of a user with 1,000 usage records, through the real server and as bare SQL.

The user has no Stripe customer, so the export makes no Stripe call: this measures our
side (auth, the snapshot, GraphQL, JSON). In the same run the same statements (those of
`db.export.snapshot`, in the same REPEATABLE READ read-only transaction) are timed
straight from asyncpg. Prints p50/p99 of one request at a time, requests per second at a
given concurrency, and the ratios API / bare SQL.

    .venv/bin/python -m bench.export [--requests 500] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from bench.common import summary, token
from db.export import CUSTOMER_SQL, SUBSCRIPTION_SQL, USAGE_SQL, USER_SQL
from services.export import MAX_USAGE_RECORDS
from tests.support.processes import server_process, throwaway_database

USER = "bench-export"
RECORDS = 1000
POOL_SIZE = 10  # the server's default DB_POOL_MAX_SIZE, so both sides get as many connections
QUERY = """
{
  export {
    userProfile { id email emailVerified firstName lastName phone customer { id } }
    subscription { planId status updatedAt }
    usageRecords { id metric quantity createdAt }
    stripeCustomer
    exportTimestamp
    exportVersion
  }
}
"""


async def seed(base: str, database_url: str) -> None:
    """Provision the user through the API, then give them 1,000 usage records."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        response = await client.post(
            "/graphql",
            json={"query": "{ me { id } }"},
            headers={"Authorization": f"Bearer {token(USER)}"},
        )
        assert response.json()["data"]["me"]["id"] == USER, response.text
    pg = await asyncpg.connect(database_url)
    try:
        start = datetime.now(UTC) - timedelta(days=1)
        await pg.executemany(
            "INSERT INTO usage_records (user_id, metric, quantity, created_at) "
            "VALUES ($1, $2, $3, $4)",
            [(USER, "api.requests", n + 1, start + timedelta(seconds=n)) for n in range(RECORDS)],
        )
    finally:
        await pg.close()


async def timed(
    call: Callable[[], Awaitable[None]], total: int, concurrency: int
) -> tuple[list[float], float]:
    """Per-call latencies and the wall time of `total` calls by `concurrency` workers."""
    samples: list[float] = []
    remaining = iter(range(total))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


async def through_the_api(
    base: str, requests: int, concurrency: int, *, download: bool
) -> tuple[list[float], float, int]:
    """The GraphQL `export`, or with `download` the same export from GET /account/export."""
    headers = {"Authorization": f"Bearer {token(USER)}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def fetch() -> httpx.Response:
            if download:
                return await client.get("/account/export", headers=headers)
            return await client.post("/graphql", json={"query": QUERY}, headers=headers)

        async def call() -> None:
            response = await fetch()
            assert response.status_code == 200
            assert b'"errors"' not in response.content

        check = (await fetch()).json()
        export = check if download else check["data"]["export"]
        assert len(export["usageRecords"]) == MAX_USAGE_RECORDS
        await timed(call, 50, 1)  # warm up
        sequential, _ = await timed(call, requests, 1)
        _, wall = await timed(call, requests * 2, concurrency)
        size = len((await fetch()).content)
    return sequential, requests * 2 / wall, size


async def bare_sql(database_url: str, requests: int, concurrency: int) -> tuple[list[float], float]:
    pool = await asyncpg.create_pool(database_url, min_size=POOL_SIZE, max_size=POOL_SIZE)
    try:

        async def call() -> None:
            async with (
                pool.acquire() as pg,
                pg.transaction(isolation="repeatable_read", readonly=True),
            ):
                await pg.fetchval("SELECT now()")
                await pg.fetchrow(USER_SQL, USER)
                await pg.fetchrow(CUSTOMER_SQL, USER)
                await pg.fetchrow(SUBSCRIPTION_SQL, USER)
                rows = await pg.fetch(USAGE_SQL, USER, MAX_USAGE_RECORDS)
            assert len(rows) == MAX_USAGE_RECORDS

        await timed(call, 50, 1)
        sequential, _ = await timed(call, requests, 1)
        _, wall = await timed(call, requests * 2, concurrency)
    finally:
        await pool.close()
    return sequential, requests * 2 / wall


async def measure(base: str, database_url: str, requests: int, concurrency: int) -> None:
    await seed(base, database_url)
    api, api_rps, size = await through_the_api(base, requests, concurrency, download=False)
    get, get_rps, get_size = await through_the_api(base, requests, concurrency, download=True)
    bare, bare_rps = await bare_sql(database_url, requests, concurrency)
    rows = (
        (f"GraphQL export ({size // 1024} KiB)", summary(api), api_rps),
        (f"GET /account/export ({get_size // 1024} KiB)", summary(get), get_rps),
        ("same SQL, bare asyncpg", summary(bare), bare_rps),
    )
    b = rows[2][1]
    print(
        f"\nexport of a user with {RECORDS} usage records and no Stripe customer (no Stripe call)"
    )
    print(
        f"latency: {requests} sequential calls; "
        f"req/s: {requests * 2} calls, {concurrency} at once\n"
    )
    print(f"  {'':32} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'req/s':>8}")
    for name, s, rps in rows:
        print(f"  {name:32} {s['p50']:8.2f} {s['p99']:8.2f} {s['mean']:8.2f} {rps:8.0f}")
    print("\n  ratio to bare SQL (latency: API / bare; req/s: bare / API)")
    for name, s, rps in rows[:2]:
        ratios = (s["p50"] / b["p50"], s["p99"] / b["p99"], s["mean"] / b["mean"], bare_rps / rps)
        print(f"  {name:32} " + " ".join(f"{r:7.1f}x" for r in ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with throwaway_database() as database_url:
        # One user exports over and over: a limit high enough never to refuse, yet still
        # checked, so the limiter's round trip is part of what is measured.
        env = {
            "DATABASE_URL": database_url,
            "RUN_WORKER": "false",
            "RATE_LIMIT_EXPORT_PER_HOUR": "100000000",
        }
        with server_process(env) as base:
            asyncio.run(measure(base, database_url, args.requests, args.concurrency))


if __name__ == "__main__":
    main()
