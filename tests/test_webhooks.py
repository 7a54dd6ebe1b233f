"""Stripe webhooks: signed exactly as Stripe signs them, recorded durably, applied once, in any order."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from app.runtime import Runtime
from app.settings import Settings
from app.worker import Worker
from tests.helpers import gql, post_webhook
from tests.servers import eventually
from tests.support.stripe import FakeStripe, sign

SECRET = "whsec_test_current"
OLD_SECRET = "whsec_test_previous"
CHECKOUT = "mutation { createCheckoutSession { id url } }"
SUBSCRIPTION = "{ me { subscription { planId status stripeSubscriptionId priceId cancelAtPeriodEnd currentPeriodEnd } } }"


@pytest.fixture
def settings_overrides(stripe_settings: dict[str, Any]) -> dict[str, Any]:
    return {**stripe_settings, "stripe_webhook_secret": SECRET}


async def deliver(
    client: httpx.AsyncClient,
    event: dict[str, Any] | bytes,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    header: str | None = None,
) -> httpx.Response:
    return await post_webhook(client, event, secret, timestamp=timestamp, header=header)


async def stored(pg: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pg.fetch(
        "SELECT id, type, status, attempts, last_error FROM stripe_events ORDER BY received_at"
    )
    return rows


async def subscribed_user(
    client: httpx.AsyncClient, token: Callable[..., str], fake: FakeStripe, user: str = "u1"
) -> tuple[str, dict[str, Any], str]:
    """A user who went through Checkout and paid: (bearer, subscription in the fake, customer)."""
    bearer = token(user)
    body = await gql(client, CHECKOUT, token=bearer)
    session_id = body["data"]["createCheckoutSession"]["id"]
    subscription = fake.complete_checkout(session_id)
    return bearer, subscription, subscription["customer"]


# --- verification ----------------------------------------------------------------------------


async def test_a_signed_event_is_recorded_and_acknowledged(
    client: httpx.AsyncClient, fake_stripe: FakeStripe, pg: asyncpg.Connection
) -> None:
    event = fake_stripe.event("product.created", {"id": "prod_1", "object": "product"})
    response = await deliver(client, event)
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}
    assert [(r["id"], r["status"]) for r in await stored(pg)] == [(event["id"], "pending")]


@pytest.mark.parametrize(
    "header",
    ["", "t=1,v1=abc", "garbage", "v1=deadbeef"],
)
async def test_a_missing_or_bad_signature_is_400_and_records_nothing(
    client: httpx.AsyncClient, fake_stripe: FakeStripe, pg: asyncpg.Connection, header: str
) -> None:
    event = fake_stripe.event("customer.updated", {"id": "cus_1", "object": "customer"})
    response = await deliver(client, event, header=header)
    assert response.status_code == 400
    assert await stored(pg) == []


async def test_a_signature_with_another_secret_is_400(
    client: httpx.AsyncClient, fake_stripe: FakeStripe, pg: asyncpg.Connection
) -> None:
    event = fake_stripe.event("customer.updated", {"id": "cus_1", "object": "customer"})
    assert (await deliver(client, event, secret="whsec_someone_else")).status_code == 400
    assert await stored(pg) == []


async def test_one_valid_among_two_v1_signatures_is_accepted(
    client: httpx.AsyncClient, fake_stripe: FakeStripe
) -> None:
    event = fake_stripe.event("product.created", {"id": "prod_1", "object": "product"})
    payload = json.dumps(event).encode()
    header = sign(payload, "whsec_unrelated", extra_secrets=[SECRET])
    assert header.count("v1=") == 2
    assert (await deliver(client, payload, header=header)).status_code == 200


class TestSecretRotation:
    @pytest.fixture
    def settings_overrides(self, stripe_settings: dict[str, Any]) -> dict[str, Any]:
        return {**stripe_settings, "stripe_webhook_secret": f"{SECRET}, {OLD_SECRET}"}

    async def test_events_signed_with_either_secret_are_accepted(
        self, client: httpx.AsyncClient, fake_stripe: FakeStripe
    ) -> None:
        for secret in (SECRET, OLD_SECRET):
            event = fake_stripe.event("product.created", {"id": "prod_1", "object": "product"})
            assert (await deliver(client, event, secret=secret)).status_code == 200


@pytest.mark.parametrize("skew", [-301, 301])
async def test_stale_and_future_timestamps_are_400(
    client: httpx.AsyncClient, fake_stripe: FakeStripe, pg: asyncpg.Connection, skew: int
) -> None:
    event = fake_stripe.event("product.created", {"id": "prod_1", "object": "product"})
    response = await deliver(client, event, timestamp=int(time.time()) + skew)
    assert response.status_code == 400
    assert await stored(pg) == []


async def test_timestamps_within_five_minutes_are_accepted(
    client: httpx.AsyncClient, fake_stripe: FakeStripe
) -> None:
    for skew in (-280, 280):
        event = fake_stripe.event("product.created", {"id": "prod_1", "object": "product"})
        assert (await deliver(client, event, timestamp=int(time.time()) + skew)).status_code == 200


async def test_a_tampered_body_is_400(
    client: httpx.AsyncClient, fake_stripe: FakeStripe, pg: asyncpg.Connection
) -> None:
    event = fake_stripe.event(
        "customer.updated", {"id": "cus_1", "object": "customer", "name": "A"}
    )
    payload = json.dumps(event).encode()
    header = sign(payload, SECRET)
    tampered = payload.replace(b'"A"', b'"B"')
    assert (await deliver(client, tampered, header=header)).status_code == 400
    assert await stored(pg) == []


async def test_a_reserialised_body_is_400(
    client: httpx.AsyncClient, fake_stripe: FakeStripe
) -> None:
    """A proxy that re-encodes the JSON breaks the signature, as it would with Stripe."""
    event = fake_stripe.event("product.created", {"id": "prod_1", "object": "product"})
    payload = json.dumps(event, indent=2).encode()
    header = sign(payload, SECRET)
    reserialised = json.dumps(json.loads(payload), separators=(",", ":")).encode()
    assert (await deliver(client, reserialised, header=header)).status_code == 400


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[1, 2]",
        b'{"id": "x", "type": "t"}',
        b'{"id": "evt_1", "type": "t", "created": 1, "data": {}}',
    ],
)
async def test_a_signed_body_that_is_not_an_event_is_400(
    client: httpx.AsyncClient, pg: asyncpg.Connection, payload: bytes
) -> None:
    assert (await deliver(client, payload)).status_code == 400
    assert await stored(pg) == []


async def test_a_body_over_512_kb_is_413(client: httpx.AsyncClient, pg: asyncpg.Connection) -> None:
    payload = b'{"padding": "' + b"x" * (512 * 1024) + b'"}'
    assert (await deliver(client, payload)).status_code == 413
    assert await stored(pg) == []


class TestWithoutWebhookSecret:
    @pytest.fixture
    def settings_overrides(self, stripe_settings: dict[str, Any]) -> dict[str, Any]:
        return {**stripe_settings, "stripe_webhook_secret": None}

    async def test_the_route_answers_503_and_records_nothing(
        self, client: httpx.AsyncClient, fake_stripe: FakeStripe, pg: asyncpg.Connection
    ) -> None:
        event = fake_stripe.event("product.created", {"id": "prod_1", "object": "product"})
        assert (await deliver(client, event)).status_code == 503
        assert await stored(pg) == []


async def test_an_event_that_cannot_be_recorded_is_not_acknowledged(
    client: httpx.AsyncClient, fake_stripe: FakeStripe, pg: asyncpg.Connection
) -> None:
    await pg.execute("ALTER TABLE stripe_events RENAME TO stripe_events_away")
    event = fake_stripe.event("product.created", {"id": "prod_1", "object": "product"})
    response = await deliver(client, event)
    assert response.status_code == 503
    await pg.execute("ALTER TABLE stripe_events_away RENAME TO stripe_events")
    assert (await deliver(client, event)).status_code == 200
    assert len(await stored(pg)) == 1


# --- idempotency -----------------------------------------------------------------------------


async def test_a_duplicate_delivery_is_acknowledged_and_changes_nothing(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    bearer, _, customer_id = await subscribed_user(client, token, fake_stripe)
    fake_stripe.delete_customer_directly(customer_id)
    event = fake_stripe.event(
        "customer.deleted", {"id": customer_id, "object": "customer", "deleted": True}
    )
    first = await deliver(client, event)
    await runtime.worker.drain()
    again = await deliver(client, event)
    await runtime.worker.drain()
    assert first.json() == {"received": True, "duplicate": False}
    assert again.json() == {"received": True, "duplicate": True}
    assert len(await stored(pg)) == 1
    me = await gql(client, "{ me { notifications { kind } } }", token=bearer)
    assert me["data"]["me"]["notifications"] == [{"kind": "customer_deleted"}]


async def test_concurrent_duplicate_deliveries_record_one_event(
    client: httpx.AsyncClient, fake_stripe: FakeStripe, pg: asyncpg.Connection
) -> None:
    event = fake_stripe.event("product.created", {"id": "prod_1", "object": "product"})
    responses = await asyncio.gather(*(deliver(client, event) for _ in range(10)))
    assert {r.status_code for r in responses} == {200}
    assert sum(not r.json()["duplicate"] for r in responses) == 1
    assert len(await stored(pg)) == 1


async def test_an_unhandled_type_is_recorded_and_ignored(
    client: httpx.AsyncClient, fake_stripe: FakeStripe, runtime: Runtime, pg: asyncpg.Connection
) -> None:
    event = fake_stripe.event(
        "charge.refunded", {"id": "ch_1", "object": "charge", "customer": "cus_x"}
    )
    assert (await deliver(client, event)).status_code == 200
    await runtime.worker.drain()
    assert [r["status"] for r in await stored(pg)] == ["ignored"]


# --- subscription state ----------------------------------------------------------------------


async def test_checkout_completion_makes_the_user_pro(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pro_price: str,
) -> None:
    bearer, subscription, _customer_id = await subscribed_user(client, token, fake_stripe)
    session = next(iter(fake_stripe.checkout_sessions.values()))
    await deliver(client, fake_stripe.event("checkout.session.completed", session))
    await deliver(client, fake_stripe.event("customer.subscription.created", subscription))
    assert await runtime.worker.drain() == 2
    me = await gql(client, SUBSCRIPTION, token=bearer)
    period_end = subscription["items"]["data"][0]["current_period_end"]
    assert me["data"]["me"]["subscription"] == {
        "planId": "PRO",
        "status": "ACTIVE",
        "stripeSubscriptionId": subscription["id"],
        "priceId": pro_price,
        "cancelAtPeriodEnd": False,
        "currentPeriodEnd": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(period_end)),
    }


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("customer.subscription.paused", "paused"),
        ("customer.subscription.resumed", "active"),
        ("invoice.payment_failed", "past_due"),
        ("invoice.paid", "active"),
        ("customer.subscription.updated", "unpaid"),
    ],
)
async def test_each_subscription_event_writes_the_current_state(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    event_type: str,
    status: str,
) -> None:
    bearer, subscription, customer_id = await subscribed_user(client, token, fake_stripe)
    updated = fake_stripe.set_subscription_status(subscription["id"], status)
    obj = (
        updated
        if not event_type.startswith("invoice")
        else {"id": "in_1", "object": "invoice", "customer": customer_id}
    )
    await deliver(client, fake_stripe.event(event_type, obj))
    await runtime.worker.drain()
    me = await gql(client, SUBSCRIPTION, token=bearer)
    assert me["data"]["me"]["subscription"]["status"] == status.upper()
    # The paid subscription's state, not the free row checkout left (ACTIVE too).
    assert me["data"]["me"]["subscription"]["planId"] == "PRO"
    assert me["data"]["me"]["subscription"]["stripeSubscriptionId"] == subscription["id"]


async def test_updated_before_created_ends_in_the_latest_state(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer, subscription, _ = await subscribed_user(client, token, fake_stripe)
    created = fake_stripe.event(
        "customer.subscription.created", subscription, created=int(time.time()) - 10
    )
    updated_sub = fake_stripe.set_subscription_status(
        subscription["id"], "active", cancel_at_period_end=True
    )
    updated = fake_stripe.event("customer.subscription.updated", updated_sub)
    await deliver(client, updated)
    await runtime.worker.drain()
    await deliver(client, created)
    await runtime.worker.drain()
    me = await gql(client, SUBSCRIPTION, token=bearer)
    assert me["data"]["me"]["subscription"]["cancelAtPeriodEnd"] is True


async def test_a_late_updated_after_deleted_does_not_revive_the_subscription(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer, subscription, _ = await subscribed_user(client, token, fake_stripe)
    stale_update = fake_stripe.event(
        "customer.subscription.updated", subscription, created=int(time.time()) - 30
    )
    canceled = fake_stripe.set_subscription_status(subscription["id"], "canceled")
    await deliver(client, fake_stripe.event("customer.subscription.deleted", canceled))
    await runtime.worker.drain()
    await deliver(client, stale_update)
    await runtime.worker.drain()
    me = await gql(client, SUBSCRIPTION, token=bearer)
    assert me["data"]["me"]["subscription"]["status"] == "CANCELED"


async def test_an_event_before_the_link_exists_links_through_our_metadata(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
    pro_price: str,
) -> None:
    """Checkout finished in Stripe but our link was lost (e.g. a rolled-back request)."""
    bearer = token("u1")
    await gql(client, "{ me { id } }", token=bearer)
    customer = fake_stripe.add_customer(email="u1@example.com", metadata={"userId": "u1"})
    subscription = fake_stripe.create_subscription(
        customer["id"], pro_price, metadata={"userId": "u1"}
    )
    await deliver(client, fake_stripe.event("customer.subscription.created", subscription))
    await runtime.worker.drain()
    me = await gql(
        client, "{ me { customer { id } subscription { planId status } } }", token=bearer
    )
    assert me["data"]["me"] == {
        "customer": {"id": customer["id"]},
        "subscription": {"planId": "PRO", "status": "ACTIVE"},
    }


async def test_a_strangers_events_are_ignored_at_once_not_retried(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
    pro_price: str,
) -> None:
    """A customer created outside the app (a Payment Link, the Dashboard): no link, no
    session of ours, no `metadata.userId`. Once Stripe confirms that, its events are
    ignored with the reason, not retried 15 times into `failed`."""
    customer = fake_stripe.add_customer(email="late@example.com")
    subscription = fake_stripe.create_subscription(customer["id"], pro_price)
    await deliver(client, fake_stripe.event("customer.subscription.created", subscription))
    invoice = fake_stripe.invoices[subscription["latest_invoice"]]
    await deliver(client, fake_stripe.event("invoice.paid", invoice))
    assert await runtime.worker.drain() == 2
    rows = await stored(pg)
    assert [(r["status"], r["attempts"]) for r in rows] == [("ignored", 1), ("ignored", 1)]
    assert {r["last_error"] for r in rows} == {"a customer this service did not create or link"}
    assert await pg.fetchval("SELECT count(*) FROM customers") == 0


async def test_a_database_failure_mid_processing_is_retried(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    bearer, subscription, _ = await subscribed_user(client, token, fake_stripe)
    await pg.execute("ALTER TABLE subscriptions RENAME TO subscriptions_away")
    response = await deliver(
        client, fake_stripe.event("customer.subscription.created", subscription)
    )
    assert response.status_code == 200
    await runtime.worker.drain()
    [row] = await stored(pg)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    await pg.execute("ALTER TABLE subscriptions_away RENAME TO subscriptions")
    await pg.execute("UPDATE stripe_events SET next_attempt_at = now()")
    await runtime.worker.drain()
    assert [r["status"] for r in await stored(pg)] == ["processed"]
    me = await gql(client, SUBSCRIPTION, token=bearer)
    assert me["data"]["me"]["subscription"]["planId"] == "PRO"


async def test_a_stripe_outage_during_processing_is_retried(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    _, subscription, _ = await subscribed_user(client, token, fake_stripe)
    await deliver(client, fake_stripe.event("customer.subscription.created", subscription))
    fake_stripe.down = True
    await runtime.worker.drain()
    fake_stripe.down = False
    assert [r["status"] for r in await stored(pg)] == ["pending"]
    await pg.execute("UPDATE stripe_events SET next_attempt_at = now()")
    await runtime.worker.drain()
    assert [r["status"] for r in await stored(pg)] == ["processed"]


# --- customers -------------------------------------------------------------------------------


async def test_customer_deleted_unlinks_cancels_and_notifies(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer, subscription, customer_id = await subscribed_user(client, token, fake_stripe)
    await deliver(client, fake_stripe.event("customer.subscription.created", subscription))
    await runtime.worker.drain()
    fake_stripe.delete_customer_directly(customer_id)
    await deliver(
        client,
        fake_stripe.event(
            "customer.deleted", {"id": customer_id, "object": "customer", "deleted": True}
        ),
    )
    await runtime.worker.drain()
    me = await gql(
        client,
        "{ me { customer { id } subscription { planId status } notifications { kind message } } }",
        token=bearer,
    )
    assert me["data"]["me"]["customer"] is None
    assert me["data"]["me"]["subscription"] == {"planId": "PRO", "status": "CANCELED"}
    [notification] = me["data"]["me"]["notifications"]
    assert notification["kind"] == "customer_deleted"
    assert "subscription has ended" in notification["message"]


async def test_a_checkout_after_a_deleted_customer_gets_a_new_one_and_one_notice(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    """Deleted in the Dashboard and unlinked by its `customer.deleted`; the user checks out
    again within Stripe's 24 hours of idempotency. The new customer is created by a new
    request: a replay of the first creation would hand back the deleted customer (and, once
    found gone, tell the user a second time)."""
    bearer, _, customer_id = await subscribed_user(client, token, fake_stripe)
    fake_stripe.delete_customer_directly(customer_id)
    gone = {"id": customer_id, "object": "customer", "deleted": True}
    await deliver(client, fake_stripe.event("customer.deleted", gone))
    await runtime.worker.drain()
    fake_stripe.reset_requests()

    again = await gql(client, CHECKOUT, token=bearer)
    assert "errors" not in again, again
    [created] = fake_stripe.requests_to("POST", "/v1/customers")
    assert not created.replayed
    me = await gql(client, "{ me { customer { id } notifications { kind } } }", token=bearer)
    assert me["data"]["me"]["customer"]["id"] not in (None, customer_id)
    assert me["data"]["me"]["notifications"] == [{"kind": "customer_deleted"}]
    assert fake_stripe.requests_to("POST", "/v1/checkout/sessions")[-1].status == 200


async def update_in_stripe(fake: FakeStripe, customer_id: str, **fields: str) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=fake.url, headers={"Authorization": "Bearer sk_test_fake"}
    ) as http:
        response = await http.post(f"/v1/customers/{customer_id}", data=fields)
        response.raise_for_status()
        customer: dict[str, Any] = response.json()
        return customer


async def test_customer_updated_in_the_portal_reaches_the_profile(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    bearer, _, customer_id = await subscribed_user(client, token, fake_stripe)
    customer = await update_in_stripe(
        fake_stripe,
        customer_id,
        name="Grace Brewster Hopper",
        phone="+1 415 555 0100",
        email="grace@example.com",
    )
    fake_stripe.reset_requests()
    await deliver(client, fake_stripe.event("customer.updated", customer))
    await runtime.worker.drain()
    me = await gql(
        client,
        "{ me { email firstName lastName phone customer { email name phone } } }",
        token=bearer,
    )
    assert me["data"]["me"] == {
        "email": "u1@example.com",  # the identity provider's, not Stripe's
        "firstName": "Grace",
        "lastName": "Brewster Hopper",
        "phone": "+14155550100",
        "customer": {
            "email": "grace@example.com",
            "name": "Grace Brewster Hopper",
            "phone": "+1 415 555 0100",
        },
    }
    # No echo: nothing is pushed back to Stripe, nothing is queued to be.
    assert fake_stripe.requests_to("POST", "/v1/customers") == []
    assert await pg.fetchval("SELECT count(*) FROM sync_jobs") == 0


async def test_a_stripe_change_older_than_the_users_own_edit_does_not_overwrite_it(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer, _, customer_id = await subscribed_user(client, token, fake_stripe)
    customer = await update_in_stripe(fake_stripe, customer_id, name="Old Name")
    event = fake_stripe.event("customer.updated", customer, created=int(time.time()) - 60)
    await gql(client, 'mutation { updateProfile(input: {firstName: "Mine"}) { id } }', token=bearer)
    await deliver(client, event)
    await runtime.worker.drain()
    me = await gql(client, "{ me { firstName } }", token=bearer)
    assert me["data"]["me"]["firstName"] == "Mine"


async def test_a_customer_we_never_linked_is_acknowledged_and_ignored(
    client: httpx.AsyncClient, fake_stripe: FakeStripe, runtime: Runtime, pg: asyncpg.Connection
) -> None:
    stranger = fake_stripe.add_customer(email="stranger@example.com")
    await deliver(client, fake_stripe.event("customer.updated", stranger))
    await runtime.worker.drain()
    assert [r["status"] for r in await stored(pg)] == ["ignored"]
    assert await pg.fetchval("SELECT count(*) FROM customers") == 0


async def test_two_workers_process_every_event_exactly_once(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    users = []
    for n in range(5):
        bearer, _, customer_id = await subscribed_user(client, token, fake_stripe, user=f"w{n}")
        fake_stripe.delete_customer_directly(customer_id)
        users.append(bearer)
        await deliver(
            client,
            fake_stripe.event(
                "customer.deleted", {"id": customer_id, "object": "customer", "deleted": True}
            ),
        )
    other = Worker(runtime.pool, runtime.stripe, runtime.plans)
    handled = await asyncio.gather(runtime.worker.drain(), other.drain())
    assert sum(handled) >= 5
    assert {r["status"] for r in await stored(pg)} == {"processed"}
    assert await pg.fetchval("SELECT count(*) FROM notifications") == 5


async def test_an_echo_of_an_older_push_does_not_undo_an_edit_still_waiting_to_be_pushed(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    bearer, _, customer_id = await subscribed_user(client, token, fake_stripe)
    await gql(
        client, 'mutation { updateProfile(input: {firstName: "First"}) { id } }', token=bearer
    )
    await runtime.worker.drain()  # "First" is pushed; Stripe will echo it
    echo = fake_stripe.event(
        "customer.updated", fake_stripe.customers[customer_id], created=int(time.time()) + 1
    )
    await gql(
        client, 'mutation { updateProfile(input: {firstName: "Second"}) { id } }', token=bearer
    )
    await deliver(client, echo)  # the echo is processed before "Second" is pushed
    [event] = [r for r in await stored(pg) if r["id"] == echo["id"]]
    while await runtime.worker.run_once():
        if (
            await pg.fetchval("SELECT status FROM stripe_events WHERE id = $1", echo["id"])
            != "pending"
        ):
            break
    me = await gql(client, "{ me { firstName } }", token=bearer)
    assert event["status"] == "pending"
    assert me["data"]["me"]["firstName"] == "Second"


# --- whatever Stripe signs is stored ---------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        # A NUL in a string: PostgreSQL's jsonb refuses it.
        b'{"id": "evt_nul", "object": "event", "type": "customer.updated", "created": 1700000000,'
        b' "data": {"object": {"id": "cus_1", "object": "customer", "name": "A\\u0000B"}}}',
        # A lone surrogate: not valid Unicode text anywhere but in JSON's escapes.
        b'{"id": "evt_surrogate", "object": "event", "type": "customer.updated",'
        b' "created": 1700000000, "data": {"object": {"id": "cus_1", "name": "\\ud800"}}}',
        # A byte-order mark before the JSON.
        b'\xef\xbb\xbf{"id": "evt_bom", "object": "event", "type": "product.created",'
        b' "created": 1700000000, "data": {"object": {"id": "prod_1"}}}',
        # A `created` that is no usable time, as a float and as an int.
        b'{"id": "evt_float", "object": "event", "type": "customer.updated", "created": 1e20,'
        b' "data": {"object": {"id": "cus_1", "object": "customer"}}}',
        b'{"id": "evt_huge", "object": "event", "type": "customer.updated",'
        b' "created": 100000000000000000000, "data": {"object": {"id": "cus_1"}}}',
    ],
    ids=["nul", "lone-surrogate", "bom", "created-float", "created-huge"],
)
async def test_any_signed_event_is_stored_byte_for_byte_then_finished(
    client: httpx.AsyncClient, runtime: Runtime, pg: asyncpg.Connection, body: bytes
) -> None:
    response = await deliver(client, body)
    assert response.status_code == 200, response.text
    assert (await deliver(client, body)).json() == {"received": True, "duplicate": True}
    assert await pg.fetchval("SELECT payload FROM stripe_events") == body
    await runtime.worker.drain()
    status, reason = await pg.fetchrow("SELECT status, last_error FROM stripe_events")
    assert status == "ignored", reason  # none of them is about a customer of ours


@pytest.mark.parametrize(
    "timestamp",
    ["9" * 5000, "²", "1e3", "-5", " "],
    ids=["5000-digits", "superscript-two", "exponent", "negative", "blank"],
)
async def test_a_malformed_signature_timestamp_is_400(
    client: httpx.AsyncClient, fake_stripe: FakeStripe, pg: asyncpg.Connection, timestamp: str
) -> None:
    event = fake_stripe.event("product.created", {"id": "prod_1", "object": "product"})
    response = await client.post(
        "/webhooks/stripe",
        content=json.dumps(event).encode(),
        headers={b"Stripe-Signature": f"t={timestamp},v1={'0' * 64}".encode("latin-1")},
    )
    assert response.status_code == 400
    assert await stored(pg) == []


async def test_a_worker_in_another_process_is_woken_by_the_database(
    settings: Settings, fake_stripe: FakeStripe, pg: asyncpg.Connection
) -> None:
    """The process that records an event runs no worker; the one that does polls only
    once a minute, and still processes it at once: NOTIFY at the insert's commit, LISTEN in
    every worker process."""
    receiver = create_app(settings.model_copy(update={"run_worker": False}))
    worker = create_app(
        settings.model_copy(update={"run_worker": True, "worker_poll_seconds": 60.0})
    )
    async with LifespanManager(receiver) as a, LifespanManager(worker):
        await asyncio.sleep(0.5)  # the worker's first poll is behind it, its listener up
        transport = httpx.ASGITransport(app=a.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            event = fake_stripe.event("product.created", {"id": "prod_1", "object": "product"})
            assert (await deliver(client, event)).status_code == 200

        async def finished() -> bool:
            return bool(await pg.fetchval("SELECT status <> 'pending' FROM stripe_events"))

        await eventually(finished, "the event processed by the other process", timeout=5)
