"""Webhook ingestion: verified, recorded, then processed, with 10 % duplicate deliveries.

Drives the real server (`python -m app serve`, worker on) over HTTP with signed events,
and in the same run INSERTs the same rows straight from Python with asyncpg at the same
concurrency. Prints events/s, p50/p99, the ratio to the bare INSERT, and how long the
worker took to process everything.

    .venv/bin/python -m bench.webhooks [--events 2000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from datetime import UTC, datetime

import asyncpg
import httpx

from bench.common import summary, token
from tests.support.processes import server_process, throwaway_database
from tests.support.stripe import FakeStripe, sign

SECRET = "whsec_bench"
USERS = 20


async def subscribe_users(base: str, fake: FakeStripe) -> list[dict[str, object]]:
    subscriptions = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for n in range(USERS):
            response = await client.post(
                "/graphql",
                json={"query": "mutation { createCheckoutSession { id } }"},
                headers={"Authorization": f"Bearer {token(f'bench-{n}')}"},
            )
            session_id = response.json()["data"]["createCheckoutSession"]["id"]
            subscriptions.append(fake.complete_checkout(session_id))
    return subscriptions


def make_deliveries(
    fake: FakeStripe, subscriptions: list[dict[str, object]], count: int
) -> list[tuple[str, bytes, str]]:
    """Half subscription updates for linked users, half updates of unknown customers."""
    events = []
    for n in range(count):
        if n % 2 == 0:
            event = fake.event("customer.subscription.updated", subscriptions[n % USERS])
        else:
            event = fake.event("customer.updated", {"id": f"cus_unknown{n}", "object": "customer"})
        events.append(event)
    deliveries = [(e["id"], json.dumps(e).encode()) for e in events]
    deliveries += random.sample(deliveries, count // 10)  # 10 % duplicates
    random.shuffle(deliveries)
    return [(event_id, body, sign(body, SECRET)) for event_id, body in deliveries]


async def ingest(
    base: str, deliveries: list[tuple[str, bytes, str]], concurrency: int
) -> tuple[float, list[float]]:
    queue: asyncio.Queue[tuple[str, bytes, str]] = asyncio.Queue()
    for item in deliveries:
        queue.put_nowait(item)
    samples: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def sender(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            _, body, signature = queue.get_nowait()
            started = time.perf_counter()
            response = await client.post(
                "/webhooks/stripe",
                content=body,
                headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
            )
            samples.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text

    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(sender(client) for _ in range(concurrency)))
        return time.perf_counter() - started, samples


async def bare_insert(
    database_url: str, deliveries: list[tuple[str, bytes, str]], concurrency: int
) -> tuple[float, list[float]]:
    pool = await asyncpg.create_pool(database_url, min_size=concurrency, max_size=concurrency)
    assert pool is not None
    try:
        await pool.execute("DROP TABLE IF EXISTS bench_events")
        await pool.execute("CREATE TABLE bench_events (LIKE stripe_events INCLUDING ALL)")
        queue: asyncio.Queue[tuple[str, bytes, str]] = asyncio.Queue()
        for item in deliveries:
            queue.put_nowait(item)
        samples: list[float] = []

        async def inserter() -> None:
            while not queue.empty():
                event_id, body, _ = queue.get_nowait()
                event = json.loads(body)
                started = time.perf_counter()
                await pool.fetchval(
                    """
                    INSERT INTO bench_events (id, type, created_at, payload)
                    VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (id) DO NOTHING RETURNING true
                    """,
                    event_id,
                    event["type"],
                    datetime.fromtimestamp(event["created"], UTC),
                    body.decode(),
                )
                samples.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(inserter() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await pool.execute("DROP TABLE bench_events")
        return elapsed, samples
    finally:
        await pool.close()


async def wait_processed(database_url: str, expected: int) -> float:
    conn = await asyncpg.connect(database_url)
    started = time.perf_counter()
    try:
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM stripe_events WHERE status <> 'pending'"
            )
            if done >= expected or time.perf_counter() - started > 300:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def measure(
    fake: FakeStripe, base: str, database_url: str, count: int, concurrency: int
) -> None:
    subscriptions = await subscribe_users(base, fake)
    warmup = make_deliveries(fake, subscriptions, 200)
    await ingest(base, warmup, concurrency)
    await bare_insert(database_url, warmup, concurrency)
    if os.environ.get("RUN_WORKER", "true") != "false":
        await wait_processed(database_url, 200)

    deliveries = make_deliveries(fake, subscriptions, count)
    unique = len({event_id for event_id, _, _ in deliveries})
    api_time, api_samples = await ingest(base, deliveries, concurrency)
    processing_tail = (
        await wait_processed(database_url, 200 + unique)
        if os.environ.get("RUN_WORKER", "true") != "false"
        else 0.0
    )
    bare_time, bare_samples = await bare_insert(database_url, deliveries, concurrency)

    api_rate, bare_rate = len(deliveries) / api_time, len(deliveries) / bare_time
    a, b = summary(api_samples), summary(bare_samples)
    print(
        f"\nWebhook ingestion: {len(deliveries)} deliveries ({unique} unique), concurrency {concurrency}"
    )
    print(f"  {'':34} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    print(
        f"  {'POST /webhooks/stripe (verify+record)':34} {api_rate:9.0f} {a['p50']:8.2f} {a['p99']:8.2f}"
    )
    print(
        f"  {'bare asyncpg INSERT, same rows':34} {bare_rate:9.0f} {b['p50']:8.2f} {b['p99']:8.2f}"
    )
    print(f"  ratio (ingestion / bare INSERT): {api_rate / bare_rate:.2f}")
    total = api_time + processing_tail
    print(
        f"  all {unique} events processed {processing_tail:.2f} s after the last delivery "
        f"({unique / total:.0f} events/s end to end, half of them re-reading Stripe)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with FakeStripe() as fake, throwaway_database() as database_url:
        price = fake.add_price(unit_amount=1500)["id"]
        env = {
            "DATABASE_URL": database_url,
            "STRIPE_SECRET_KEY": "sk_test_bench",
            "STRIPE_API_BASE": fake.url,
            "STRIPE_PRICE_PRO": price,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "WORKER_POLL_SECONDS": "0.05",
            "RUN_WORKER": os.environ.get("RUN_WORKER", "true"),
        }
        with server_process(env) as base:
            asyncio.run(measure(fake, base, database_url, args.events, args.concurrency))


if __name__ == "__main__":
    main()
