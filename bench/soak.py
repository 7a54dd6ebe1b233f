"""A bounded soak: two servers, a flaky Stripe, mixed load, one database restart mid-run.

Everything on loopback and stopping by itself: its own embedded PostgreSQL (restarted once
with `pg_ctl restart -m fast` half-way), the fake Stripe failing 10 % of API calls, two
`python -m app serve` processes with their workers, and for the whole duration several
users calling `me`, `plans`, `updateProfile`, `createCheckoutSession` and
`syncSubscription` on either server, paying for some checkouts in the fake, managing their
subscription (`changePlan` between Pro and Team, `cancelSubscription`,
`resumeSubscription`; a quarter of those lose Stripe's answer after Stripe acted, and the
user retries most of what could not be confirmed), while "Stripe"
changes subscriptions and deletes customers in its Dashboard and delivers the events of all
that (about 10 % twice, out of order, retried when not acknowledged) to either server.

When the load stops it waits (bounded) for the queues to drain and checks that nothing was
lost or applied twice: every event acknowledged with a 2xx is recorded and processed (a
`failed` one is a finding), every acknowledged profile edit is what our database and the
Stripe customer hold, our subscriptions match Stripe's, each deleted customer brought its
user one notification, no user has two Stripe customers, no profile push ran twice, no
user was charged for more plan changes than they were told were made or could not be
confirmed. It
prints the counts and exits non-zero on any finding.

    .venv/bin/python -m bench.soak [--seconds 60] [--users 12] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import token
from db import embedded, migrate
from services.plan_management import UNCONFIRMED
from services.stripe_gateway import subscription_from_dict
from tests.support.processes import ServerProcess, rss_mb
from tests.support.stripe import FakeStripe, sign

WEBHOOK_SECRET = "whsec_soak"
WARM_UP_SECONDS = 10.0
MAX_GROWTH_MB = 5.0
STRIPE_KEY = "sk_test_soak"  # one Stripe account: both servers share its idempotency keys
FAILURE_RATE = 0.10
DUPLICATE_RATE = 0.10
STRIPE_LATENCY = 0.05  # seconds per API call: workers spend time inside their transactions
# Not faults: Stripe failing, limits, and what subscription management answers a user
# without a subscription (NOT_FOUND) or asking for the plan they are on (BAD_USER_INPUT).
EXPECTED = ("PAYMENT_PROVIDER_ERROR", "UNCONFIRMED", "RATE_LIMITED", "ALREADY_SUBSCRIBED")
MANAGEMENT = ("changePlan", "cancelSubscription", "resumeSubscription")
MANAGEMENT_EXPECTED = ("BAD_USER_INPUT", "NOT_FOUND")
LOST_ANSWER_RATE = 0.25  # management calls whose answer is lost after Stripe acted
RETRY_RATE = 0.7  # unconfirmed changes the user retries at once
STALL_SECONDS = 130  # the worker's lease (120 s) and a margin: longer means stuck
LIVE = ("active", "trialing", "past_due")
PUSH_PATH = re.compile(r"^/v1/customers/(cus_[A-Za-z0-9]+)$")
REPLACED = re.compile(r"user (\S+): customer \S+ is gone from Stripe, replacing it")
ME = "{ me { id firstName lastName phone subscription { planId status } notifications { kind } } }"
PLANS = "{ plans { id name priceId } }"
UPDATE = "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { id } }"
CHECKOUT = "mutation { createCheckoutSession { id url } }"
SYNC = "mutation { syncSubscription { planId status } }"
CHANGE = "mutation($input: ChangePlanInput!) { changePlan(input: $input) { planId } }"
CANCEL = "mutation { cancelSubscription { cancelAtPeriodEnd } }"
RESUME = "mutation { resumeSubscription { cancelAtPeriodEnd } }"
SUBSCRIPTION_PATH = re.compile(r"^/v1/subscriptions/(sub_[A-Za-z0-9]+)$")


# --- the embedded PostgreSQL, restartable --------------------------------------------------


@contextmanager
def own_postgres() -> Iterator[tuple[Any, str]]:
    """A throwaway embedded server (never `DATABASE_URL`: the soak restarts it)."""
    with tempfile.TemporaryDirectory(prefix="billing-soak-pg-") as tmp:
        server = embedded.start(Path(tmp) / "pg", throwaway=True)
        try:
            url = str(server.get_uri())
            migrate.upgrade(url)
            yield server, url
        finally:
            server.cleanup()


def restart_postgres(server: Any) -> None:
    """`pg_ctl restart -m fast` as pgserver runs it (as the `pgserver` user under root).

    The restarted postmaster keeps its options (socket directory, no TCP) from
    `postmaster.opts`; pgserver's handle is pointed at it so its clean-up stops it.
    """
    from pgserver import _commands
    from pgserver.utils import PostmasterInfo

    _commands.pg_ctl(  # type: ignore[attr-defined]  # defined at import, per binary
        ["-w", "-m", "fast", "-l", str(server.log), "restart"],
        pgdata=server.pgdata,
        user=server.system_user,
        timeout=60,
    )
    server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)


# --- bookkeeping ---------------------------------------------------------------------------


@dataclass
class Delivery:
    due: float
    event_id: str
    attempt: int = 0


@dataclass
class Profile:
    first: str
    last: str
    phone: str


@dataclass
class Soak:
    fake: FakeStripe
    database_url: str
    pg_server: Any
    servers: list[ServerProcess]
    seconds: float
    users: list[str]
    rng: random.Random
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    started: float = 0.0
    stop_at: float = 0.0
    # resident memory of each server (MB): when ready, once warm, for the growth check
    memory_at_ready: list[float] = field(default_factory=list)
    memory_at_start: list[float] = field(default_factory=list)
    # GraphQL
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[tuple[float, str, str]] = field(default_factory=list)
    # profile edits: the last acknowledged one, and values of failed attempts since then
    acked_profile: dict[str, Profile] = field(default_factory=dict)
    maybe_profile: dict[str, list[Profile]] = field(default_factory=lambda: defaultdict(list))
    edits_acked: int = 0
    # webhooks
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)
    queue: list[Delivery] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    deliveries: Counter[str] = field(default_factory=Counter)
    duplicates_planned: int = 0
    # Stripe's side
    seen_requests: int = 0
    deleted_customers: dict[str, str] = field(default_factory=dict)  # customer -> user
    paid: int = 0
    dashboard_updates: int = 0
    # subscription management: per user, plan changes answered ok or unconfirmed
    changes_told: Counter[str] = field(default_factory=Counter)
    answers_lost: int = 0
    # the restart
    restart_at: float | None = None
    restart_seconds: float | None = None
    worker_failures_after_restart: list[int] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def now(self) -> float:
        return time.monotonic() - self.started

    # --- GraphQL load ------------------------------------------------------------------

    async def call(
        self, op: str, user: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The answer's body when it is free of errors, else None."""
        outcome, body = await self.call_outcome(op, user, query, variables)
        return body if outcome == "ok" else None

    async def call_outcome(
        self, op: str, user: str, query: str, variables: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any] | None]:
        """The outcome (`ok`, an error code, `UNCONFIRMED`, `HTTP …`) and the body."""
        client = self.rng.choice(self.clients)
        try:
            response = await client.post(
                "/graphql",
                json={"query": query, "variables": variables or {}},
                headers={"Authorization": f"Bearer {token(user)}"},
            )
        except httpx.TransportError as exc:
            outcome = f"transport {type(exc).__name__}"
            body = None
        else:
            body = response.json() if response.status_code == 200 else None
            if body is None:
                outcome = f"HTTP {response.status_code}"
            else:
                errors = body.get("errors", [])
                codes = [e.get("extensions", {}).get("code", "?") for e in errors]
                outcome = codes[0] if codes else "ok"
                if errors and errors[0].get("message") == UNCONFIRMED:
                    outcome = "UNCONFIRMED"
        self.requests[(op, outcome)] += 1
        if outcome != "ok":
            self.failures.append((self.now(), op, outcome))
        return outcome, body

    async def user_loop(self, user: str) -> None:
        n = 0
        while time.monotonic() < self.stop_at:
            n += 1
            roll = self.rng.random()
            if roll < 0.40:
                await self.call("me", user, ME)
            elif roll < 0.52:
                await self.call("plans", user, PLANS)
            elif roll < 0.74:
                await self.edit_profile(user, n)
            elif roll < 0.80:
                await self.manage(user)
            elif roll < 0.89:
                await self.call("syncSubscription", user, SYNC)
            else:
                body = await self.call("createCheckoutSession", user, CHECKOUT)
                if body is not None and self.rng.random() < 0.7:
                    session_id = body["data"]["createCheckoutSession"]["id"]
                    self.spawn(self.pay(user, session_id))
            await asyncio.sleep(self.rng.uniform(0.2, 0.8))

    async def edit_profile(self, user: str, n: int) -> None:
        profile = Profile(
            first=f"F{user.rsplit('-', 1)[1]}x{n}",
            last=self.rng.choice(["Lovelace", "Hopper", "Turing", "Noether"]),
            phone=f"+44207946{self.rng.randrange(10_000):04d}",
        )
        variables = {
            "input": {"firstName": profile.first, "lastName": profile.last, "phone": profile.phone}
        }
        if await self.call("updateProfile", user, UPDATE, variables) is None:
            self.maybe_profile[user].append(profile)  # failed, but might have committed
        else:
            self.acked_profile[user] = profile
            self.maybe_profile[user] = []
            self.edits_acked += 1

    async def manage(self, user: str) -> None:
        """Change plan, cancel at period end or resume; sometimes Stripe acts and its answer
        is lost; an unconfirmed change is mostly retried at once, as a user would."""
        roll = self.rng.random()
        if roll < 0.5:
            op, query = "changePlan", CHANGE
            variables: dict[str, Any] = {"input": {"planId": self.rng.choice(["PRO", "TEAM"])}}
        elif roll < 0.75:
            op, query, variables = "cancelSubscription", CANCEL, {}
        else:
            op, query, variables = "resumeSubscription", RESUME, {}
        live = [
            s["id"]
            for s in self.fake.subscriptions.values()
            if s["metadata"].get("userId") == user and s["status"] in LIVE
        ]
        if live and self.rng.random() < LOST_ANSWER_RATE:
            self.answers_lost += 1
            path = f"/v1/subscriptions/{self.rng.choice(live)}"
            self.fake.lose_next_responses(1, path=path, method="POST")
        for _ in range(3):
            outcome, _ = await self.call_outcome(op, user, query, variables)
            if op == "changePlan" and outcome in ("ok", "UNCONFIRMED"):
                self.changes_told[user] += 1
            if outcome != "UNCONFIRMED" or self.rng.random() >= RETRY_RATE:
                return
            await asyncio.sleep(0.2)

    async def pay(self, user: str, session_id: str) -> None:
        """The user pays on Checkout; Stripe sends the events; the SPA syncs on return."""
        await asyncio.sleep(self.rng.uniform(0.2, 1.0))
        session = self.fake.checkout_sessions.get(session_id)
        if session is None or session["status"] != "open":
            return
        customer = self.fake.customers.get(session.get("customer") or "", {})
        if customer.get("deleted"):
            return
        try:
            subscription = self.fake.complete_checkout(session_id)
        except ValueError:
            return
        self.paid += 1
        session = self.fake.checkout_sessions[session_id]
        invoice = {
            "id": f"in_soak{self.paid}",
            "object": "invoice",
            "customer": subscription["customer"],
            "subscription": subscription["id"],
        }
        self.emit("checkout.session.completed", session)
        self.emit("customer.subscription.created", subscription)
        self.emit("invoice.paid", invoice)
        await asyncio.sleep(0.3)
        await self.call("syncSubscription", user, SYNC)

    # --- Stripe's side: events, Dashboard changes ---------------------------------------

    def emit(self, event_type: str, obj: dict[str, Any]) -> None:
        event = self.fake.event(event_type, obj)
        self.events[event["id"]] = event
        self.bodies[event["id"]] = json.dumps(event).encode()
        now = time.monotonic()
        self.queue.append(Delivery(now + self.rng.uniform(0, 0.6), event["id"]))
        if self.rng.random() < DUPLICATE_RATE:
            self.duplicates_planned += 1
            self.queue.append(Delivery(now + self.rng.uniform(0.3, 3.0), event["id"]))

    async def stripe_side(self) -> None:
        db: asyncpg.Connection | None = None
        while time.monotonic() < self.stop_at:
            self.echo_api_changes()
            roll = self.rng.random()
            try:
                if roll < 0.12:
                    self.dashboard_subscription_change()
                elif roll < 0.16 and len(self.deleted_customers) < len(self.users) // 3:
                    if db is None or db.is_closed():
                        db = await asyncpg.connect(self.database_url)
                    await self.dashboard_customer_deletion(db)
                elif roll < 0.20:
                    self.emit("product.created", {"id": f"prod_soak{self.rng.randrange(10**6)}"})
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                db = None  # the database is restarting; try again later
            await asyncio.sleep(0.25)
        self.echo_api_changes()
        if db is not None:
            await db.close()

    def echo_api_changes(self) -> None:
        """Stripe's events for what our servers did through the API."""
        recorded = self.fake.requests
        for request in recorded[self.seen_requests :]:
            if request.method != "POST" or request.status != 200 or request.replayed:
                continue
            if request.path == "/v1/customers":
                self.emit("customer.created", {"id": "cus_new", "object": "customer"})
            elif match := PUSH_PATH.match(request.path):
                customer = self.fake.customers.get(match.group(1), {})
                if customer and not customer.get("deleted"):
                    self.emit("customer.updated", customer)
            elif match := SUBSCRIPTION_PATH.match(request.path):
                subscription = self.fake.subscriptions.get(match.group(1))
                if subscription is not None:
                    self.emit("customer.subscription.updated", subscription)
        self.seen_requests = len(recorded)

    def dashboard_subscription_change(self) -> None:
        live = [
            s for s in self.fake.subscriptions.values() if s["status"] in ("active", "past_due")
        ]
        if not live:
            return
        subscription = self.rng.choice(live)
        if self.rng.random() < 0.5:
            status = "past_due" if subscription["status"] == "active" else "active"
            changed = self.fake.set_subscription_status(subscription["id"], status)
        else:  # as the Dashboard does it, through the API: `cancel_at` follows the flag
            at_end = not subscription["cancel_at_period_end"]
            period_end = min(i["current_period_end"] for i in subscription["items"]["data"])
            changed = self.fake.set_subscription_status(
                subscription["id"],
                subscription["status"],
                cancel_at_period_end=at_end,
                cancel_at=period_end if at_end else None,
            )
        self.dashboard_updates += 1
        self.emit("customer.subscription.updated", changed)

    async def dashboard_customer_deletion(self, db: asyncpg.Connection) -> None:
        """Delete a paying customer (one our database shows subscribed, so no checkout
        replaces it meanwhile); Stripe cancels its subscriptions and says so."""
        rows = await db.fetch(
            """
            SELECT c.user_id, c.stripe_customer_id FROM customers c
            JOIN subscriptions s USING (user_id)
            WHERE s.status IN ('active', 'trialing', 'past_due') AND s.plan_id <> 'free'
            """
        )
        if not rows:
            return
        user, customer_id = self.rng.choice(rows)
        if customer_id in self.deleted_customers:
            return
        live = [
            s["id"]
            for s in self.fake.subscriptions.values()
            if s["customer"] == customer_id
            and s["status"] not in ("canceled", "incomplete_expired")
        ]
        self.fake.delete_customer_directly(customer_id)
        self.deleted_customers[customer_id] = user
        for subscription_id in live:
            self.emit("customer.subscription.deleted", self.fake.subscriptions[subscription_id])
        self.emit("customer.deleted", {"id": customer_id, "object": "customer", "deleted": True})

    async def deliverer(self, client_pick: random.Random, deadline: float) -> None:
        """Stripe's delivery: any order, retried with backoff until acknowledged."""
        while time.monotonic() < deadline:
            now = time.monotonic()
            due = [d for d in self.queue if d.due <= now]
            if not due:
                if now >= self.stop_at and not self.queue:
                    return
                await asyncio.sleep(0.02)
                continue
            delivery = client_pick.choice(due)
            self.queue.remove(delivery)
            body = self.bodies[delivery.event_id]
            client = client_pick.choice(self.clients)
            try:
                response = await client.post(
                    "/webhooks/stripe",
                    content=body,
                    headers={
                        "Stripe-Signature": sign(body, WEBHOOK_SECRET),
                        "Content-Type": "application/json",
                    },
                )
                outcome = (
                    "2xx" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
                )
            except httpx.TransportError as exc:
                outcome = f"transport {type(exc).__name__}"
            self.deliveries[outcome] += 1
            if outcome == "2xx":
                self.acked.add(delivery.event_id)
            else:
                self.failures.append((self.now(), "webhook", outcome))
                delivery.attempt += 1
                delivery.due = time.monotonic() + min(5.0, 0.5 * 2**delivery.attempt)
                self.queue.append(delivery)

    # --- the database restart -----------------------------------------------------------

    async def restarter(self) -> None:
        await asyncio.sleep(self.seconds / 2)
        self.restart_at = self.now()
        started = time.monotonic()
        await asyncio.to_thread(restart_postgres, self.pg_server)
        self.restart_seconds = time.monotonic() - started
        await asyncio.sleep(5)  # the database is back: a worker's loop must not fail any more
        self.worker_failures_after_restart = self.worker_failures()

    async def memory_when_warm(self) -> None:
        """Each server's resident memory once the load has run for a while: every lazily
        imported module and every cache of a steady load is in by then."""
        await asyncio.sleep(min(WARM_UP_SECONDS, self.seconds / 2))
        self.memory_at_start = [rss_mb(s.pid) for s in self.servers]

    def worker_failures(self) -> list[int]:
        return [s.log().count("worker iteration failed") for s in self.servers]

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- the run ------------------------------------------------------------------------

    async def run(self) -> int:
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        self.clients = [
            httpx.AsyncClient(base_url=s.base, timeout=30, limits=limits) for s in self.servers
        ]
        try:
            self.started = time.monotonic()
            self.stop_at = self.started + self.seconds
            delivery_deadline = self.stop_at + 60
            print(
                f"Soak: {self.seconds:g} s, {len(self.servers)} servers, {len(self.users)} users, "
                f"Stripe failing {FAILURE_RATE:.0%} of calls ({STRIPE_LATENCY * 1000:g} ms each), "
                f"PostgreSQL restart at {self.seconds / 2:g} s",
                flush=True,
            )
            self.memory_at_ready = [rss_mb(s.pid) for s in self.servers]
            await asyncio.gather(
                *(self.user_loop(user) for user in self.users),
                self.stripe_side(),
                self.restarter(),
                self.memory_when_warm(),
                *(
                    self.deliverer(random.Random(self.rng.random()), delivery_deadline)
                    for _ in range(4)
                ),
            )
            if self.tasks:
                await asyncio.gather(*list(self.tasks))
            self.echo_api_changes()
            await asyncio.gather(
                *(
                    self.deliverer(random.Random(self.rng.random()), delivery_deadline)
                    for _ in range(4)
                )
            )
            load_stopped = time.monotonic()
            drain = await self.drain(self.stop_at + 300)
            if drain:  # pushes made while draining echo back as events: deliver, drain those
                self.echo_api_changes()
                await self.deliverer(random.Random(0), time.monotonic() + 30)
                drain = await self.drain(time.monotonic() + 60)
            drained_after = time.monotonic() - load_stopped
            return await self.report(drain, drained_after)
        finally:
            for client in self.clients:
                await client.aclose()

    async def drain(self, deadline: float) -> bool:
        """Wait until no event is pending and no job is left; False when the deadline passed."""
        db = await asyncpg.connect(self.database_url)
        try:
            leased = await db.fetchrow(
                """
                SELECT
                  (SELECT count(*) FROM stripe_events WHERE status = 'pending') AS events,
                  (SELECT count(*) FROM stripe_events
                   WHERE status = 'pending' AND locked_until > now()) AS events_leased,
                  (SELECT count(*) FROM sync_jobs) AS jobs,
                  (SELECT count(*) FROM sync_jobs WHERE locked_until > now()) AS jobs_leased
                """
            )
            print(
                f"Draining: {leased['events']} event(s) pending ({leased['events_leased']} "
                f"leased), {leased['jobs']} job(s) ({leased['jobs_leased']} leased)",
                flush=True,
            )
            progress, before = time.monotonic(), None
            while time.monotonic() < deadline:
                left = await db.fetchval(
                    "SELECT (SELECT count(*) FROM stripe_events WHERE status = 'pending') "
                    "+ (SELECT count(*) FROM sync_jobs)"
                )
                if left == 0:
                    return True
                if left != before:
                    progress, before = time.monotonic(), left
                elif time.monotonic() - progress > STALL_SECONDS:
                    print(f"No progress for {STALL_SECONDS:g} s with {left} item(s) left: stuck")
                    return False
                await asyncio.sleep(0.25)
            return False
        finally:
            await db.close()

    # --- the checks ---------------------------------------------------------------------

    async def report(self, drained: bool, drained_after: float) -> int:
        findings: list[str] = []
        db = await asyncpg.connect(self.database_url)
        try:
            rows = {r["id"]: r for r in await db.fetch("SELECT * FROM stripe_events")}
            users = {r["id"]: r for r in await db.fetch("SELECT * FROM users")}
            links = dict(await db.fetch("SELECT user_id, stripe_customer_id FROM customers"))
            subs_by_user: dict[str, list[asyncpg.Record]] = {}
            for r in await db.fetch("SELECT * FROM subscriptions"):
                subs_by_user.setdefault(r["user_id"], []).append(r)
            notified = Counter(
                r["user_id"]
                for r in await db.fetch(
                    "SELECT user_id FROM notifications WHERE kind = 'customer_deleted'"
                )
            )
            jobs_left = await db.fetchval("SELECT count(*) FROM sync_jobs")
        finally:
            await db.close()
        if not drained:
            findings.append("the queues did not drain within the bound")

        # Events: acknowledged means recorded, then processed.
        statuses = Counter(r["status"] for r in rows.values())
        for event_id in sorted(self.acked):
            row = rows.get(event_id)
            if row is None:
                findings.append(f"LOST: {event_id} was acknowledged but is not recorded")
            elif row["status"] == "failed":
                findings.append(
                    f"FAILED: {event_id} ({row['type']}) after {row['attempts']} attempts: "
                    f"{row['last_error']}"
                )
            elif row["status"] == "pending":
                findings.append(f"NOT PROCESSED: {event_id} ({row['type']}) still pending")
        retried = [r["attempts"] for r in rows.values() if r["attempts"] > 1]

        # Profile edits: the last acknowledged one (or a failed one after it, which may have
        # committed) is what we hold, and what the Stripe customer holds.
        customers = self.fake.customers
        for user, acked in sorted(self.acked_profile.items()):
            row = users[user]
            held = Profile(row["first_name"], row["last_name"], row["phone"])
            if held != acked and held not in self.maybe_profile[user]:
                findings.append(f"LOST EDIT: {user} holds {held}, last acknowledged {acked}")
            customer_id = links.get(user)
            if customer_id is not None:
                customer = customers[customer_id]
                want = (f"{held.first} {held.last}", held.phone)
                if (customer.get("name"), customer.get("phone")) != want:
                    findings.append(
                        f"NOT SYNCED: {user}'s Stripe customer {customer_id} holds "
                        f"{customer.get('name')!r} {customer.get('phone')!r}, we hold {want}"
                    )

        # Subscriptions: every one of the customer's is ours as Stripe holds it.
        subscriptions = self.fake.subscriptions
        for user in self.users:
            customer_id = links.get(user)
            ours_of_user = subs_by_user.get(user, [])
            if customer_id is None:
                for sub in ours_of_user:
                    if sub["plan_id"] != "free" and sub["status"] in LIVE:
                        findings.append(
                            f"STALE: {user} has no customer but a live {sub['plan_id']}"
                        )
                continue
            ours = {
                sub["stripe_subscription_id"]: (
                    sub["status"],
                    sub["cancel_at_period_end"],
                    sub["price_id"],
                )
                for sub in ours_of_user
                if sub["stripe_subscription_id"] is not None
                and sub["stripe_customer_id"] == customer_id
            }
            theirs = {
                found.id: (found.status, found.cancel_at_period_end, found.price_id)
                for found in (
                    subscription_from_dict(s)
                    for s in subscriptions.values()
                    if s["customer"] == customer_id
                )
            }
            if ours != theirs:
                findings.append(f"MISMATCH: {user}'s subscriptions are {ours}, Stripe's {theirs}")

        # One notification per deleted customer, never two.
        deletions = Counter(self.deleted_customers.values())
        replaced = Counter(
            match.group(1) for server in self.servers for match in REPLACED.finditer(server.log())
        )
        for user in sorted(set(deletions) | set(notified)):
            if notified[user] > deletions[user]:
                findings.append(
                    f"DOUBLED: {user} got {notified[user]} customer_deleted notifications for "
                    f"{deletions[user]} deleted customer(s)"
                )
            elif notified[user] < deletions[user]:
                findings.append(
                    f"MISSING: {user} got {notified[user]} customer_deleted notifications for "
                    f"{deletions[user]} deleted customer(s); {replaced[user]} replaced by a "
                    "checkout before the deletion was processed, which unlinks silently"
                )

        # Never two live customers for one user; never one push executed twice.
        owners = Counter(
            c.get("metadata", {}).get("userId")
            for c in customers.values()
            if not c.get("deleted") and c.get("metadata", {}).get("userId")
        )
        for user, count in owners.items():
            if count > 1:
                findings.append(f"DOUBLED: {user} has {count} live Stripe customers")
        recorded = self.fake.requests
        pushes = [r for r in recorded if r.method == "POST" and PUSH_PATH.match(r.path)]
        executed = Counter(r.idempotency_key for r in pushes if r.status == 200 and not r.replayed)
        for key, count in executed.items():
            if key and key.startswith("billing-api:profile:") and count > 1:
                findings.append(f"DOUBLED: profile push {key} executed {count} times")

        # Plan changes: never more made at Stripe for a user than the user was told were
        # made or could not be confirmed (a change the user was told failed is never made).
        owner: dict[str, str] = {
            s["id"]: str(s["metadata"].get("userId")) for s in self.fake.subscriptions.values()
        }
        made: Counter[str] = Counter(
            owner.get(m.group(1), "?")
            for r in recorded
            if r.method == "POST"
            and r.status == 200
            and not r.replayed
            and (r.idempotency_key or "").startswith("billing-api:change-plan:")
            and (m := SUBSCRIPTION_PATH.match(r.path))
        )
        for changer, count in sorted(made.items()):
            if count > self.changes_told[changer]:
                findings.append(
                    f"CHARGED: {changer} had {count} plan changes made at Stripe, was told of "
                    f"{self.changes_told[changer]} (made or unconfirmed)"
                )

        # A worker that keeps failing once the database is back is stuck (the other one may
        # have done its work, which hides it from the checks above).
        if self.worker_failures_after_restart:
            for n, (then, now) in enumerate(
                zip(self.worker_failures_after_restart, self.worker_failures(), strict=True)
            ):
                if now > then:
                    last = [
                        line
                        for line in self.servers[n].log().splitlines()
                        if "worker iteration failed" in line
                    ][-1]
                    findings.append(
                        f"WORKER STUCK: server {n}'s worker loop failed {now - then} more "
                        f"times after the database was back; the last: {last}"
                    )

        # --- the summary ---
        print(f"\nGraphQL requests: {sum(self.requests.values())}")
        for op in (
            "me",
            "plans",
            "updateProfile",
            "createCheckoutSession",
            "syncSubscription",
            *MANAGEMENT,
        ):
            outcomes = {o: n for (name, o), n in self.requests.items() if name == op}
            line = ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items(), key=lambda x: -x[1]))
            print(f"  {op:22} {line}")
        undelivered = set(self.events) - self.acked
        print(
            f"Webhooks: {len(self.events)} events, {sum(self.deliveries.values())} deliveries "
            f"({self.duplicates_planned} duplicates), outcomes: "
            + ", ".join(f"{o} {n}" for o, n in self.deliveries.most_common())
        )
        print(
            f"  acknowledged {len(self.acked)}, never acknowledged {len(undelivered)}; recorded "
            f"{len(rows)}: " + ", ".join(f"{s} {n}" for s, n in statuses.most_common())
        )
        print(f"  {len(retried)} took more than one attempt (max {max(retried, default=1)})")
        api = [r for r in recorded if r.path.startswith("/v1/")]
        failed_api = sum(r.status == 500 for r in api)
        print(
            f"Jobs: {self.edits_acked} profile edits acknowledged, "
            f"{sum(r.status == 200 and not r.replayed for r in pushes)} pushes to Stripe "
            f"({sum(r.replayed for r in pushes)} replayed), "
            f"{sum(r.status == 500 for r in pushes)} push attempts failed by Stripe, "
            f"{jobs_left} left"
        )
        print(
            f"Stripe: {len(api)} API calls, {failed_api} failed ({failed_api / max(1, len(api)):.1%}); "
            f"{self.paid} checkouts paid, {self.dashboard_updates} subscription changes and "
            f"{len(self.deleted_customers)} customer deletions in the Dashboard"
        )
        print(
            f"Subscription management: {sum(made.values())} plan changes made at Stripe, "
            f"{sum(self.changes_told.values())} told made or unconfirmed; "
            f"{self.answers_lost} answers lost after Stripe acted"
        )
        if self.restart_at is not None and self.restart_seconds is not None:
            start, end = self.restart_at, self.restart_at + self.restart_seconds
            faults = [
                f
                for f in self.failures
                if f[2] not in EXPECTED and not (f[1] in MANAGEMENT and f[2] in MANAGEMENT_EXPECTED)
            ]
            around = [f for f in faults if start - 0.5 <= f[0] <= end + 5]
            elsewhere = [f for f in faults if not start - 0.5 <= f[0] <= end + 5]
            print(
                f"Database restart at {start:.1f} s took {self.restart_seconds:.2f} s; "
                f"{len(around)} failed requests around it: "
                + ", ".join(
                    f"{op} {o} {n}"
                    for (op, o), n in Counter((f[1], f[2]) for f in around).most_common()
                )
            )
            unexpected = Counter((f[1], f[2]) for f in elsewhere)
            print(
                "Other failures: "
                + (
                    ", ".join(f"{op} {o} {n}" for (op, o), n in unexpected.most_common())
                    or "none (beyond " + ", ".join(EXPECTED) + ")"
                )
            )
        print(f"Drained {drained_after:.1f} s after the load stopped")
        memory_at_end = [rss_mb(s.pid) for s in self.servers]
        for n, (ready, start, end) in enumerate(
            zip(self.memory_at_ready, self.memory_at_start, memory_at_end, strict=True)
        ):
            print(
                f"Server {n} resident memory: {ready:.1f} MB ready, {start:.1f} MB warm "
                f"({WARM_UP_SECONDS:g} s into the load), {end:.1f} MB at the end: "
                f"{end - start:+.1f} MB over the run (target < {MAX_GROWTH_MB:g})"
            )
            if end - start >= MAX_GROWTH_MB:
                findings.append(
                    f"MEMORY: server {n} grew {end - start:.1f} MB over the run "
                    f"({start:.1f} → {end:.1f} MB)"
                )
        errors = [s.log().count("Traceback") for s in self.servers]
        print(f"Tracebacks in the server logs: {errors}")
        if findings:
            print(f"\n{len(findings)} finding(s):")
            for finding in findings:
                print(f"  {finding}")
            return 1
        print("\nChecks: nothing lost, nothing applied twice")
        return 0


