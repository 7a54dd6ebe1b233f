"""Billing that follows Stripe as it really behaves (contract: "Billing rules …").

Each numbered input of issue #11 is a test here, replayed against the fake Stripe with the
real SDK: portal cancellations, several subscriptions, two tabs, billing emails, letter
case, deleted accounts, two users racing for one customer, foreign sessions, unknown
prices. Strangers' events are in `test_webhooks.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.cli import main
from app.runtime import Runtime
from tests import helpers
from tests.helpers import CHECKOUT, error_codes, gql, iso, stripe_api
from tests.support.stripe import FakeStripe

SECRET = "whsec_billing_rules"
SUBSCRIPTION_FIELDS = (
    "planId status stripeSubscriptionId priceId cancelAtPeriodEnd cancelAt currentPeriodEnd "
    "trialEnd"
)
ME = f"{{ me {{ subscription {{ {SUBSCRIPTION_FIELDS} }} subscriptions {{ {SUBSCRIPTION_FIELDS} }} }} }}"


@pytest.fixture
def team_price(fake_stripe: FakeStripe) -> str:
    price_id: str = fake_stripe.add_price(unit_amount=4900, product_name="Team")["id"]
    return price_id


@pytest.fixture
def settings_overrides(
    stripe_settings: dict[str, Any], team_price: str, tmp_path: Path
) -> dict[str, Any]:
    plans = tmp_path / "plans.toml"
    plans.write_text(
        f'[[plans]]\nid = "TEAM"\nname = "Team"\nprice_id = "{team_price}"\n', encoding="utf-8"
    )
    return {**stripe_settings, "stripe_webhook_secret": SECRET, "plans_file": plans}


async def deliver(client: httpx.AsyncClient, event: dict[str, Any]) -> None:
    await helpers.deliver(client, event, SECRET)


async def checkout(
    client: httpx.AsyncClient, bearer: str, plan: str | None = None
) -> dict[str, Any]:
    variables = {"input": {"planId": plan}} if plan else {}
    return await gql(client, CHECKOUT, variables, token=bearer)


async def paid_checkout(
    client: httpx.AsyncClient, fake: FakeStripe, runtime: Runtime, bearer: str
) -> dict[str, Any]:
    return await helpers.paid_checkout(client, fake, runtime, bearer, SECRET)


# --- 1. A cancellation made in the Billing Portal ------------------------------------------


async def test_a_portal_cancellation_shows_when_it_takes_effect(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
) -> None:
    bearer = token("u1")
    subscription = await paid_checkout(client, fake_stripe, runtime, bearer)
    period_end = subscription["items"]["data"][0]["current_period_end"]
    # What the portal does on current API versions: cancel_at, not cancel_at_period_end.
    updated = await stripe_api(
        fake_stripe,
        "POST",
        f"/v1/subscriptions/{subscription['id']}",
        {"cancel_at": "max_period_end"},
    )
    assert (updated["cancel_at"], updated["cancel_at_period_end"]) == (period_end, False)
    await deliver(client, fake_stripe.event("customer.subscription.updated", updated))
    await runtime.worker.drain()

    me = (await gql(client, ME, token=bearer))["data"]["me"]["subscription"]
    assert (me["status"], me["cancelAtPeriodEnd"], me["cancelAt"]) == (
        "ACTIVE",
        True,
        iso(period_end),
    )

    # Undone in the portal: nothing scheduled any more.
    resumed = await stripe_api(
        fake_stripe, "POST", f"/v1/subscriptions/{subscription['id']}", {"cancel_at": ""}
    )
    await deliver(client, fake_stripe.event("customer.subscription.updated", resumed))
    await runtime.worker.drain()
    me = (await gql(client, ME, token=bearer))["data"]["me"]["subscription"]
    assert (me["cancelAtPeriodEnd"], me["cancelAt"]) == (False, None)


async def test_a_cancellation_at_a_date_is_not_at_period_end(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
) -> None:
    bearer = token("u1")
    subscription = await paid_checkout(client, fake_stripe, runtime, bearer)
    in_a_week = int(time.time()) + 7 * 86400
    updated = await stripe_api(
        fake_stripe,
        "POST",
        f"/v1/subscriptions/{subscription['id']}",
        {"cancel_at": str(in_a_week)},
    )
    await deliver(client, fake_stripe.event("customer.subscription.updated", updated))
    await runtime.worker.drain()
    me = (await gql(client, ME, token=bearer))["data"]["me"]["subscription"]
    assert (me["cancelAtPeriodEnd"], me["cancelAt"]) == (False, iso(in_a_week))


async def test_cancel_at_period_end_shows_its_date_too(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
) -> None:
    bearer = token("u1")
    subscription = await paid_checkout(client, fake_stripe, runtime, bearer)
    updated = await stripe_api(
        fake_stripe,
        "POST",
        f"/v1/subscriptions/{subscription['id']}",
        {"cancel_at_period_end": "true"},
    )
    await deliver(client, fake_stripe.event("customer.subscription.updated", updated))
    await runtime.worker.drain()
    me = (await gql(client, ME, token=bearer))["data"]["me"]["subscription"]
    period_end = subscription["items"]["data"][0]["current_period_end"]
    assert (me["cancelAtPeriodEnd"], me["cancelAt"]) == (True, iso(period_end))


# --- 2. Several subscriptions: which one is "the" subscription ---------------------------


async def test_a_newer_unpaid_subscription_does_not_hide_the_paid_one(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pro_price: str,
    team_price: str,
) -> None:
    bearer = token("u1")
    paid = await paid_checkout(client, fake_stripe, runtime, bearer)
    customer_id = paid["customer"]
    waiting = fake_stripe.create_subscription(customer_id, team_price, metadata={"userId": "u1"})
    waiting = fake_stripe.set_subscription_status(
        waiting["id"], "incomplete", created=paid["created"] + 60
    )
    await deliver(client, fake_stripe.event("customer.subscription.created", waiting))
    await runtime.worker.drain()

    me = (await gql(client, ME, token=bearer))["data"]["me"]
    assert (me["subscription"]["status"], me["subscription"]["stripeSubscriptionId"]) == (
        "ACTIVE",
        paid["id"],
    )
    assert [(s["stripeSubscriptionId"], s["status"]) for s in me["subscriptions"]] == [
        (paid["id"], "ACTIVE"),
        (waiting["id"], "INCOMPLETE"),
    ]
    assert error_codes(await checkout(client, bearer)) == ["ALREADY_SUBSCRIBED"]


async def test_subscriptions_are_listed_entitled_then_live_then_ended_newest_first(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pro_price: str,
) -> None:
    bearer = token("u1")
    paid = await paid_checkout(client, fake_stripe, runtime, bearer)
    customer_id, base = paid["customer"], paid["created"]
    made = {}
    for n, status in enumerate(["canceled", "unpaid", "past_due", "canceled", "paused"]):
        sub = fake_stripe.create_subscription(customer_id, pro_price)
        made[n] = fake_stripe.set_subscription_status(sub["id"], status, created=base + 10 * n)
    await deliver(client, fake_stripe.event("customer.subscription.updated", made[0]))
    await runtime.worker.drain()

    me = (await gql(client, ME, token=bearer))["data"]["me"]
    assert [s["stripeSubscriptionId"] for s in me["subscriptions"]] == [
        made[2]["id"],  # entitled, newest first
        paid["id"],
        made[4]["id"],  # other live ones
        made[1]["id"],
        made[3]["id"],  # ended ones
        made[0]["id"],
    ]
    assert me["subscription"]["stripeSubscriptionId"] == made[2]["id"]


async def test_a_price_no_plan_lists_is_custom(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
) -> None:
    """10. A subscription moved to a price the plans do not list is not shown as that price."""
    bearer = token("u1")
    subscription = await paid_checkout(client, fake_stripe, runtime, bearer)
    legacy = fake_stripe.add_price(unit_amount=999, product_name="Legacy")["id"]
    item = subscription["items"]["data"][0]["id"]
    moved = await stripe_api(
        fake_stripe,
        "POST",
        f"/v1/subscriptions/{subscription['id']}",
        {"items[0][id]": item, "items[0][price]": legacy},
    )
    await deliver(client, fake_stripe.event("customer.subscription.updated", moved))
    await runtime.worker.drain()
    me = (await gql(client, ME, token=bearer))["data"]["me"]["subscription"]
    assert (me["planId"], me["priceId"], me["status"]) == ("custom", legacy, "ACTIVE")


# --- 3. Two tabs, one checkout ---------------------------------------------------------------


async def test_a_second_tab_gets_the_same_session(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    bearer = token("u1")
    first = (await checkout(client, bearer))["data"]["createCheckoutSession"]
    second = (await checkout(client, bearer))["data"]["createCheckoutSession"]
    assert second == first
    assert [s["status"] for s in fake_stripe.checkout_sessions.values()] == ["open"]


async def test_twenty_concurrent_checkouts_leave_one_open_session(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    bearer = token("u1")
    bodies = await asyncio.gather(*(checkout(client, bearer) for _ in range(20)))
    assert all("errors" not in body for body in bodies), bodies
    assert len({body["data"]["createCheckoutSession"]["id"] for body in bodies}) == 1
    assert [s["status"] for s in fake_stripe.checkout_sessions.values()] == ["open"]
    assert len(fake_stripe.customers) == 1


async def test_another_plan_expires_the_open_session_first(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    team_price: str,
) -> None:
    bearer = token("u1")
    pro = (await checkout(client, bearer))["data"]["createCheckoutSession"]
    team = (await checkout(client, bearer, "TEAM"))["data"]["createCheckoutSession"]
    sessions = fake_stripe.checkout_sessions
    assert team["id"] != pro["id"]
    assert (sessions[pro["id"]]["status"], sessions[team["id"]]["status"]) == ("expired", "open")
    assert sessions[team["id"]]["customer"] == sessions[pro["id"]]["customer"]


async def test_a_session_paid_in_the_other_tab_is_not_offered_again(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    team_price: str,
) -> None:
    """Tab 1 paid PRO; before its webhook arrives, tab 2 asks for PRO again, or for TEAM."""
    bearer = token("u1")
    pro = (await checkout(client, bearer))["data"]["createCheckoutSession"]
    fake_stripe.complete_checkout(pro["id"])
    assert error_codes(await checkout(client, bearer)) == ["ALREADY_SUBSCRIBED"]
    assert error_codes(await checkout(client, bearer, "TEAM")) == ["ALREADY_SUBSCRIBED"]
    assert len(fake_stripe.checkout_sessions) == 1


async def test_a_paid_duplicate_is_canceled_refunded_and_the_user_told_once(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pro_price: str,
) -> None:
    bearer = token("u1")
    first = await paid_checkout(client, fake_stripe, runtime, bearer)
    # The second tab's session was paid too (as a session opened before this service kept
    # users to one, or a race it cannot see, would be): a second paid subscription.
    second = fake_stripe.create_subscription(
        first["customer"], pro_price, metadata={"userId": "u1"}
    )
    second = fake_stripe.set_subscription_status(
        second["id"], "active", created=first["created"] + 5
    )
    paid = fake_stripe.invoices[second["latest_invoice"]]
    assert paid["amount_paid"] == 1500
    await deliver(client, fake_stripe.event("customer.subscription.created", second))
    await runtime.worker.drain()

    subscriptions = fake_stripe.subscriptions
    assert subscriptions[second["id"]]["status"] == "canceled"
    assert subscriptions[first["id"]]["status"] == "active"
    [refund] = fake_stripe.refunds.values()
    [payment] = [p for p in fake_stripe.invoice_payments.values() if p["invoice"] == paid["id"]]
    assert (refund["payment_intent"], refund["amount"], refund["status"]) == (
        payment["payment"]["payment_intent"],
        1500,
        "succeeded",
    )
    me = await gql(
        client,
        "{ me { subscription { stripeSubscriptionId status } notifications { kind } } }",
        token=bearer,
    )
    assert me["data"]["me"]["subscription"] == {
        "stripeSubscriptionId": first["id"],
        "status": "ACTIVE",
    }
    assert me["data"]["me"]["notifications"] == [{"kind": "duplicate_subscription_refunded"}]
    metrics = (await client.get("/metrics")).text
    assert "billing_duplicate_subscriptions_refunded_total 1.0" in metrics

    # Once: the events that follow (and a replay) change nothing more.
    canceled = fake_stripe.subscriptions[second["id"]]
    await deliver(client, fake_stripe.event("customer.subscription.deleted", canceled))
    await deliver(client, fake_stripe.event("customer.subscription.updated", first))
    await runtime.worker.drain()
    assert len(fake_stripe.refunds) == 1
    again = await gql(client, "{ me { notifications { kind } } }", token=bearer)
    assert again["data"]["me"]["notifications"] == [{"kind": "duplicate_subscription_refunded"}]


async def test_a_second_subscription_on_trial_is_not_a_paid_duplicate(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pro_price: str,
) -> None:
    bearer = token("u1")
    first = await paid_checkout(client, fake_stripe, runtime, bearer)
    trial = fake_stripe.create_subscription(
        first["customer"],
        pro_price,
        metadata={"userId": "u1"},
        trial_period_days=7,
        status="trialing",
    )
    await deliver(client, fake_stripe.event("customer.subscription.created", trial))
    await runtime.worker.drain()
    assert fake_stripe.subscriptions[trial["id"]]["status"] == "trialing"
    assert fake_stripe.refunds == {}


# --- 4. The billing email belongs to the customer ------------------------------------------


async def test_a_name_edit_does_not_revert_the_billing_email(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
) -> None:
    bearer = token("u1")
    subscription = await paid_checkout(client, fake_stripe, runtime, bearer)
    customer_id = subscription["customer"]
    changed = await stripe_api(
        fake_stripe, "POST", f"/v1/customers/{customer_id}", {"email": "billing@example.com"}
    )
    await deliver(client, fake_stripe.event("customer.updated", changed))
    await runtime.worker.drain()
    me = await gql(client, "{ me { email customer { email } } }", token=bearer)
    assert me["data"]["me"] == {
        "email": "u1@example.com",
        "customer": {"email": "billing@example.com"},
    }

    fake_stripe.reset_requests()
    await gql(client, 'mutation { updateProfile(input: {firstName: "Ada"}) { id } }', token=bearer)
    await runtime.worker.drain()
    [push] = fake_stripe.requests_to("POST", "/v1/customers")
    assert push.params == {"name": "Ada"}
    assert fake_stripe.customers[customer_id]["email"] == "billing@example.com"


async def test_a_new_login_email_follows_only_while_the_billing_email_is_the_old_one(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
) -> None:
    ada = token("ada", email="ada@example.com")
    ada_customer = (await paid_checkout(client, fake_stripe, runtime, ada))["customer"]
    bob = token("bob", email="bob@example.com")
    bob_customer = (await paid_checkout(client, fake_stripe, runtime, bob))["customer"]
    await stripe_api(
        fake_stripe, "POST", f"/v1/customers/{bob_customer}", {"email": "invoices@bob.example"}
    )

    await gql(client, "{ me { id } }", token=token("ada", email="ada@new.example"))
    await gql(client, "{ me { id } }", token=token("bob", email="bob@new.example"))
    await runtime.worker.drain()

    customers = fake_stripe.customers
    assert customers[ada_customer]["email"] == "ada@new.example"
    assert customers[bob_customer]["email"] == "invoices@bob.example"


async def test_a_login_email_changing_only_its_letter_case_is_no_change(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("ada", email="ada@example.com")
    await paid_checkout(client, fake_stripe, runtime, bearer)
    me = await gql(client, "{ me { email } }", token=token("ada", email="Ada@Example.com"))
    assert me["data"]["me"]["email"] == "Ada@Example.com"  # as the provider spells it now
    assert await pg.fetchval("SELECT count(*) FROM sync_jobs") == 0


async def test_queued_edits_push_every_field_they_changed_once(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
) -> None:
    bearer = token("u1")
    await paid_checkout(client, fake_stripe, runtime, bearer)
    fake_stripe.reset_requests()
    for change in ('{firstName: "Ada"}', '{phone: "+14155550100"}'):
        await gql(client, f"mutation {{ updateProfile(input: {change}) {{ id }} }}", token=bearer)
    await runtime.worker.drain()
    [push] = fake_stripe.requests_to("POST", "/v1/customers")
    assert push.params == {"name": "Ada", "phone": "+14155550100"}


@pytest.mark.usefixtures("cli_env")
async def test_resync_brings_stripes_name_and_phone_to_the_profile(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
) -> None:
    """Missed `customer.updated` webhooks: `resync` repairs the profile as they would have."""
    bearer = token("u1")
    subscription = await paid_checkout(client, fake_stripe, runtime, bearer)
    await stripe_api(
        fake_stripe,
        "POST",
        f"/v1/customers/{subscription['customer']}",
        {"name": "Grace Hopper", "phone": "+1 415 555 0100"},
    )
    assert await asyncio.to_thread(main, ["resync"]) == 0
    me = await gql(client, "{ me { firstName lastName phone customer { name } } }", token=bearer)
    assert me["data"]["me"] == {
        "firstName": "Grace",
        "lastName": "Hopper",
        "phone": "+14155550100",
        "customer": {"name": "Grace Hopper"},
    }


# --- 5. Letter case --------------------------------------------------------------------------


async def test_a_customer_is_adopted_whatever_the_letter_case_of_the_token(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    payment_link = fake_stripe.add_customer(email="ada@example.com")  # no metadata
    body = await checkout(client, token("ada", email="Ada@Example.com"))
    assert "errors" not in body, body
    assert list(fake_stripe.customers) == [payment_link["id"]]
    assert fake_stripe.customers[payment_link["id"]]["metadata"] == {"userId": "ada"}
    lookups = [r.params["email"] for r in fake_stripe.requests_to("GET", "/v1/customers")]
    assert lookups == ["Ada@Example.com", "ada@example.com"]
    session = fake_stripe.checkout_sessions[body["data"]["createCheckoutSession"]["id"]]
    assert session["customer"] == payment_link["id"]


async def test_an_adopted_customer_that_already_pays_is_already_subscribed(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pro_price: str,
) -> None:
    bought_elsewhere = fake_stripe.add_customer(email="ada@example.com")
    fake_stripe.create_subscription(bought_elsewhere["id"], pro_price)
    bearer = token("ada", email="ada@example.com")
    assert error_codes(await checkout(client, bearer)) == ["ALREADY_SUBSCRIBED"]
    assert fake_stripe.checkout_sessions == {}
    me = await gql(
        client, "{ me { customer { id } subscription { planId status } } }", token=bearer
    )
    assert me["data"]["me"] == {
        "customer": {"id": bought_elsewhere["id"]},
        "subscription": {"planId": "PRO", "status": "ACTIVE"},
    }


# --- 6. Deleted accounts stay deleted ----------------------------------------------------------


async def test_an_erased_account_never_comes_back_with_its_billing(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
) -> None:
    old = token("ada", email="ada@example.com")
    first = await paid_checkout(client, fake_stripe, runtime, old)
    kept = first["customer"]
    body = await gql(client, "mutation { deleteAccount { success } }", token=old)
    assert body["data"]["deleteAccount"]["success"] is True
    released = fake_stripe.customers[kept]["metadata"]
    assert "userId" not in released
    assert released["accountDeleted"] == "true"

    time.sleep(1.1)  # a later token: `iat` is in whole seconds
    again = token("ada", email="ada@example.com")
    body = await checkout(client, again)
    assert "errors" not in body, body
    session = fake_stripe.checkout_sessions[body["data"]["createCheckoutSession"]["id"]]
    assert session["customer"] != kept

    me = await gql(
        client,
        "{ me { customer { id } subscription { stripeSubscriptionId } subscriptions "
        "{ stripeSubscriptionId } } }",
        token=again,
    )
    assert me["data"]["me"]["customer"]["id"] == session["customer"]
    assert me["data"]["me"]["subscriptions"] == []
    sync = await gql(client, "mutation { syncSubscription { stripeSubscriptionId } }", token=again)
    assert sync["data"]["syncSubscription"]["stripeSubscriptionId"] is None
    export = await gql(client, "{ export { subscriptions { stripeSubscriptionId } } }", token=again)
    assert export["data"]["export"]["subscriptions"] == []

    # Late events about the kept customer change nothing for the new account.
    await deliver(client, fake_stripe.event("customer.subscription.updated", first))
    await runtime.worker.drain()
    me = await gql(client, "{ me { subscriptions { stripeSubscriptionId } } }", token=again)
    assert me["data"]["me"]["subscriptions"] == []


async def test_deleting_an_account_expires_its_open_checkout_session(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    bearer = token("ada")
    session = (await checkout(client, bearer))["data"]["createCheckoutSession"]
    await gql(client, "mutation { deleteAccount { success } }", token=bearer)
    assert fake_stripe.checkout_sessions[session["id"]]["status"] == "expired"


# --- 7. Two accounts, one email, one customer ----------------------------------------------


async def test_two_users_racing_for_one_customer_never_share_it(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    shared = fake_stripe.add_customer(email="shared@example.com")
    bearers = {user: token(user, email="shared@example.com") for user in ("u1", "u2")}
    bodies = await asyncio.gather(*(checkout(client, b) for b in bearers.values()))
    assert all("errors" not in body for body in bodies), bodies

    links = dict(await pg.fetch("SELECT user_id, stripe_customer_id FROM customers"))
    assert sorted(links) == ["u1", "u2"]
    winner = next(user for user, customer in links.items() if customer == shared["id"])
    loser = "u2" if winner == "u1" else "u1"
    assert links[loser] != shared["id"]
    for user, customer in links.items():
        assert fake_stripe.customers[customer]["metadata"]["userId"] == user

    # The winner leaves; a third account with that email never gets their customer.
    await gql(client, "mutation { deleteAccount { success } }", token=bearers[winner])
    third = await checkout(client, token("u3", email="shared@example.com"))
    assert "errors" not in third
    u3 = await pg.fetchval("SELECT stripe_customer_id FROM customers WHERE user_id = 'u3'")
    assert u3 not in (shared["id"], links[loser])


# --- 8. Whose customer: evidence this service wrote --------------------------------------------


async def test_a_foreign_session_naming_our_user_links_nothing(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
    pro_price: str,
) -> None:
    """A Payment Link takes `client_reference_id` from its URL: anyone can name anyone."""
    await gql(client, "{ me { id } }", token=token("u1"))
    foreign = fake_stripe.add_customer(email="mallory@example.com")
    session = {
        "id": "cs_test_foreign",
        "object": "checkout.session",
        "customer": foreign["id"],
        "client_reference_id": "u1",
        "mode": "subscription",
        "status": "complete",
        "metadata": {},
    }
    fake_stripe.create_subscription(foreign["id"], pro_price)
    await deliver(client, fake_stripe.event("checkout.session.completed", session))
    await runtime.worker.drain()
    assert await pg.fetchval("SELECT count(*) FROM customers") == 0
    status, reason = await pg.fetchrow("SELECT status, last_error FROM stripe_events")
    assert (status, reason) == ("ignored", "a customer this service did not create or link")


async def test_a_session_we_created_links_its_customer_when_our_link_was_lost(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("u1")
    body = await checkout(client, bearer)
    session_id = body["data"]["createCheckoutSession"]["id"]
    customer_id = await pg.fetchval("SELECT stripe_customer_id FROM customers")
    await pg.execute("DELETE FROM customers")  # as if our link had been lost
    await stripe_api(fake_stripe, "POST", f"/v1/customers/{customer_id}", {"metadata[userId]": ""})
    fake_stripe.complete_checkout(session_id)
    await deliver(
        client,
        fake_stripe.event("checkout.session.completed", fake_stripe.checkout_sessions[session_id]),
    )
    await runtime.worker.drain()
    me = await gql(
        client, "{ me { customer { id } subscription { planId status } } }", token=bearer
    )
    assert me["data"]["me"] == {
        "customer": {"id": customer_id},
        "subscription": {"planId": "PRO", "status": "ACTIVE"},
    }
