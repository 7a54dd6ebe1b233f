"""Billing features for the SPA (contract: "Billing features for the SPA").

Invoices mirrored from Stripe and served from our copy, entitlements from the plans file and
Stripe's own Entitlements, in-app cancel / resume / change plan with a preview, Checkout
options per plan, and the notifications of a trial ending and a payment failing — each
against the fake Stripe through the real SDK, including events out of order and a retry
after Stripe acted but its answer was lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli import main
from app.runtime import Runtime
from services.notifications import money
from services.plan_management import PREVIEW_AGAIN, UNCONFIRMED
from services.stripe_gateway import AUTHENTICATION_REQUIRED, DECLINED
from tests import helpers
from tests.helpers import CHECKOUT, error_codes, gql, iso
from tests.support.stripe import FakeStripe

SECRET = "whsec_billing_features"
SUBSCRIPTION = "planId status priceId cancelAtPeriodEnd cancelAt currentPeriodEnd trialEnd"
INVOICE = (
    "id number status currency amountDue amountPaid createdAt periodStart periodEnd "
    "hostedInvoiceUrl invoicePdf"
)
ME = f"""{{ me {{
  subscription {{ {SUBSCRIPTION} }}
  invoices {{ {INVOICE} }}
  entitlements
  notifications {{ kind message url }}
}} }}"""
CANCEL = f"mutation($input: CancelSubscriptionInput) {{ cancelSubscription(input: $input) {{ {SUBSCRIPTION} }} }}"
RESUME = f"mutation {{ resumeSubscription {{ {SUBSCRIPTION} }} }}"
CHANGE = f"mutation($input: ChangePlanInput!) {{ changePlan(input: $input) {{ {SUBSCRIPTION} }} }}"
PREVIEW = (
    "query($planId: ID!) { previewPlanChange(planId: $planId) "
    "{ planId amountDue currency prorationDate } }"
)
# Each management call, with what it asks for.
MANAGEMENT: list[tuple[str, dict[str, Any]]] = [
    (CANCEL, {}),
    (RESUME, {}),
    (CHANGE, {"input": {"planId": "TEAM"}}),
    (PREVIEW, {"planId": "TEAM"}),
]
BASIC = ["basic"]
PRO = ["api", "basic", "reports"]
TEAM = ["api", "basic", "reports", "seats"]


@pytest.fixture
def team_price(fake_stripe: FakeStripe) -> str:
    price_id: str = fake_stripe.add_price(
        unit_amount=4900, currency="usd", interval="month", product_name="Team"
    )["id"]
    return price_id


@pytest.fixture
def trial_price(fake_stripe: FakeStripe) -> str:
    price_id: str = fake_stripe.add_price(
        unit_amount=900, currency="usd", interval="month", product_name="Starter"
    )["id"]
    return price_id


@pytest.fixture
def plans_file(tmp_path: Path, team_price: str, trial_price: str) -> Path:
    plans = tmp_path / "plans.toml"
    plans.write_text(
        f"""
[[plans]]
id = "free"
name = "Free"
features = ["basic"]

[[plans]]
id = "PRO"
name = "Pro"
features = ["reports", "api"]

[[plans]]
id = "TEAM"
name = "Team"
price_id = "{team_price}"
features = ["reports", "api", "seats"]

[[plans]]
id = "STARTER"
name = "Starter"
price_id = "{trial_price}"
features = ["reports"]
trial_days = 14
allow_promotion_codes = true
automatic_tax = true
""",
        encoding="utf-8",
    )
    return plans


@pytest.fixture
def settings_overrides(stripe_settings: dict[str, Any], plans_file: Path) -> dict[str, Any]:
    # No retries inside the SDK: a lost answer reaches the user, who retries the mutation.
    return {
        **stripe_settings,
        "stripe_webhook_secret": SECRET,
        "plans_file": plans_file,
        "stripe_max_network_retries": 0,
    }


async def deliver(client: httpx.AsyncClient, event: dict[str, Any]) -> None:
    await helpers.deliver(client, event, SECRET)


async def subscribe(
    client: httpx.AsyncClient,
    fake: FakeStripe,
    runtime: Runtime,
    bearer: str,
    plan: str = "PRO",
) -> dict[str, Any]:
    """Checkout for `plan`, paid, its subscription and first invoice events processed."""
    subscription = await helpers.paid_checkout(client, fake, runtime, bearer, SECRET, plan)
    await deliver(client, fake.event("invoice.paid", fake.invoices[subscription["latest_invoice"]]))
    await runtime.worker.drain()
    return subscription


async def me(client: httpx.AsyncClient, bearer: str) -> dict[str, Any]:
    body = await gql(client, ME, token=bearer)
    assert "errors" not in body, body
    found: dict[str, Any] = body["data"]["me"]
    return found


def as_listed(invoice: dict[str, Any]) -> dict[str, Any]:
    """What `User.invoices` shows of one of Stripe's invoices."""
    return {
        "id": invoice["id"],
        "number": invoice["number"],
        "status": invoice["status"].upper(),
        "currency": invoice["currency"],
        "amountDue": invoice["amount_due"],
        "amountPaid": invoice["amount_paid"],
        "createdAt": iso(invoice["created"]),
        "periodStart": iso(invoice["period_start"]),
        "periodEnd": iso(invoice["period_end"]),
        "hostedInvoiceUrl": invoice["hosted_invoice_url"],
        "invoicePdf": invoice["invoice_pdf"],
    }


def subscription_posts(fake: FakeStripe, subscription_id: str) -> list[Any]:
    return fake.requests_to("POST", f"/v1/subscriptions/{subscription_id}")


# --- Invoices --------------------------------------------------------------------------------


