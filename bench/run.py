"""`make bench`: the API beside a bare reference doing the same SQL, driven by wrk.

One API worker (`python -m app serve`) and the bare reference (`bench/reference.py`) each
pinned to core 0 and measured one after the other; wrk on core 1 (PostgreSQL shares it).
Prints throughput and latency for each pair, the ratios against the issue's targets, and
the API process's resident memory after the load.

    .venv/bin/python -m bench.run [--seconds 10] [--connections 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from bench.common import signed_bodies_lua, token
from tests.support.processes import (
    ROOT,
    free_port,
    pid_of,
    pin,
    rss_mb,
    server_process,
    throwaway_database,
)
from tests.support.stripe import sign

WEBHOOK_SECRET = "whsec_bench_run"
# A worker's resident memory after the load, with every module its libraries import (no
# module hidden from them).
MAX_MEMORY_MB = 100
USER = "bench-user"
USAGE_ROWS = 1000

ME_QUERY = (
    "query Me($full: Boolean!) { me { id email emailVerified "
    "firstName @include(if: $full) lastName @include(if: $full) phone } }"
)
PLANS_QUERY = "{ plans { id name priceId amount currency interval } }"
EXPORT_QUERY = (
    "{ export { exportVersion exportTimestamp userProfile { id email } "
    "subscription { planId status } usageRecords { id metric quantity createdAt } } }"
)


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def lua_post(path: Path, body: str, headers: dict[str, str], method: str = "POST") -> Path:
    lines = [f"wrk.method = {json.dumps(method)}", f"wrk.body = {json.dumps(body)}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, script: Path, seconds: int, connections: int, *args: str) -> Result:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    if args:
        command += ["--", *args]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "1", *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    # wrk stops sending, but the server may still be working off queued requests (a 1,000-row
    # export takes ~0.1 s): let it drain so one run's backlog never lands in the next.
    time.sleep(2)
    rps = float(out.split("Requests/sec:")[1].split()[0])
    latency = {
        line.split()[0]: _ms(line.split()[1])
        for line in out.splitlines()
        if line.strip().startswith(("50%", "99%"))
    }
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    return Result(rps, latency["50%"], latency["99%"], errors)


async def seed(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO users (id, email, email_verified, first_name, last_name) "
            "VALUES ($1, $2, true, 'Ada', 'Lovelace') ON CONFLICT DO NOTHING",
            USER,
            f"{USER}@example.com",
        )
        await conn.execute(
            "INSERT INTO subscriptions (user_id, plan_id, status) VALUES ($1, 'free', 'active') "
            "ON CONFLICT DO NOTHING",
            USER,
        )
        await conn.execute(
            "INSERT INTO usage_records (user_id, metric, quantity, created_at) "
            "SELECT $1, 'api_calls', n, now() - make_interval(secs => n) "
            "FROM generate_series(1, $2) AS n",
            USER,
            USAGE_ROWS,
        )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bare_events (LIKE stripe_events INCLUDING ALL)"
        )
        # So autovacuum does not wake up on the fresh rows in the middle of a measurement.
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def webhook_file(path: Path, count: int) -> Path:
    """Signed Stripe events, 10 % of them delivered twice, shuffled; one per line."""
    now = int(time.time())
    events = []
    for n in range(count):
        event = {
            "id": f"evt_bench{n:08d}{random.randrange(16**6):06x}",
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": now,
            "type": "customer.updated",
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": {"id": f"cus_bench{n}", "object": "customer", "email": None}},
        }
        events.append(json.dumps(event, separators=(",", ":")))
    deliveries = events + random.sample(events, count // 10)
    random.shuffle(deliveries)
    path.write_text(
        "".join(f"{sign(body.encode(), WEBHOOK_SECRET, now)}\t{body}\n" for body in deliveries)
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: `apt-get install wrk` (Debian) and run again")
    seconds, connections = args.seconds, args.connections

    with throwaway_database() as database_url, tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        asyncio.run(seed(database_url))
        bearer = token(USER, expires_in=36000)
        env = {
            "DATABASE_URL": database_url,
            "RUN_WORKER": "false",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "APP_ENV": "production",  # no GraphiQL, no introspection: as it is served
            # Configured as in production (its HTTP client and TLS context count in the
            # memory figure); no measured request calls Stripe.
            "STRIPE_SECRET_KEY": "sk_test_bench",
            "STRIPE_API_BASE": "http://127.0.0.1:9",
            "STRIPE_PRICE_PRO": "price_bench",
            "ACCESS_LOG": "false",
            # The benchmark user hits export thousands of times a second on purpose; every
            # request is still counted (the same statement as in production), never refused.
            "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000000",
            "RATE_LIMIT_EXPORT_PER_HOUR": "0",
            "RATE_LIMIT_STRIPE_PER_MINUTE": "0",
            "RATE_LIMIT_DELETE_PER_HOUR": "0",
        }
        reference_port = free_port()
        reference = subprocess.Popen(
            [sys.executable, "-m", "bench.reference"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": database_url, "PORT": str(reference_port)},
        )
        time.sleep(1.5)
        pin(reference.pid)
        bare = f"http://127.0.0.1:{reference_port}"
        try:
            with server_process(env) as api:
                api_pid = pid_of(api)
                pin(api_pid)
                auth = {"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"}
                me = lua_post(
                    tmp / "me.lua",
                    json.dumps({"query": ME_QUERY, "variables": {"full": True}}),
                    auth,
                )
                bare_me = lua_post(
                    tmp / "bare_me.lua",
                    json.dumps({"variables": {"id": USER}}),
                    {"Content-Type": "application/json"},
                )
                plans = lua_post(
                    tmp / "plans.lua",
                    json.dumps({"query": PLANS_QUERY}),
                    {"Content-Type": "application/json"},
                )
                export = lua_post(tmp / "export.lua", json.dumps({"query": EXPORT_QUERY}), auth)
                download = lua_post(
                    tmp / "download.lua", "", {"Authorization": f"Bearer {bearer}"}, "GET"
                )
                bare_get = lua_post(tmp / "bare_get.lua", "", {}, "GET")
                cycle = tmp / "cycle.lua"
                cycle.write_text(signed_bodies_lua(once=False))
                deliveries = webhook_file(tmp / "webhooks.txt", 60_000)

                check(api, bearer)
                memory_by_phase = [("idle", rss_mb(api_pid))]

                def measured(name: str, result: Result) -> Result:
                    memory_by_phase.append((name, rss_mb(api_pid)))
                    return result

                for warm, warm_connections in (
                    (me, connections),
                    (plans, connections),
                    (export, 16),
                ):
                    wrk(f"{api}/graphql", warm, 2, warm_connections)
                rows = [
                    (
                        "me (with variables)",
                        measured("me", wrk(f"{api}/graphql", me, seconds, connections)),
                        wrk(f"{bare}/bare/me", bare_me, seconds, connections),
                        0.5,
                    ),
                    (
                        "plans",
                        measured("plans", wrk(f"{api}/graphql", plans, seconds, connections)),
                        wrk(f"{bare}/bare/plans", bare_get, seconds, connections),
                        0.8,
                    ),
                    (
                        "webhook ingestion, 10% dup",
                        measured(
                            "webhooks",
                            wrk(
                                f"{api}/webhooks/stripe",
                                cycle,
                                seconds,
                                connections,
                                str(deliveries),
                            ),
                        ),
                        wrk(f"{bare}/bare/webhook", cycle, seconds, connections, str(deliveries)),
                        0.5,
                    ),
                    (
                        "export, 1,000 usage rows",
                        measured("export", wrk(f"{api}/graphql", export, seconds, 16)),
                        wrk(f"{bare}/bare/export?id={USER}", bare_get, seconds, 16),
                        0.3,
                    ),
                    (
                        "GET /account/export",
                        measured("download", wrk(f"{api}/account/export", download, seconds, 16)),
                        wrk(f"{bare}/bare/export?id={USER}", bare_get, seconds, 16),
                        0.3,
                    ),
                ]
                memory = rss_mb(api_pid)
        finally:
            reference.terminate()
            reference.wait(timeout=20)

    print(f"\nOne worker each on core 0; wrk on core 1; {seconds} s per run\n")
    print(
        f"{'':28} {'API req/s':>10} {'bare req/s':>10} {'ratio':>6} {'target':>7}   "
        f"{'p50 ms':>7} {'p99 ms':>7} {'p99/p50':>7}  met"
    )
    all_met = True
    for name, api_result, bare_result, target in rows:
        ratio = api_result.rps / bare_result.rps
        tail = api_result.p99_ms / api_result.p50_ms
        met = ratio >= target and api_result.errors == 0
        if name.startswith("me"):
            met = met and tail <= 4
        all_met &= met
        print(
            f"{name:28} {api_result.rps:10.0f} {bare_result.rps:10.0f} {ratio:6.2f} {'≥' + str(target):>7}   "
            f"{api_result.p50_ms:7.2f} {api_result.p99_ms:7.2f} {tail:7.2f}  {'yes' if met else 'NO'}"
            + (f"  ({api_result.errors} non-2xx)" if api_result.errors else "")
        )
    memory_met = memory <= MAX_MEMORY_MB
    phases = ", ".join(f"{name} {mb:.1f}" for name, mb in memory_by_phase)
    print(f"\nAPI resident memory (MB) idle and after each API run: {phases}")
    print(
        f"\nAPI resident memory after the load: {memory:.1f} MB (target ≤ {MAX_MEMORY_MB} MB): {'yes' if memory_met else 'NO'}"
    )
    print("All targets met." if all_met and memory_met else "Some targets are not met.")


def check(api: str, bearer: str) -> None:
    """Every measured request must really succeed: wrk only sees status codes."""
    headers = {"Authorization": f"Bearer {bearer}"}
    for query, variables in ((ME_QUERY, {"full": True}), (PLANS_QUERY, {}), (EXPORT_QUERY, {})):
        body = httpx.post(
            f"{api}/graphql", json={"query": query, "variables": variables}, headers=headers
        ).json()
        assert "errors" not in body, body
    download = httpx.get(f"{api}/account/export", headers=headers)
    assert download.status_code == 200, download.text
    assert len(download.json()["usageRecords"]) == USAGE_ROWS


if __name__ == "__main__":
    main()