def save_log(server: ServerProcess, path: Path) -> None:
    server.stop()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(server.log())
    print(f"Server log: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--logs", type=Path, default=None, help="save the servers' logs here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with ExitStack() as stack:
        fake = stack.enter_context(FakeStripe())
        fake.seed(args.seed)
        price = fake.add_price(unit_amount=1500)["id"]
        team = fake.add_price(unit_amount=4900, product_name="Team")["id"]
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="billing-soak-")))
        plans_file = data_dir / "plans.toml"
        plans_file.write_text(
            f'[[plans]]\nid = "TEAM"\nname = "Team"\nprice_id = "{team}"\n', encoding="utf-8"
        )
        pg_server, database_url = stack.enter_context(own_postgres())
        env = {
            "DATABASE_URL": database_url,
            "STRIPE_SECRET_KEY": STRIPE_KEY,
            "STRIPE_API_BASE": fake.url,
            "STRIPE_PRICE_PRO": price,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_TIMEOUT_SECONDS": "5",
            "STRIPE_MAX_NETWORK_RETRIES": "2",
            "WORKER_POLL_SECONDS": "0.2",
            "DB_POOL_MAX_SIZE": "5",
            "DATA_DIR": str(data_dir),
            "PLANS_FILE": str(plans_file),
        }
        servers = [ServerProcess(env) for _ in range(2)]
        for n, server in enumerate(servers):
            stack.callback(server.close)
            if args.logs is not None:
                stack.callback(save_log, server, args.logs / f"server-{n}.log")
            server.start()
        for server in servers:
            server.wait_ready()
        fake.failure_rate = FAILURE_RATE
        fake.latency = STRIPE_LATENCY
        soak = Soak(
            fake=fake,
            database_url=database_url,
            pg_server=pg_server,
            servers=servers,
            seconds=args.seconds,
            users=[f"soak-{n}" for n in range(args.users)],
            rng=rng,
        )
        return asyncio.run(soak.run())


if __name__ == "__main__":
    sys.exit(main())