async def test_invoices_are_mirrored_newest_first_as_stripe_gives_them(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    first = fake_stripe.invoices[subscription["latest_invoice"]]
    assert (first["status"], first["amount_paid"]) == ("paid", 1500)

    renewal = fake_stripe.fail_payment(subscription["id"])
    await deliver(client, fake_stripe.event("invoice.payment_failed", renewal))
    await runtime.worker.drain()

    invoices = (await me(client, bearer))["invoices"]
    assert invoices == [as_listed(fake_stripe.invoices[renewal["id"]]), as_listed(first)]
    assert invoices[0]["status"] == "OPEN"
    assert (invoices[0]["amountDue"], invoices[0]["amountPaid"]) == (1500, 0)
    assert invoices[0]["hostedInvoiceUrl"]  # Stripe's links, as it gives them
    assert invoices[1]["invoicePdf"]

    one = await gql(client, "{ me { invoices(first: 1) { id } } }", token=bearer)
    assert one["data"]["me"]["invoices"] == [{"id": renewal["id"]}]
    for first_ in (0, 101):
        bad = await gql(client, f"{{ me {{ invoices(first: {first_}) {{ id }} }} }}", token=bearer)
        assert error_codes(bad) == ["BAD_USER_INPUT"]


async def test_invoice_events_in_any_order_leave_stripes_latest_state(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    renewal = fake_stripe.fail_payment(subscription["id"])  # open, as the event carries it
    paid = fake_stripe.pay_invoice(renewal["id"])
    assert paid["status"] == "paid"

    # The newest event first, then the stale ones it supersedes.
    await deliver(client, fake_stripe.event("invoice.paid", paid))
    await runtime.worker.drain()
    await deliver(client, fake_stripe.event("invoice.payment_failed", renewal))
    await deliver(client, fake_stripe.event("invoice.finalized", renewal))
    await runtime.worker.drain()

    [newest, _] = (await me(client, bearer))["invoices"]
    assert newest == as_listed(fake_stripe.invoices[renewal["id"]])
    assert (newest["status"], newest["amountPaid"]) == ("PAID", 1500)


async def test_a_voided_invoice_shows_void_whatever_an_older_event_said(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    renewal = fake_stripe.fail_payment(subscription["id"])
    async with httpx.AsyncClient(
        base_url=fake_stripe.url, headers={"Authorization": "Bearer sk_test_fake"}
    ) as dashboard:
        (await dashboard.post(f"/v1/invoices/{renewal['id']}/void")).raise_for_status()
    # Only the older event arrives (the voided one is late): the re-read shows the truth.
    await deliver(client, fake_stripe.event("invoice.updated", renewal))
    await runtime.worker.drain()
    assert (await me(client, bearer))["invoices"][0]["status"] == "VOID"


async def test_the_first_invoice_shows_on_return_from_checkout(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    """The SPA calls `syncSubscription` on return from Checkout, before any webhook."""
    bearer = token("ada")
    body = await gql(client, CHECKOUT, {"input": {"planId": "PRO"}}, token=bearer)
    subscription = fake_stripe.complete_checkout(body["data"]["createCheckoutSession"]["id"])
    synced = await gql(client, "mutation { syncSubscription { status } }", token=bearer)
    assert synced == {"data": {"syncSubscription": {"status": "ACTIVE"}}}
    assert (await me(client, bearer))["invoices"] == [
        as_listed(fake_stripe.invoices[subscription["latest_invoice"]])
    ]


async def test_invoices_are_served_while_stripe_is_down(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    expected = [as_listed(fake_stripe.invoices[subscription["latest_invoice"]])]
    fake_stripe.down = True
    fake_stripe.reset_requests()
    body = await gql(client, f"{{ me {{ invoices {{ {INVOICE} }} }} }}", token=bearer)
    assert body == {"data": {"me": {"invoices": expected}}}
    assert fake_stripe.requests == []


@pytest.mark.usefixtures("cli_env")
async def test_resync_backfills_invoices_no_event_told_us_of(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
) -> None:
    bearer = token("ada")
    body = await gql(client, CHECKOUT, {"input": {"planId": "PRO"}}, token=bearer)
    subscription = fake_stripe.complete_checkout(body["data"]["createCheckoutSession"]["id"])
    await deliver(client, fake_stripe.event("customer.subscription.created", subscription))
    await runtime.worker.drain()
    for _ in range(3):  # three renewals, their events all missed
        fake_stripe.pay_invoice(fake_stripe.fail_payment(subscription["id"])["id"])
    stripes = sorted(
        (i for i in fake_stripe.invoices.values() if i["customer"] == subscription["customer"]),
        key=lambda i: (i["created"], i["id"]),
        reverse=True,
    )
    assert len(stripes) == 4

    assert await asyncio.to_thread(main, ["resync"]) == 0

    listed = (await me(client, bearer))["invoices"]
    assert {i["id"] for i in listed} == {i["id"] for i in stripes}
    assert [i["createdAt"] for i in listed] == sorted(
        (i["createdAt"] for i in listed), reverse=True
    )
    assert all(i["status"] == "PAID" for i in listed)


async def listed_draft(
    client: httpx.AsyncClient, fake: FakeStripe, runtime: Runtime, customer_id: str
) -> dict[str, Any]:
    """A one-off draft made in the Dashboard, its `invoice.created` processed."""
    draft = await helpers.stripe_api(fake, "POST", "/v1/invoices", {"customer": customer_id})
    await deliver(client, fake.event("invoice.created", draft))
    await runtime.worker.drain()
    return draft


async def test_a_deleted_draft_leaves_the_list_whatever_the_order_of_its_events(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    """A one-off draft made in the Dashboard, then deleted (only drafts can be)."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    draft = await listed_draft(client, fake_stripe, runtime, subscription["customer"])
    listed = (await me(client, bearer))["invoices"]
    assert [i["status"] for i in listed if i["id"] == draft["id"]] == ["DRAFT"]

    await helpers.stripe_api(fake_stripe, "DELETE", f"/v1/invoices/{draft['id']}")
    await deliver(client, fake_stripe.event("invoice.deleted", draft))
    await deliver(client, fake_stripe.event("invoice.created", draft))  # late, out of order
    await runtime.worker.drain()
    listed = (await me(client, bearer))["invoices"]
    assert [i["id"] for i in listed] == [subscription["latest_invoice"]]


@pytest.mark.usefixtures("cli_env")
async def test_resync_forgets_a_draft_deleted_while_no_event_came(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    draft = await listed_draft(client, fake_stripe, runtime, subscription["customer"])
    await helpers.stripe_api(fake_stripe, "DELETE", f"/v1/invoices/{draft['id']}")

    assert await asyncio.to_thread(main, ["resync"]) == 0
    listed = (await me(client, bearer))["invoices"]
    assert [i["id"] for i in listed] == [subscription["latest_invoice"]]


async def test_the_export_holds_the_invoices(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    exported = await gql(client, f"{{ export {{ invoices {{ {INVOICE} }} }} }}", token=bearer)
    assert exported["data"]["export"]["invoices"] == [
        as_listed(fake_stripe.invoices[subscription["latest_invoice"]])
    ]
    download = await client.get("/account/export", headers={"Authorization": f"Bearer {bearer}"})
    assert download.json()["invoices"] == exported["data"]["export"]["invoices"]


async def test_a_failed_payment_notifies_once_with_the_invoices_page(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    renewal = fake_stripe.fail_payment(subscription["id"])
    failed = fake_stripe.event("invoice.payment_failed", renewal)
    await deliver(client, failed)
    await deliver(client, failed)  # Stripe delivers at least once
    await runtime.worker.drain()

    found = await me(client, bearer)
    assert found["notifications"] == [
        {
            "kind": "payment_failed",
            "message": "Your payment of 15.00 USD failed. Pay the invoice to keep your plan.",
            "url": renewal["hosted_invoice_url"],
        }
    ]
    # Stripe retries the payment while past due: the user keeps the plan meanwhile.
    await deliver(
        client,
        fake_stripe.event(
            "customer.subscription.updated", fake_stripe.subscriptions[subscription["id"]]
        ),
    )
    await runtime.worker.drain()
    found = await me(client, bearer)
    assert (found["subscription"]["status"], found["entitlements"]) == ("PAST_DUE", PRO)


async def test_a_late_payment_failed_for_an_invoice_paid_since_adds_nothing(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    """Stripe's retry paid the invoice before the failure's event was processed: the state
    re-read says paid, so there is nothing to ask of the user."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    renewal = fake_stripe.fail_payment(subscription["id"])
    fake_stripe.pay_invoice(renewal["id"])
    await deliver(client, fake_stripe.event("invoice.payment_failed", renewal))
    await runtime.worker.drain()
    found = await me(client, bearer)
    assert found["notifications"] == []
    assert found["invoices"][0]["status"] == "PAID"


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [(1500, "usd", "15.00 USD"), (500, "jpy", "500 JPY"), (5250, "kwd", "5.250 KWD")],
)
def test_amounts_in_messages_are_in_the_currencys_major_unit(
    amount: int, currency: str, shown: str
) -> None:
    assert money(amount, currency) == shown


# --- Entitlements ----------------------------------------------------------------------------


async def test_the_free_plans_features_without_a_subscription(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    body = await gql(client, "{ me { entitlements } }", token=token("ada"))
    assert body == {"data": {"me": {"entitlements": BASIC}}}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("active", PRO),
        ("past_due", PRO),
        ("unpaid", BASIC),
        ("canceled", BASIC),
        ("incomplete", BASIC),
        ("incomplete_expired", BASIC),
        ("paused", BASIC),
    ],
)
async def test_the_plans_features_while_its_subscription_is_entitled(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    status: str,
    expected: list[str],
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    assert (await me(client, bearer))["entitlements"] == PRO
    changed = fake_stripe.set_subscription_status(subscription["id"], status)
    await deliver(client, fake_stripe.event("customer.subscription.updated", changed))
    await runtime.worker.drain()
    assert (await me(client, bearer))["entitlements"] == expected


async def test_stripes_own_entitlements_are_added_as_stripe_holds_them_now(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    customer = subscription["customer"]
    granted = fake_stripe.set_active_entitlements(customer, ["sso", "audit-log"])
    granted_event = fake_stripe.event("entitlements.active_entitlement_summary.updated", granted)
    await deliver(client, granted_event)
    await runtime.worker.drain()
    assert (await me(client, bearer))["entitlements"] == sorted([*PRO, "audit-log", "sso"])

    # One is withdrawn; the withdrawal's event comes first, the older grant again after it.
    withdrawn = fake_stripe.set_active_entitlements(customer, ["sso"])
    await deliver(
        client, fake_stripe.event("entitlements.active_entitlement_summary.updated", withdrawn)
    )
    await runtime.worker.drain()
    await deliver(client, fake_stripe.event(granted_event["type"], granted))
    await runtime.worker.drain()
    assert (await me(client, bearer))["entitlements"] == sorted([*PRO, "sso"])


# --- Cancel and resume -----------------------------------------------------------------------


async def test_cancel_at_period_end_shows_at_once_and_keeps_the_plan_until_then(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    period_end = subscription["items"]["data"][0]["current_period_end"]

    body = await gql(client, CANCEL, token=bearer)
    assert body["data"]["cancelSubscription"] == {
        "planId": "PRO",
        "status": "ACTIVE",
        "priceId": subscription["items"]["data"][0]["price"]["id"],
        "cancelAtPeriodEnd": True,
        "cancelAt": iso(period_end),
        "currentPeriodEnd": iso(period_end),
        "trialEnd": None,
    }
    assert fake_stripe.subscriptions[subscription["id"]]["cancel_at_period_end"] is True
    found = await me(client, bearer)  # no webhook yet: re-read from Stripe
    assert found["subscription"] == body["data"]["cancelSubscription"]
    assert found["entitlements"] == PRO

    resumed = await gql(client, RESUME, token=bearer)
    assert resumed["data"]["resumeSubscription"]["cancelAtPeriodEnd"] is False
    assert resumed["data"]["resumeSubscription"]["cancelAt"] is None
    held = fake_stripe.subscriptions[subscription["id"]]
    assert (held["cancel_at_period_end"], held["cancel_at"]) == (False, None)


async def test_resume_undoes_a_cancellation_made_in_the_billing_portal(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    portal = fake_stripe.portal_cancel(subscription["id"])  # cancel_at, not cancel_at_period_end
    await deliver(client, fake_stripe.event("customer.subscription.updated", portal))
    await runtime.worker.drain()
    assert (await me(client, bearer))["subscription"]["cancelAt"] == iso(portal["cancel_at"])

    body = await gql(client, RESUME, token=bearer)
    assert body["data"]["resumeSubscription"]["cancelAt"] is None
    assert body["data"]["resumeSubscription"]["cancelAtPeriodEnd"] is False
    assert fake_stripe.subscriptions[subscription["id"]]["cancel_at"] is None
    [post] = subscription_posts(fake_stripe, subscription["id"])
    assert post.params == {"cancel_at": ""}


async def test_resume_with_nothing_scheduled_changes_nothing(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    body = await gql(client, RESUME, token=bearer)
    assert body["data"]["resumeSubscription"]["status"] == "ACTIVE"
    assert subscription_posts(fake_stripe, subscription["id"]) == []


async def test_cancel_at_once_ends_the_plan_and_nothing_is_left_to_manage(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    body = await gql(client, CANCEL, {"input": {"atPeriodEnd": False}}, token=bearer)
    assert body["data"]["cancelSubscription"]["status"] == "CANCELED"
    assert fake_stripe.subscriptions[subscription["id"]]["status"] == "canceled"
    found = await me(client, bearer)  # the ended subscription is still the one shown
    assert (found["subscription"]["status"], found["entitlements"]) == ("CANCELED", BASIC)

    for query, variables in MANAGEMENT:
        refused = await gql(client, query, variables, token=bearer)
        assert error_codes(refused) == ["NOT_FOUND"], query


async def test_without_a_subscription_there_is_nothing_to_manage(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    bearer = token("ada")
    for query, variables in MANAGEMENT:
        refused = await gql(client, query, variables, token=bearer)
        assert error_codes(refused) == ["NOT_FOUND"], query
        assert refused["errors"][0]["message"] == (
            "You have no subscription to change: subscribe to a plan first."
        )
    assert fake_stripe.requests_to("POST", "/v1/subscriptions") == []


# --- Change plan, with a preview -------------------------------------------------------------


async def test_a_previewed_change_charges_exactly_the_preview(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    team_price: str,
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    invoices_before = set(fake_stripe.invoices)

    body = await gql(client, PREVIEW, {"planId": "TEAM"}, token=bearer)
    preview = body["data"]["previewPlanChange"]
    assert (preview["planId"], preview["currency"]) == ("TEAM", "usd")
    # Nearly a whole period of the difference (4900 - 1500), prorated to the second.
    assert 3300 < preview["amountDue"] <= 3400
    # Nothing changed: no update, no invoice.
    assert subscription_posts(fake_stripe, subscription["id"]) == []
    assert set(fake_stripe.invoices) == invoices_before

    await asyncio.sleep(1.1)  # the charge is computed for the preview's instant, not now
    changed = await gql(
        client,
        CHANGE,
        {"input": {"planId": "TEAM", "prorationDate": preview["prorationDate"]}},
        token=bearer,
    )
    assert changed["data"]["changePlan"]["planId"] == "TEAM"
    assert changed["data"]["changePlan"]["priceId"] == team_price
    assert changed["data"]["changePlan"]["status"] == "ACTIVE"
    held = fake_stripe.subscriptions[subscription["id"]]
    assert held["items"]["data"][0]["price"]["id"] == team_price
    [proration] = [fake_stripe.invoices[i] for i in set(fake_stripe.invoices) - invoices_before]
    assert (proration["status"], proration["amount_paid"]) == ("paid", preview["amountDue"])

    found = await me(client, bearer)  # no webhook yet: what changePlan re-read
    assert found["subscription"]["planId"] == "TEAM"
    assert found["entitlements"] == TEAM
    assert found["invoices"][0] == as_listed(proration)


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ("ENTERPRISE", "Unknown plan 'ENTERPRISE'."),
        ("PRO", "You are on the Pro plan already."),
        ("free", "The Free plan has no price: cancel your subscription instead."),
    ],
)
async def test_a_change_to_an_unknown_the_current_or_the_free_plan_is_refused(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    plan: str,
    message: str,
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    asked: list[tuple[str, dict[str, Any]]] = [
        (CHANGE, {"input": {"planId": plan}}),
        (PREVIEW, {"planId": plan}),
    ]
    for query, variables in asked:
        refused = await gql(client, query, variables, token=bearer)
        assert error_codes(refused) == ["BAD_USER_INPUT"]
        assert refused["errors"][0]["message"] == message
    assert subscription_posts(fake_stripe, subscription["id"]) == []
    assert fake_stripe.requests_to("POST", "/v1/invoices/create_preview") == []


async def test_a_stale_preview_cannot_be_confirmed(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    for stale in ("2026-01-01T00:00:00+00:00", "2099-01-01T00:00:00+00:00"):
        refused = await gql(
            client, CHANGE, {"input": {"planId": "TEAM", "prorationDate": stale}}, token=bearer
        )
        assert error_codes(refused) == ["BAD_USER_INPUT"]
        assert refused["errors"][0]["message"] == (
            "The preview has expired: preview the change again."
        )
    assert subscription_posts(fake_stripe, subscription["id"]) == []


async def test_a_declined_card_refuses_the_upgrade_and_nothing_changes(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pro_price: str,
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    invoices_before = set(fake_stripe.invoices)
    fake_stripe.decline_next_payment()

    refused = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert error_codes(refused) == ["PAYMENT_PROVIDER_ERROR"]
    assert refused["errors"][0]["message"] == DECLINED
    held = fake_stripe.subscriptions[subscription["id"]]
    assert (held["status"], held["items"]["data"][0]["price"]["id"]) == ("active", pro_price)
    assert set(fake_stripe.invoices) == invoices_before
    found = await me(client, bearer)
    assert (found["subscription"]["planId"], found["entitlements"]) == ("PRO", PRO)


async def test_a_preview_of_a_subscription_changed_since_cannot_be_confirmed(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    trial_price: str,
) -> None:
    """The preview was computed on Pro; the plan moved at Stripe (Dashboard, Billing Portal)
    before the user confirmed, and no webhook told us yet: confirming it would charge an
    amount nobody was shown."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    body = await gql(client, PREVIEW, {"planId": "TEAM"}, token=bearer)
    preview = body["data"]["previewPlanChange"]
    item = fake_stripe.subscriptions[subscription["id"]]["items"]["data"][0]["id"]
    await helpers.stripe_api(
        fake_stripe,
        "POST",
        f"/v1/subscriptions/{subscription['id']}",
        {"items[0][id]": item, "items[0][price]": trial_price, "proration_behavior": "none"},
    )
    fake_stripe.reset_requests()

    refused = await gql(
        client,
        CHANGE,
        {"input": {"planId": "TEAM", "prorationDate": preview["prorationDate"]}},
        token=bearer,
    )
    assert error_codes(refused) == ["BAD_USER_INPUT"]
    assert refused["errors"][0]["message"] == PREVIEW_AGAIN
    assert subscription_posts(fake_stripe, subscription["id"]) == []
    # What Stripe holds now is shown, though no webhook came.
    assert (await me(client, bearer))["subscription"]["planId"] == "STARTER"


async def test_a_proration_date_no_preview_gave_is_refused(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    made_up = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()) - 30, UTC).isoformat()
    refused = await gql(
        client, CHANGE, {"input": {"planId": "TEAM", "prorationDate": made_up}}, token=bearer
    )
    assert error_codes(refused) == ["BAD_USER_INPUT"]
    assert refused["errors"][0]["message"] == PREVIEW_AGAIN
    assert subscription_posts(fake_stripe, subscription["id"]) == []


async def test_a_change_made_at_stripe_before_its_webhook_counts(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    team_price: str,
) -> None:
    """Moved to Team in the Billing Portal, the webhook not yet arrived: asking for Team
    again is refused as the current plan, not charged a second time."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    item = fake_stripe.subscriptions[subscription["id"]]["items"]["data"][0]["id"]
    await helpers.stripe_api(
        fake_stripe,
        "POST",
        f"/v1/subscriptions/{subscription['id']}",
        {"items[0][id]": item, "items[0][price]": team_price},
    )
    fake_stripe.reset_requests()

    refused = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert error_codes(refused) == ["BAD_USER_INPUT"]
    assert refused["errors"][0]["message"] == "You are on the Team plan already."
    assert subscription_posts(fake_stripe, subscription["id"]) == []
    assert (await me(client, bearer))["entitlements"] == TEAM


async def test_a_change_is_returned_though_its_invoice_could_not_be_reread(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    """Stripe charged the change; only the re-read of the invoices failed afterwards. The
    user is told the change happened (it did), and the invoice arrives with its webhook."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    invoices_before = set(fake_stripe.invoices)
    fake_stripe.fail_next(1, status=500, path="/v1/invoices", method="GET")

    changed = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert "errors" not in changed, changed
    assert changed["data"]["changePlan"]["planId"] == "TEAM"
    [proration] = [fake_stripe.invoices[i] for i in set(fake_stripe.invoices) - invoices_before]
    assert proration["status"] == "paid"
    assert len(subscription_posts(fake_stripe, subscription["id"])) == 1

    await deliver(client, fake_stripe.event("invoice.paid", proration))
    await runtime.worker.drain()
    assert (await me(client, bearer))["invoices"][0] == as_listed(proration)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (402, "authentication_required"),  # a card error
        (402, "invoice_payment_intent_requires_action"),  # error_if_incomplete's own code
        (400, "invoice_payment_intent_requires_action"),  # whichever error type it comes as
    ],
)
async def test_a_payment_needing_the_banks_confirmation_says_so(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pro_price: str,
    status: int,
    code: str,
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    fake_stripe.fail_next(
        1,
        status=status,
        code=code,
        path=f"/v1/subscriptions/{subscription['id']}",
        method="POST",
    )
    refused = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert error_codes(refused) == ["PAYMENT_PROVIDER_ERROR"]
    assert refused["errors"][0]["message"] == AUTHENTICATION_REQUIRED
    held = fake_stripe.subscriptions[subscription["id"]]
    assert held["items"]["data"][0]["price"]["id"] == pro_price


# --- A retry after Stripe acted and its answer was lost -----------------------------------


async def failed_upgrade(
    client: httpx.AsyncClient,
    fake: FakeStripe,
    runtime: Runtime,
    bearer: str,
    fault: Callable[..., None],
) -> tuple[dict[str, Any], set[str]]:
    """Subscribed to Pro, then `changePlan` to Team whose request to Stripe met `fault`
    (`lose_next_responses`: Stripe acted, the answer was lost; `drop_next_requests`: it
    never reached Stripe), so the user got `PAYMENT_PROVIDER_ERROR`. Returns the
    subscription and the invoices Stripe held before the change."""
    subscription = await subscribe(client, fake, runtime, bearer)
    invoices_before = set(fake.invoices)
    fault(1, path=f"/v1/subscriptions/{subscription['id']}", method="POST")
    lost = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert error_codes(lost) == ["PAYMENT_PROVIDER_ERROR"]
    return subscription, invoices_before


async def test_a_retried_plan_change_is_charged_once(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription, invoices_before = await failed_upgrade(
        client, fake_stripe, runtime, bearer, fake_stripe.lose_next_responses
    )
    reads_before = len(fake_stripe.requests_to("GET", "/v1/subscriptions"))
    retried = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert retried["data"]["changePlan"]["planId"] == "TEAM"
    # The state read after the retried change is the one the mutation decides on: one read.
    assert len(fake_stripe.requests_to("GET", "/v1/subscriptions")) == reads_before + 1

    first, second = subscription_posts(fake_stripe, subscription["id"])
    assert first.idempotency_key == second.idempotency_key
    assert second.replayed
    assert len(set(fake_stripe.invoices) - invoices_before) == 1  # one proration, paid once


@pytest.mark.parametrize("at_period_end", [True, False])
async def test_a_retried_cancellation_acts_once(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    at_period_end: bool,
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    method = "POST" if at_period_end else "DELETE"
    path = f"/v1/subscriptions/{subscription['id']}"
    fake_stripe.lose_next_responses(1, path=path, method=method)
    variables = {"input": {"atPeriodEnd": at_period_end}}

    lost = await gql(client, CANCEL, variables, token=bearer)
    assert error_codes(lost) == ["PAYMENT_PROVIDER_ERROR"]
    retried = await gql(client, CANCEL, variables, token=bearer)
    assert "errors" not in retried, retried
    status = retried["data"]["cancelSubscription"]["status"]
    assert status == ("ACTIVE" if at_period_end else "CANCELED")

    first, second = fake_stripe.requests_to(method, path)
    assert (first.idempotency_key, second.replayed) == (second.idempotency_key, True)


async def test_a_retried_resume_acts_once(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    await gql(client, CANCEL, token=bearer)
    fake_stripe.reset_requests()
    fake_stripe.lose_next_responses(
        1, path=f"/v1/subscriptions/{subscription['id']}", method="POST"
    )

    lost = await gql(client, RESUME, token=bearer)
    assert error_codes(lost) == ["PAYMENT_PROVIDER_ERROR"]
    retried = await gql(client, RESUME, token=bearer)
    assert retried["data"]["resumeSubscription"]["cancelAtPeriodEnd"] is False
    # The retry sends the unanswered change again with its key: Stripe replays its answer.
    first, second = subscription_posts(fake_stripe, subscription["id"])
    assert first.params == {"cancel_at_period_end": "false"}
    assert (second.params, second.idempotency_key) == (first.params, first.idempotency_key)
    assert second.replayed


async def test_cancel_then_resume_then_cancel_again_each_act(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    """The same action asked again after the state moved on is a new change, not a replay."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    for query in (CANCEL, RESUME, CANCEL):
        body = await gql(client, query, token=bearer)
        assert "errors" not in body, body
    assert fake_stripe.subscriptions[subscription["id"]]["cancel_at_period_end"] is True
    posts = subscription_posts(fake_stripe, subscription["id"])
    assert [p.replayed for p in posts] == [False, False, False]


async def test_a_declined_upgrade_retried_after_the_card_was_fixed_is_charged(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    team_price: str,
) -> None:
    """Stripe keeps a key's answer, a decline included: the retry is a new change with a new
    key, or it would be declined again whatever the card now holds."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    invoices_before = set(fake_stripe.invoices)
    fake_stripe.decline_next_payment()
    refused = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert refused["errors"][0]["message"] == DECLINED

    changed = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert changed["data"]["changePlan"]["priceId"] == team_price
    declined, charged = subscription_posts(fake_stripe, subscription["id"])
    assert declined.idempotency_key != charged.idempotency_key
    assert not charged.replayed
    assert len(set(fake_stripe.invoices) - invoices_before) == 1


async def test_a_change_whose_outcome_could_not_be_read_is_finished_by_its_retry(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    team_price: str,
) -> None:
    """Stripe made the change, then the re-read after it failed: the user is told a retry
    finishes it, and the retry replays the change (charged once) and reads again."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    invoices_before = set(fake_stripe.invoices)
    fake_stripe.fail_next(1, status=500, path="/v1/subscriptions", method="GET", after=1)

    unconfirmed = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert error_codes(unconfirmed) == ["PAYMENT_PROVIDER_ERROR"]
    assert unconfirmed["errors"][0]["message"] == UNCONFIRMED
    assert unconfirmed["errors"][0]["extensions"]["retryable"] is True

    retried = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert retried["data"]["changePlan"]["priceId"] == team_price
    made, replay = subscription_posts(fake_stripe, subscription["id"])
    assert (replay.idempotency_key, replay.replayed) == (made.idempotency_key, True)
    assert len(set(fake_stripe.invoices) - invoices_before) == 1


async def test_a_retried_cancellation_already_known_from_its_webhook_is_done(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    """Canceled at once, the answer lost, and `customer.subscription.deleted` processed
    before the retry: the retry answers with the canceled subscription, not NOT_FOUND."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    path = f"/v1/subscriptions/{subscription['id']}"
    fake_stripe.lose_next_responses(1, path=path, method="DELETE")
    now = {"input": {"atPeriodEnd": False}}
    assert error_codes(await gql(client, CANCEL, now, token=bearer)) == ["PAYMENT_PROVIDER_ERROR"]
    canceled = fake_stripe.subscriptions[subscription["id"]]
    await deliver(client, fake_stripe.event("customer.subscription.deleted", canceled))
    await runtime.worker.drain()

    retried = await gql(client, CANCEL, now, token=bearer)
    assert retried["data"]["cancelSubscription"]["status"] == "CANCELED"
    first, replay = fake_stripe.requests_to("DELETE", path)
    assert (replay.idempotency_key, replay.replayed) == (first.idempotency_key, True)


async def test_a_lost_change_is_not_sent_again_for_another_action(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    team_price: str,
) -> None:
    """The upgrade reached Stripe but its answer was lost; the user then cancels. The kept
    upgrade is not sent again: the re-read shows what Stripe did (Team, charged once), and
    the cancellation acts on that."""
    bearer = token("ada")
    subscription, invoices_before = await failed_upgrade(
        client, fake_stripe, runtime, bearer, fake_stripe.lose_next_responses
    )

    cancelled = await gql(client, CANCEL, token=bearer)
    assert cancelled["data"]["cancelSubscription"]["planId"] == "TEAM"
    assert cancelled["data"]["cancelSubscription"]["cancelAtPeriodEnd"] is True
    upgrade, cancel = subscription_posts(fake_stripe, subscription["id"])
    assert "items" in upgrade.params  # made once, not sent again
    assert cancel.params["cancel_at_period_end"] == "true"
    assert len(set(fake_stripe.invoices) - invoices_before) == 1
    held = fake_stripe.subscriptions[subscription["id"]]
    assert (held["items"]["data"][0]["price"]["id"], held["cancel_at_period_end"]) == (
        team_price,
        True,
    )


async def test_a_change_that_never_reached_stripe_is_not_made_by_a_later_action(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    pro_price: str,
) -> None:
    """The upgrade was lost on its way to Stripe and the user was told so; canceling at
    once afterwards must not upgrade (and charge) first."""
    bearer = token("ada")
    subscription, invoices_before = await failed_upgrade(
        client, fake_stripe, runtime, bearer, fake_stripe.drop_next_requests
    )

    canceled = await gql(client, CANCEL, {"input": {"atPeriodEnd": False}}, token=bearer)
    assert canceled["data"]["cancelSubscription"]["status"] == "CANCELED"
    assert subscription_posts(fake_stripe, subscription["id"]) == []
    held = fake_stripe.subscriptions[subscription["id"]]
    assert (held["items"]["data"][0]["price"]["id"], held["status"]) == (pro_price, "canceled")
    assert set(fake_stripe.invoices) == invoices_before


async def test_a_retried_change_that_never_reached_stripe_is_made_once(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    runtime: Runtime,
    team_price: str,
) -> None:
    bearer = token("ada")
    subscription, invoices_before = await failed_upgrade(
        client, fake_stripe, runtime, bearer, fake_stripe.drop_next_requests
    )

    retried = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert retried["data"]["changePlan"]["priceId"] == team_price
    [made] = subscription_posts(fake_stripe, subscription["id"])
    assert not made.replayed  # the first time Stripe heard of it
    assert len(set(fake_stripe.invoices) - invoices_before) == 1


async def test_a_retry_acts_on_the_state_stripe_holds_now_not_on_its_replay(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    """Canceled at period end, the answer lost; resumed in the Billing Portal meanwhile.
    Canceling again must cancel, not answer with the replay of the first cancellation."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    path = f"/v1/subscriptions/{subscription['id']}"
    fake_stripe.lose_next_responses(1, path=path, method="POST")
    lost = await gql(client, CANCEL, token=bearer)
    assert error_codes(lost) == ["PAYMENT_PROVIDER_ERROR"]
    resumed = await helpers.stripe_api(fake_stripe, "POST", path, {"cancel_at_period_end": "false"})
    await deliver(client, fake_stripe.event("customer.subscription.updated", resumed))
    await runtime.worker.drain()

    again = await gql(client, CANCEL, token=bearer)
    assert again["data"]["cancelSubscription"]["cancelAtPeriodEnd"] is True
    assert fake_stripe.subscriptions[subscription["id"]]["cancel_at_period_end"] is True
    assert (await me(client, bearer))["subscription"]["cancelAtPeriodEnd"] is True
    ours = [p for p in subscription_posts(fake_stripe, subscription["id"]) if p.idempotency_key]
    first, replay, cancel = ours  # the portal's resume came between the first two
    assert (replay.idempotency_key, replay.replayed) == (first.idempotency_key, True)
    assert (cancel.idempotency_key != first.idempotency_key, cancel.replayed) == (True, False)


async def test_a_stripe_500_leaves_the_change_to_its_retry(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    """Stripe asks for a 500 to be treated as indeterminate (and the SDK's retries hide
    whether an earlier try acted): the user is told a retry finishes the change, and the
    retry sends the same key, so the change is made at most once."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    invoices_before = set(fake_stripe.invoices)
    path = f"/v1/subscriptions/{subscription['id']}"
    fake_stripe.fail_next(1, status=500, path=path, method="POST")
    failed = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert failed["errors"][0]["message"] == UNCONFIRMED

    retried = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert retried["data"]["changePlan"]["planId"] == "TEAM"
    refused, made = subscription_posts(fake_stripe, subscription["id"])
    assert (refused.status, made.status) == (500, 200)
    assert made.idempotency_key == refused.idempotency_key
    assert len(set(fake_stripe.invoices) - invoices_before) == 1


async def test_a_key_still_in_use_keeps_the_change_for_its_retry(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    """Stripe answers 409 while the first request with a key is still running: the outcome
    is not known yet, so the retry sends the same key rather than a second change."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer)
    path = f"/v1/subscriptions/{subscription['id']}"
    fake_stripe.fail_next(1, status=409, code="idempotency_key_in_use", path=path, method="POST")
    busy = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert error_codes(busy) == ["PAYMENT_PROVIDER_ERROR"]
    assert busy["errors"][0]["extensions"]["retryable"] is True

    retried = await gql(client, CHANGE, {"input": {"planId": "TEAM"}}, token=bearer)
    assert retried["data"]["changePlan"]["planId"] == "TEAM"
    busy_post, made = subscription_posts(fake_stripe, subscription["id"])
    assert (busy_post.status, made.status) == (409, 200)
    assert made.idempotency_key == busy_post.idempotency_key


# --- The Stripe bucket -----------------------------------------------------------------------


class TestTheStripeBucket:
    @pytest.fixture
    def settings_overrides(
        self, stripe_settings: dict[str, Any], plans_file: Path
    ) -> dict[str, Any]:
        # Checkout, then the four management calls: the sixth Stripe-backed call is refused.
        return {
            **stripe_settings,
            "stripe_webhook_secret": SECRET,
            "plans_file": plans_file,
            "rate_limit_stripe_per_minute": 5,
        }

    async def test_each_management_call_counts(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        fake_stripe: FakeStripe,
        runtime: Runtime,
    ) -> None:
        bearer = token("ada")
        subscription = await subscribe(client, fake_stripe, runtime, bearer)
        for query, variables in [MANAGEMENT[3], *MANAGEMENT[:3]]:
            body = await gql(client, query, variables, token=bearer)
            assert "errors" not in body, body
        fake_stripe.reset_requests()
        refused = await gql(client, CANCEL, token=bearer)
        assert error_codes(refused) == ["RATE_LIMITED"]
        assert fake_stripe.requests == []
        assert fake_stripe.subscriptions[subscription["id"]]["cancel_at_period_end"] is False


# --- Checkout options and trials -------------------------------------------------------------


async def test_a_plans_checkout_options_reach_stripe(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    bearer = token("ada")
    body = await gql(client, CHECKOUT, {"input": {"planId": "STARTER"}}, token=bearer)
    assert "errors" not in body, body
    [create] = fake_stripe.requests_to("POST", "/v1/checkout/sessions")
    assert create.params["subscription_data"]["trial_period_days"] == "14"
    assert create.params["allow_promotion_codes"] == "true"
    assert create.params["automatic_tax"] == {"enabled": "true"}
    # Stripe Tax needs an address: Checkout saves the one entered to the customer.
    assert create.params["customer_update"] == {"address": "auto"}

    await gql(client, CHECKOUT, {"input": {"planId": "TEAM"}}, token=token("bob"))
    plain = fake_stripe.requests_to("POST", "/v1/checkout/sessions")[-1]
    assert "trial_period_days" not in plain.params["subscription_data"]
    for option in ("allow_promotion_codes", "automatic_tax", "customer_update"):
        assert option not in plain.params


async def test_a_trial_is_given_once(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    """A user who canceled their trial checks out again without a second one."""
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer, plan="STARTER")
    canceled = await helpers.stripe_api(
        fake_stripe, "DELETE", f"/v1/subscriptions/{subscription['id']}"
    )
    await deliver(client, fake_stripe.event("customer.subscription.deleted", canceled))
    await runtime.worker.drain()
    fake_stripe.reset_requests()

    body = await gql(client, CHECKOUT, {"input": {"planId": "STARTER"}}, token=bearer)
    assert "errors" not in body, body
    [again] = fake_stripe.requests_to("POST", "/v1/checkout/sessions")
    assert "trial_period_days" not in again.params.get("subscription_data", {})
    assert again.params["allow_promotion_codes"] == "true"  # the plan's other options stay


async def test_a_trial_canceled_before_its_warning_arrives_is_not_warned_of(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer, plan="STARTER")
    await helpers.stripe_api(fake_stripe, "DELETE", f"/v1/subscriptions/{subscription['id']}")
    await deliver(client, fake_stripe.event("customer.subscription.trial_will_end", subscription))
    await runtime.worker.drain()
    found = await me(client, bearer)
    assert found["notifications"] == []
    assert found["subscription"]["status"] == "CANCELED"


async def test_a_trial_shows_its_end_grants_the_plan_and_warns_before_it_ends(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe, runtime: Runtime
) -> None:
    bearer = token("ada")
    subscription = await subscribe(client, fake_stripe, runtime, bearer, plan="STARTER")
    assert subscription["status"] == "trialing"
    trial_end = subscription["trial_end"]
    assert trial_end == subscription["created"] + 14 * 86400

    found = await me(client, bearer)
    assert found["subscription"]["status"] == "TRIALING"
    assert found["subscription"]["trialEnd"] == iso(trial_end)
    assert found["entitlements"] == ["basic", "reports"]

    warning = fake_stripe.event("customer.subscription.trial_will_end", subscription)
    await deliver(client, warning)
    await deliver(client, warning)
    await runtime.worker.drain()
    ends = datetime.fromtimestamp(trial_end, UTC)
    assert (await me(client, bearer))["notifications"] == [
        {
            "kind": "trial_will_end",
            "message": f"Your Starter trial ends on {ends:%B %-d, %Y}. Add a payment method "
            "to keep your plan.",
            "url": None,
        }
    ]
