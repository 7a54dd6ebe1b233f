"""Two server processes on one database: every event and job is handled exactly once.

Both run their worker; webhooks (with duplicates, shuffled) and profile edits arrive at both
at once. "Exactly once" is checked on what a second processing would leave behind, not only
on the event rows. The worker takes a customer's due events together and answers them with
one re-read: each such processing (its events finished in one transaction, so they share
`processed_at`) lists the customer's subscriptions in Stripe once if any of them is a
subscription event, and retrieves the customer once if any is a `customer.updated`; each
event row counts the times it was finished (`processings`); each push of a profile version
is one POST with its own idempotency key, and a `customer.deleted` processed a second time
would notify twice. Each server uses its own Stripe API key, so the fake tells which
process made a call. The checker is proven on itself at the end: re-running a few finished
items makes it fail.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.helpers import gql
from tests.servers import Farm, clients, deliver, eventually, server_env
from tests.support.stripe import FakeStripe
from tests.support.tokens import make_token

KEY_A, KEY_B = "sk_test_server_a", "sk_test_server_b"
CHECKOUT = "mutation { createCheckoutSession { id } }"
UPDATE = (
    "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { firstName lastName } }"
)
PUSH_KEY_PREFIX = "billing-api:profile:"


@dataclass(frozen=True)
class Expected:
    status: str  # what the event row must end as
    customer: str | None  # whose Stripe data one processing reads
    reads: str | None  # "subscriptions", "customer" or None: the Stripe call one processing makes


async def checkout(client: httpx.AsyncClient, user: str) -> str:
    body = await gql(client, CHECKOUT, token=make_token(user))
    assert "errors" not in body, body
    session_id: str = body["data"]["createCheckoutSession"]["id"]
    return session_id


async def drained(pg: asyncpg.Connection) -> bool:
    pending = await pg.fetchval("SELECT count(*) FROM stripe_events WHERE status = 'pending'")
    jobs = await pg.fetchval("SELECT count(*) FROM sync_jobs")
    return bool(pending == 0 and jobs == 0)


async def exactly_once_problems(
    pg: asyncpg.Connection,
    fake: FakeStripe,
    expected: dict[str, Expected],
    deleted_users: set[str],
    edits: Counter[str],
) -> list[str]:
    """Everything that shows an item handled other than exactly once (empty when all is well)."""
    problems: list[str] = []
    rows = {
        row["id"]: row
        for row in await pg.fetch(
            "SELECT id, status, attempts, last_error, processings, processed_at FROM stripe_events"
        )
    }
    for event_id in sorted(set(rows) ^ set(expected)):
        problems.append(f"{event_id}: {'not recorded' if event_id in expected else 'unexpected'}")
    for event_id, want in expected.items():
        row = rows.get(event_id)
        if row is not None and (row["status"], row["attempts"], row["processings"]) != (
            want.status,
            1,
            1,
        ):
            problems.append(
                f"{event_id}: {row['status']} after {row['attempts']} attempt(s), finished "
                f"{row['processings']} time(s), expected {want.status} after 1, once "
                f"({row['last_error']})"
            )

    # One Stripe read of each kind per processing of a customer's events: a second
    # processing reads again.
    lists = Counter(
        str(r.params.get("customer")) for r in fake.requests_to("GET", "/v1/subscriptions")
    )
    retrieves = Counter(
        r.path.removeprefix("/v1/customers/") for r in fake.requests_to("GET", "/v1/customers/")
    )
    for kind, made in (("subscriptions", lists), ("customer", retrieves)):
        processings = {
            (str(e.customer), rows[i]["processed_at"])
            for i, e in expected.items()
            if e.reads == kind and i in rows
        }
        wanted = Counter(customer for customer, _ in processings)
        for customer in sorted(set(made) | set(wanted)):
            if made[customer] != wanted[customer]:
                events = sorted(
                    i for i, e in expected.items() if e.customer == customer and e.reads == kind
                )
                problems.append(
                    f"customer {customer}: {made[customer]} {kind} read(s) from Stripe for "
                    f"{wanted[customer]} processing(s) of event(s) {events}"
                )

    notified = Counter(
        row["user_id"]
        for row in await pg.fetch(
            "SELECT user_id FROM notifications WHERE kind = 'customer_deleted'"
        )
    )
    for user in sorted(set(notified) | deleted_users):
        if notified[user] != (1 if user in deleted_users else 0):
            problems.append(f"{user}: {notified[user]} customer_deleted notification(s)")

    # A profile push carries the job's id and version as its idempotency key: one push per
    # version, and no more pushes than edits.
    pushes = [r for r in fake.requests_to("POST", "/v1/customers/") if r.status == 200]
    for key, count in Counter(p.idempotency_key for p in pushes).items():
        if count > 1:
            problems.append(f"profile push {key} sent {count} times")
    owners = dict(await pg.fetch("SELECT stripe_customer_id, user_id FROM customers"))
    per_user = Counter(owners.get(p.path.removeprefix("/v1/customers/"), "?") for p in pushes)
    for user, count in per_user.items():
        if count > edits[user]:
            problems.append(f"{user}: {count} profile pushes for {edits[user]} edit(s)")
    return problems


async def test_two_servers_apply_every_event_and_job_exactly_once(
    servers: Farm,
    database_url: str,
    fake_stripe: FakeStripe,
    stripe_settings: dict[str, Any],
    pg: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    a, b = await servers.start(
        server_env(database_url, stripe_settings, str(tmp_path), STRIPE_SECRET_KEY=KEY_A),
        server_env(database_url, stripe_settings, str(tmp_path), STRIPE_SECRET_KEY=KEY_B),
    )
    rng = random.Random(20240611)
    async with clients(a, b) as (client_a, client_b):
        both = (client_a, client_b)
        # Paying users, and users whose Stripe customer is deleted in the Dashboard.
        paying = [f"pay-{n}" for n in range(6)]
        doomed = [f"gone-{n}" for n in range(10)]
        sessions = await asyncio.gather(
            *(checkout(both[n % 2], user) for n, user in enumerate(paying + doomed))
        )
        session_of = dict(zip(paying + doomed, sessions, strict=True))
        customer_of: dict[str, str] = dict(
            await pg.fetch("SELECT user_id, stripe_customer_id FROM customers")
        )
        subscription_of = {
            user: fake_stripe.complete_checkout(session_of[user])["id"] for user in paying
        }
        fake_stripe.set_subscription_status(subscription_of["pay-1"], "past_due")
        fake_stripe.set_subscription_status(
            subscription_of["pay-2"], "active", cancel_at_period_end=True
        )
        fake_stripe.set_subscription_status(subscription_of["pay-3"], "canceled")
        for user in doomed:
            fake_stripe.delete_customer_directly(customer_of[user])

        events: list[dict[str, Any]] = []
        expected: dict[str, Expected] = {}

        def add(
            event: dict[str, Any], status: str, customer: str | None, reads: str | None
        ) -> None:
            events.append(event)
            expected[event["id"]] = Expected(status, customer, reads)

        for user in paying:
            customer = customer_of[user]
            subscription = fake_stripe.subscriptions[subscription_of[user]]
            session = fake_stripe.checkout_sessions[session_of[user]]
            invoice = {"id": f"in_{user}", "object": "invoice", "customer": customer}
            for event_type, obj in (
                ("checkout.session.completed", session),
                ("customer.subscription.created", subscription),
                ("customer.subscription.updated", subscription),
                ("invoice.paid", invoice),
            ):
                add(fake_stripe.event(event_type, obj), "processed", customer, "subscriptions")
            add(
                fake_stripe.event("customer.updated", fake_stripe.customers[customer]),
                "processed",
                customer,
                "customer",
            )
        for user in doomed:
            gone = {"id": customer_of[user], "object": "customer", "deleted": True}
            add(fake_stripe.event("customer.deleted", gone), "processed", customer_of[user], None)
        for n in range(5):
            add(fake_stripe.event("product.created", {"id": f"prod_{n}"}), "ignored", None, None)
            stranger = {"id": f"cus_stranger{n}", "object": "customer"}
            add(fake_stripe.event("customer.updated", stranger), "ignored", None, None)

        deliveries = [json.dumps(event).encode() for event in events]
        deliveries += rng.sample(deliveries, len(deliveries) // 2)  # duplicates …
        deliveries += rng.sample(deliveries, 10)  # … some of them three times
        rng.shuffle(deliveries)

        # Every edit is one enqueue; the last one is what Stripe must end up with.
        edits: Counter[str] = Counter()
        final_profile: dict[str, tuple[str, str, str]] = {}

        async def edit_profile(n: int, user: str) -> None:
            for version in range(3):
                profile = (f"First{n}v{version}", f"Last{n}", f"+44 20 7946 09{n}{version}")
                body = await gql(
                    both[(n + version) % 2],
                    UPDATE,
                    {"input": dict(zip(("firstName", "lastName", "phone"), profile, strict=True))},
                    token=make_token(user),
                )
                assert "errors" not in body, body
                edits[user] += 1
                final_profile[user] = profile

        statuses: list[int] = []
        gate = asyncio.Semaphore(8)

        async def send(n: int, body: bytes) -> None:
            async with gate:
                statuses.append((await deliver(both[n % 2], body)).status_code)

        await eventually(lambda: drained(pg), "set-up work done")
        fake_stripe.reset_requests()
        await asyncio.gather(
            *(send(n, body) for n, body in enumerate(deliveries)),
            *(edit_profile(n, user) for n, user in enumerate(paying)),
        )
        assert statuses == [200] * len(deliveries)
        await eventually(lambda: drained(pg), "all events processed and jobs done", timeout=30)

        problems = await exactly_once_problems(pg, fake_stripe, expected, set(doomed), edits)
        assert problems == []
        assert "Traceback" not in a.log() + b.log()

        # Both processes did part of the work (each uses its own Stripe key).
        worker_calls = fake_stripe.requests_to(
            "GET", "/v1/subscriptions"
        ) + fake_stripe.requests_to("POST", "/v1/customers/")
        assert {call.api_key for call in worker_calls} == {KEY_A, KEY_B}

        # The result: our copy agrees with Stripe.
        for user in paying:
            subscription = fake_stripe.subscriptions[subscription_of[user]]
            row = await pg.fetchrow(
                "SELECT plan_id, status, stripe_subscription_id, cancel_at_period_end "
                "FROM subscriptions WHERE user_id = $1 AND stripe_subscription_id IS NOT NULL",
                user,
            )
            assert tuple(row) == (
                "PRO",
                subscription["status"],
                subscription["id"],
                subscription["cancel_at_period_end"],
            ), user
            first, last, phone = final_profile[user]
            e164 = phone.replace(" ", "")
            assert tuple(
                await pg.fetchrow(
                    "SELECT first_name, last_name, phone FROM users WHERE id = $1", user
                )
            ) == (first, last, e164)
            stripe_customer = fake_stripe.customers[customer_of[user]]
            assert (stripe_customer["name"], stripe_customer["phone"]) == (f"{first} {last}", e164)
        for user in doomed:
            assert await pg.fetchval("SELECT count(*) FROM customers WHERE user_id = $1", user) == 0
            assert (
                await pg.fetchval("SELECT status FROM subscriptions WHERE user_id = $1", user)
                == "canceled"
            )

        # The check catches a second processing: re-run finished items as a second worker
        # would (attempts reset, so only their side effects can tell).
        again = {
            "customer.subscription.updated": next(
                e["id"] for e in events if e["type"] == "customer.subscription.updated"
            ),
            "customer.updated": next(i for i, e in expected.items() if e.reads == "customer"),
            "customer.deleted": next(e["id"] for e in events if e["type"] == "customer.deleted"),
        }
        await pg.execute(
            "UPDATE stripe_events SET status = 'pending', attempts = 0, next_attempt_at = now() "
            "WHERE id = ANY($1::text[])",
            list(again.values()),
        )
        push = fake_stripe.requests_to("POST", "/v1/customers/")[-1]
        assert push.idempotency_key is not None
        job_id, version, _ = push.idempotency_key.removeprefix(PUSH_KEY_PREFIX).split(":")
        await pg.execute(
            "INSERT INTO sync_jobs (id, user_id, kind, version, fields) OVERRIDING SYSTEM VALUE "
            "SELECT $1, user_id, 'profile_sync', $2, '{first_name,last_name,phone}' "
            "FROM customers WHERE stripe_customer_id = $3",
            int(job_id),
            int(version),
            push.path.removeprefix("/v1/customers/"),
        )
        await eventually(lambda: drained(pg), "re-run items done")
        caught = "\n".join(
            await exactly_once_problems(pg, fake_stripe, expected, set(doomed), edits)
        )
        for event_type, event_id in again.items():
            assert event_id in caught, (event_type, caught)
        assert f"profile push {push.idempotency_key} sent 2 times" in caught
