"""The renewal wave: 5,000 signed events for 500 customers delivered at once.

Stripe sends a burst of events at the start of a month (every renewal: an invoice and a
subscription update, several times over). Each event, processed on its own, would re-read
its customer's subscriptions: 5,000 list calls through one endpoint, over Stripe's limit of
25 a second. The service instead takes a customer's pending events together (one re-read
answers them all) and keeps every process under one Stripe budget.

One `python -m app serve` (its worker on, pinned to core 0) against a throwaway
PostgreSQL and the fake Stripe (with `--latency` seconds per call, as a real round trip
takes); wrk (on core 1) delivers every signed event once, as fast as the server takes them.
Prints the delivery rate, the drain time, the Stripe reads made (target: at most 600), the
highest number of Stripe calls in any one second (the budget: 20), and failed events
(target: 0). Needs wrk (`apt-get install wrk`).

    .venv/bin/python -m bench.burst [--customers 500] [--events 5000] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import asyncpg

from bench.common import signed_bodies_lua
from tests.support.processes import pid_of, pin, server_process, throwaway_database
from tests.support.stripe import FakeStripe, sign

WEBHOOK_SECRET = "whsec_bench_burst"
PRICE = "price_bench_burst"


async def seed(database_url: str, fake: FakeStripe, customers: int) -> list[dict[str, object]]:
    """Users linked to customers with an active subscription each, in the fake and in ours."""
    price = fake.add_price(price_id=PRICE, unit_amount=1500)["id"]
    subscriptions = []
    conn = await asyncpg.connect(database_url)
    try:
        for n in range(customers):
            user = f"burst-{n}"
            customer = fake.add_customer(email=f"{user}@example.com", metadata={"userId": user})
            subscriptions.append(
                fake.create_subscription(customer["id"], price, metadata={"userId": user})
            )
            await conn.execute(
                "INSERT INTO users (id, email, email_verified) VALUES ($1, $2, true)",
                user,
                f"{user}@example.com",
            )
            await conn.execute(
                "INSERT INTO customers (user_id, stripe_customer_id) VALUES ($1, $2)",
                user,
                customer["id"],
            )
    finally:
        await conn.close()
    return subscriptions


def events_for(fake: FakeStripe, subscriptions: list[dict[str, object]], total: int) -> list[bytes]:
    """`total` events spread over the subscriptions: updates and paid invoices, shuffled."""
    bodies = []
    for n in range(total):
        subscription = subscriptions[n % len(subscriptions)]
        if n % 5 == 4:
            invoice = fake.invoices[str(subscription["latest_invoice"])]
            event = fake.event("invoice.paid", invoice)
        else:
            event = fake.event("customer.subscription.updated", subscription)
        bodies.append(json.dumps(event).encode())
    random.Random(7).shuffle(bodies)
    return bodies


def start_delivery(
    base: str, bodies: list[bytes], connections: int, tmp: Path
) -> subprocess.Popen[str]:
    """wrk sending every body once (its thread stops then; the process lingers until its
    duration ends, so the caller stops it once everything is stored)."""
    lines = tmp / "events.tsv"
    lines.write_text("".join(f"{sign(body, WEBHOOK_SECRET)}\t{body.decode()}\n" for body in bodies))
    script = tmp / "each_once.lua"
    script.write_text(signed_bodies_lua(once=True))
    command = ["wrk", "-t1", f"-c{connections}", "-d300s", "-s", str(script)]
    command += [f"{base}/webhooks/stripe", "--", str(lines)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "1", *command]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )


async def stored(database_url: str, count: int, deadline: float) -> float:
    """Seconds from the first event stored to the last, once all `count` are."""
    conn = await asyncpg.connect(database_url)
    try:
        while time.monotonic() < deadline:
            if await conn.fetchval("SELECT count(*) FROM stripe_events") >= count:
                break
            await asyncio.sleep(0.05)
        spread: float = await conn.fetchval(
            "SELECT extract(epoch FROM max(received_at) - min(received_at)) FROM stripe_events"
        )
        return spread
    finally:
        await conn.close()


async def drained(database_url: str, deadline: float) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        while time.monotonic() < deadline:
            pending = await conn.fetchval(
                "SELECT count(*) FROM stripe_events WHERE status = 'pending'"
            )
            if pending == 0:
                break
            await asyncio.sleep(0.2)
        rows = await conn.fetch("SELECT status, count(*) FROM stripe_events GROUP BY status")
        return {row["status"]: row["count"] for row in rows}
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per Stripe call")
    parser.add_argument("--connections", type=int, default=32, help="wrk's connections")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: `apt-get install wrk` (Debian) and run again")

    with (
        FakeStripe() as fake,
        throwaway_database() as database_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        subscriptions = asyncio.run(seed(database_url, fake, args.customers))
        bodies = events_for(fake, subscriptions, args.events)
        fake.latency = args.latency
        env = {
            "DATABASE_URL": database_url,
            "DATA_DIR": str(Path(tmp)),
            "STRIPE_SECRET_KEY": "sk_test_bench_burst",
            "STRIPE_API_BASE": fake.url,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_PRICE_PRO": PRICE,
            "WORKER_POLL_SECONDS": "0.1",
        }
        with server_process(env) as base:
            pin(pid_of(base))
            fake.reset_requests()
            started = time.monotonic()
            wrk = start_delivery(base, bodies, args.connections, Path(tmp))
            try:
                delivering = asyncio.run(stored(database_url, len(bodies), started + 300))
            finally:
                wrk.terminate()
                wrk.wait()
            statuses = asyncio.run(drained(database_url, started + 600))
            drain = time.monotonic() - started
        reads = [
            r
            for r in fake.requests
            if r.method == "GET"
            and (r.path == "/v1/subscriptions" or r.path.startswith("/v1/customers/"))
        ]
        per_second = Counter(int(r.at - reads[0].at) for r in reads) if reads else Counter()
        throttled = sum(1 for r in fake.requests if r.status == 429)
        print(
            f"{args.events} events for {args.customers} customers, Stripe latency {args.latency} s"
        )
        print(f"delivered in {delivering:.1f} s ({args.events / delivering:.0f} events/s)")
        print(f"drained in {drain:.1f} s after the first delivery")
        print(f"Stripe reads: {len(reads)} (target ≤ 600)")
        print(f"most Stripe calls in one second: {max(per_second.values(), default=0)} (budget 20)")
        print(f"Stripe 429s: {throttled}")
        print(f"events by status: {statuses}; failed: {statuses.get('failed', 0)} (target 0)")


if __name__ == "__main__":
    main()
