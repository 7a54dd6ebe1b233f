"""Profile edits: saved at once, pushed to Stripe by a durable job that survives restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.cli import main
from app.main import create_app
from app.runtime import Runtime
from app.settings import Settings
from tests.helpers import error_codes, gql
from tests.support.stripe import FakeStripe, sign

UPDATE = "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { firstName lastName phone } }"
CHECKOUT = "mutation { createCheckoutSession { id } }"


@pytest.fixture
def settings_overrides(stripe_settings: dict[str, Any]) -> dict[str, Any]:
    return {**stripe_settings, "stripe_webhook_secret": "whsec_profile"}


async def customer_of(pg: asyncpg.Connection, user: str = "u1") -> str:
    customer: str = await pg.fetchval(
        "SELECT stripe_customer_id FROM customers WHERE user_id = $1", user
    )
    return customer


async def linked_user(client: httpx.AsyncClient, token: Callable[..., str], **claims: Any) -> str:
    bearer = token("u1", **claims)
    assert "errors" not in await gql(client, CHECKOUT, token=bearer)
    return bearer


async def test_a_profile_update_is_saved_and_returned_at_once(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    bearer = token("u1")
    body = await gql(
        client,
        UPDATE,
        {"input": {"firstName": "  Ada ", "lastName": "Lovelace", "phone": "+44 20 7946 0958"}},
        token=bearer,
    )
    assert body == {
        "data": {
            "updateProfile": {"firstName": "Ada", "lastName": "Lovelace", "phone": "+442079460958"}
        }
    }
    assert await pg.fetchval("SELECT count(*) FROM sync_jobs WHERE user_id = 'u1'") == 1


async def test_an_omitted_field_stays_and_null_clears(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    bearer = token("u1")
    await gql(
        client,
        UPDATE,
        {"input": {"firstName": "Ada", "lastName": "Lovelace", "phone": "+14155550100"}},
        token=bearer,
    )
    body = await gql(client, UPDATE, {"input": {"lastName": None}}, token=bearer)
    assert body["data"]["updateProfile"] == {
        "firstName": "Ada",
        "lastName": None,
        "phone": "+14155550100",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("firstName", "x" * 101),
        ("lastName", "Bad\x00Name"),
        ("firstName", "Tab\tbed"),
        ("lastName", "Zero\u200bWidth"),
        ("phone", "12345"),
        ("phone", "call me"),
    ],
)
async def test_invalid_input_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    pg: asyncpg.Connection,
    field: str,
    value: str,
) -> None:
    bearer = token("u1")
    await gql(client, UPDATE, {"input": {"firstName": "Ada"}}, token=bearer)
    await pg.execute("DELETE FROM sync_jobs")
    body = await gql(
        client, UPDATE, {"input": {"firstName": "Changed", field: value}}, token=bearer
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == field
    assert await pg.fetchval("SELECT first_name FROM users WHERE id = 'u1'") == "Ada"
    assert await pg.fetchval("SELECT count(*) FROM sync_jobs") == 0


async def test_a_hundred_character_name_is_fine(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    body = await gql(client, UPDATE, {"input": {"firstName": "é" * 100}}, token=token())
    assert body["data"]["updateProfile"]["firstName"] == "é" * 100


async def test_updating_the_profile_needs_a_token(client: httpx.AsyncClient) -> None:
    assert error_codes(await gql(client, UPDATE, {"input": {"firstName": "A"}})) == [
        "UNAUTHENTICATED"
    ]


async def test_the_job_pushes_name_and_phone_to_the_stripe_customer(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    bearer = await linked_user(client, token)
    await gql(
        client,
        UPDATE,
        {"input": {"firstName": "Ada", "lastName": "Lovelace", "phone": "+14155550100"}},
        token=bearer,
    )
    fake_stripe.reset_requests()
    assert await runtime.worker.drain() == 1
    customer_id = await customer_of(pg)
    [push] = fake_stripe.requests_to("POST", "/v1/customers")
    assert push.path == f"/v1/customers/{customer_id}"
    # Only what the edit changed: the billing email is the customer's own.
    assert push.params == {"name": "Ada Lovelace", "phone": "+14155550100"}
    assert fake_stripe.customers[customer_id]["name"] == "Ada Lovelace"
    assert await pg.fetchval("SELECT count(*) FROM sync_jobs") == 0
    me = await gql(client, "{ me { customer { name phone } } }", token=bearer)
    assert me["data"]["me"]["customer"] == {"name": "Ada Lovelace", "phone": "+14155550100"}


async def test_repeated_updates_coalesce_into_one_push_of_the_latest(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    bearer = await linked_user(client, token)
    for name in ("A", "B", "C"):
        await gql(client, UPDATE, {"input": {"firstName": name}}, token=bearer)
    assert await pg.fetchval("SELECT count(*) FROM sync_jobs") == 1
    fake_stripe.reset_requests()
    await runtime.worker.drain()
    [push] = fake_stripe.requests_to("POST", "/v1/customers")
    assert push.params["name"] == "C"


async def test_an_edit_made_while_a_push_fails_is_pushed_later(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    bearer = await linked_user(client, token)
    await gql(client, UPDATE, {"input": {"firstName": "First"}}, token=bearer)
    fake_stripe.down = True
    await runtime.worker.drain()
    [job] = await pg.fetch(
        "SELECT attempts, last_error, next_attempt_at > now() AS later FROM sync_jobs"
    )
    assert job["attempts"] == 1
    assert job["later"] is True
    assert "PaymentProviderError" in job["last_error"]

    await gql(client, UPDATE, {"input": {"firstName": "Second"}}, token=bearer)
    fake_stripe.down = False
    await runtime.worker.drain()
    assert fake_stripe.customers[await customer_of(pg)]["name"] == "Second"
    assert await pg.fetchval("SELECT count(*) FROM sync_jobs") == 0


async def test_a_pending_push_survives_a_restart_and_lands_when_stripe_is_back(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    settings: Settings,
    pg: asyncpg.Connection,
) -> None:
    bearer = await linked_user(client, token)
    fake_stripe.down = True
    await gql(client, UPDATE, {"input": {"firstName": "Durable"}}, token=bearer)
    for _ in range(3):  # Stripe stays down through several attempts
        await runtime.worker.drain()
        await pg.execute("UPDATE sync_jobs SET next_attempt_at = now()")
    assert await pg.fetchval("SELECT attempts FROM sync_jobs") == 3

    # A new server process: nothing in memory survives, the job in PostgreSQL does.
    fake_stripe.down = False
    restarted = settings.model_copy(update={"run_worker": True, "worker_poll_seconds": 0.05})
    async with LifespanManager(create_app(restarted)):
        for _ in range(100):
            if await pg.fetchval("SELECT count(*) FROM sync_jobs") == 0:
                break
            await asyncio.sleep(0.05)
    assert fake_stripe.customers[await customer_of(pg)]["name"] == "Durable"
    assert await pg.fetchval("SELECT count(*) FROM sync_jobs") == 0


async def test_backoff_never_waits_longer_than_a_minute(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    """So an edit made during a long Stripe outage lands within a minute of its end."""
    bearer = await linked_user(client, token)
    fake_stripe.down = True
    await gql(client, UPDATE, {"input": {"firstName": "Patient"}}, token=bearer)
    await pg.execute("UPDATE sync_jobs SET attempts = 30")
    await runtime.worker.drain()
    wait = await pg.fetchval("SELECT extract(epoch FROM next_attempt_at - now()) FROM sync_jobs")
    assert 0 < wait <= 60


async def test_our_own_push_coming_back_as_a_webhook_is_not_pushed_again(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    bearer = await linked_user(client, token)
    await gql(client, UPDATE, {"input": {"firstName": "Echo", "lastName": "Test"}}, token=bearer)
    await runtime.worker.drain()
    customer = fake_stripe.customers[await customer_of(pg)]
    event = fake_stripe.event("customer.updated", customer)
    payload = json.dumps(event).encode()
    fake_stripe.reset_requests()
    response = await client.post(
        "/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": sign(payload, "whsec_profile")},
    )
    assert response.status_code == 200
    await runtime.worker.drain()
    assert fake_stripe.requests_to("POST", "/v1/customers") == []
    assert await pg.fetchval("SELECT count(*) FROM sync_jobs") == 0
    me = await gql(client, "{ me { firstName lastName } }", token=bearer)
    assert me["data"]["me"] == {"firstName": "Echo", "lastName": "Test"}


async def test_a_changed_email_in_the_token_is_pushed_to_stripe(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    await linked_user(client, token)
    await runtime.worker.drain()
    await gql(client, "{ me { email } }", token=token("u1", email="renamed@example.com"))
    await runtime.worker.drain()
    assert fake_stripe.customers[await customer_of(pg)]["email"] == "renamed@example.com"


# --- syncSubscription ------------------------------------------------------------------------

SYNC = "mutation { syncSubscription { planId status stripeSubscriptionId } }"


async def test_sync_subscription_is_null_without_a_customer(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    assert await gql(client, SYNC, token=token()) == {"data": {"syncSubscription": None}}


async def test_sync_subscription_shows_the_new_plan_before_the_webhook(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    bearer = token("u1")
    session = (await gql(client, CHECKOUT, token=bearer))["data"]["createCheckoutSession"]["id"]
    subscription = fake_stripe.complete_checkout(session)
    body = await gql(client, SYNC, token=bearer)
    assert body["data"]["syncSubscription"] == {
        "planId": "PRO",
        "status": "ACTIVE",
        "stripeSubscriptionId": subscription["id"],
    }


# --- operator commands -----------------------------------------------------------------------


@pytest.mark.usefixtures("cli_env")
async def test_failed_events_are_listed_and_replayed_by_the_cli(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bearer = token("u1")
    session = (await gql(client, CHECKOUT, token=bearer))["data"]["createCheckoutSession"]["id"]
    subscription = fake_stripe.complete_checkout(session)
    event = fake_stripe.event("customer.subscription.created", subscription)
    payload = json.dumps(event).encode()
    await client.post(
        "/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": sign(payload, "whsec_profile")},
    )
    await pg.execute(
        "UPDATE stripe_events SET status = 'failed', attempts = 15, last_error = 'boom'"
    )

    assert await asyncio.to_thread(main, ["events", "--status", "failed"]) == 0
    listed = capsys.readouterr().out
    assert event["id"] in listed
    assert "last_error=boom" in listed

    assert await asyncio.to_thread(main, ["events", "--replay-failed"]) == 0
    assert "Requeued 1 event(s)" in capsys.readouterr().out
    assert await pg.fetchval("SELECT status FROM stripe_events") == "processed"
    assert (
        await pg.fetchval(
            "SELECT plan_id FROM subscriptions WHERE user_id = 'u1' AND stripe_subscription_id IS NOT NULL"
        )
        == "PRO"
    )


@pytest.mark.usefixtures("cli_env")
async def test_resync_repairs_state_after_missed_webhooks(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bearer = token("u1")
    session = (await gql(client, CHECKOUT, token=bearer))["data"]["createCheckoutSession"]["id"]
    fake_stripe.complete_checkout(session)
    await gql(client, CHECKOUT, token=token("u2"))
    gone = await customer_of(pg, "u2")
    fake_stripe.delete_customer_directly(gone)

    assert await asyncio.to_thread(main, ["resync"]) == 0
    out = capsys.readouterr().out
    assert "u1 (" in out
    assert "subscription updated" in out
    assert f"u2 ({gone}): customer deleted in Stripe: unlinked" in out
    assert "Checked 2 customer(s); 2 changed." in out
    assert (
        await pg.fetchval(
            "SELECT plan_id FROM subscriptions WHERE user_id = 'u1' AND stripe_subscription_id IS NOT NULL"
        )
        == "PRO"
    )
    assert await pg.fetchval("SELECT count(*) FROM customers WHERE user_id = 'u2'") == 0

    assert await asyncio.to_thread(main, ["resync"]) == 0
    assert "Checked 1 customer(s); 0 changed." in capsys.readouterr().out
