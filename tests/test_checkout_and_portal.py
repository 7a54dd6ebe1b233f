"""Checkout and the Billing Portal, with the real Stripe SDK talking to a fake Stripe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from app.cli import main
from tests.helpers import error_codes, gql
from tests.support.stripe import FakeStripe

CHECKOUT = "mutation($input: CreateCheckoutSessionInput) { createCheckoutSession(input: $input) { id url } }"
PORTAL = "mutation { createPortalSession { url } }"


@pytest.fixture
def settings_overrides(stripe_settings: dict[str, Any]) -> dict[str, Any]:
    return stripe_settings


async def checkout(
    client: httpx.AsyncClient, bearer: str, plan: str | None = None
) -> dict[str, Any]:
    variables = {"input": {"planId": plan}} if plan else {}
    return await gql(client, CHECKOUT, variables, token=bearer)


async def test_checkout_creates_a_customer_and_a_subscription_session(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pro_price: str,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("u1", email="ada@example.com", given_name="Ada", family_name="Lovelace")
    body = await checkout(client, bearer)

    session = body["data"]["createCheckoutSession"]
    assert session["id"].startswith("cs_test_")
    assert session["url"] == f"{fake_stripe.url}/c/pay/{session['id']}"

    assert [(r.method, r.path) for r in fake_stripe.requests] == [
        ("GET", "/v1/customers"),
        ("POST", "/v1/customers"),
        ("POST", "/v1/checkout/sessions"),
    ]
    listing, create, start = fake_stripe.requests
    assert listing.params["email"] == "ada@example.com"
    assert create.params == {
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "metadata": {"userId": "u1", "source": "billing-api"},
    }
    assert create.idempotency_key is not None
    assert create.idempotency_key.startswith("billing-api:customer:u1:first:")
    customer_id = next(iter(fake_stripe.customers))
    assert start.params == {
        "mode": "subscription",
        "customer": customer_id,
        "line_items": [{"price": pro_price, "quantity": "1"}],
        "client_reference_id": "u1",
        "metadata": {"userId": "u1"},
        "subscription_data": {"metadata": {"userId": "u1"}},
        "success_url": "http://localhost:3000/billing?checkout=success&session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://localhost:3000/billing?checkout=canceled",
    }

    me = await gql(
        client, "{ me { customer { id email name } subscription { planId status } } }", token=bearer
    )
    assert me["data"]["me"] == {
        "customer": {"id": customer_id, "email": "ada@example.com", "name": "Ada Lovelace"},
        "subscription": {"planId": "free", "status": "ACTIVE"},
    }
    assert await pg.fetchval("SELECT count(*) FROM customers") == 1


async def test_a_returning_user_reuses_their_customer(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("u1")
    first = (await checkout(client, bearer))["data"]["createCheckoutSession"]["id"]
    # A day later Stripe has expired the session unpaid; the user comes back.
    fake_stripe.expire_checkout(first)
    await pg.execute("UPDATE checkout_sessions SET expires_at = now() - interval '1 second'")
    fake_stripe.reset_requests()
    body = await checkout(client, bearer)
    assert "errors" not in body
    assert body["data"]["createCheckoutSession"]["id"] != first
    assert [(r.method, r.path) for r in fake_stripe.requests] == [("POST", "/v1/checkout/sessions")]
    assert len(fake_stripe.customers) == 1


async def test_checkout_needs_a_token(client: httpx.AsyncClient, fake_stripe: FakeStripe) -> None:
    body = await gql(client, CHECKOUT)
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert fake_stripe.requests == []


async def test_checkout_needs_a_verified_email(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    body = await checkout(client, token("u1", email_verified=False))
    assert error_codes(body) == ["EMAIL_NOT_VERIFIED"]
    assert fake_stripe.requests == []
    assert await pg.fetchval("SELECT count(*) FROM customers") == 0


@pytest.mark.parametrize("plan", ["ENTERPRISE", "free"])
async def test_checkout_for_a_plan_without_a_price_is_bad_input(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    plan: str,
) -> None:
    body = await checkout(client, token("u1"), plan)
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert fake_stripe.requests == []
    assert await pg.fetchval("SELECT count(*) FROM customers") == 0


@pytest.mark.parametrize("status", ["active", "trialing", "past_due"])
async def test_checkout_while_subscribed_is_refused(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    status: str,
) -> None:
    bearer = token("u1")
    await gql(client, "{ me { id } }", token=bearer)
    await pg.execute(
        "INSERT INTO subscriptions (user_id, plan_id, status, stripe_subscription_id) VALUES ('u1', 'PRO', $1, 'sub_1')",
        status,
    )
    body = await checkout(client, bearer)
    assert error_codes(body) == ["ALREADY_SUBSCRIBED"]
    assert fake_stripe.requests == []


async def test_checkout_after_a_canceled_subscription_is_allowed(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    bearer = token("u1")
    await gql(client, "{ me { id } }", token=bearer)
    await pg.execute(
        "INSERT INTO subscriptions (user_id, plan_id, status, stripe_subscription_id) VALUES ('u1', 'PRO', 'canceled', 'sub_1')"
    )
    assert "errors" not in await checkout(client, bearer)


async def test_a_verified_email_adopts_an_unclaimed_stripe_customer(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    existing = fake_stripe.add_customer(email="ada@example.com")
    await checkout(client, token("u1", email="ada@example.com"))
    assert fake_stripe.requests_to("POST", "/v1/customers") == [
        r
        for r in fake_stripe.requests_to("POST", "/v1/customers")
        if r.path == f"/v1/customers/{existing['id']}"
    ]
    assert fake_stripe.customers[existing["id"]]["metadata"] == {"userId": "u1"}
    assert len(fake_stripe.customers) == 1


async def test_another_users_stripe_customer_is_never_adopted(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    theirs = fake_stripe.add_customer(
        email="shared@example.com", metadata={"userId": "someone-else"}
    )
    await checkout(client, token("u1", email="shared@example.com"))
    linked = await pg.fetchval("SELECT stripe_customer_id FROM customers WHERE user_id = 'u1'")
    assert linked != theirs["id"]
    assert fake_stripe.customers[theirs["id"]]["metadata"] == {"userId": "someone-else"}
    assert fake_stripe.customers[linked]["metadata"]["userId"] == "u1"


async def test_an_unverified_email_never_searches_stripe(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    """Portal and checkout need a customer; an unverified email must not claim one."""
    fake_stripe.add_customer(email="victim@example.com")
    bearer = token("u1", email="victim@example.com", email_verified=False)
    await gql(client, "{ me { id } }", token=bearer)
    assert fake_stripe.requests_to("GET", "/v1/customers") == []
    for mutation in (CHECKOUT, PORTAL):
        await gql(client, mutation, token=bearer)
    assert fake_stripe.requests_to("GET", "/v1/customers") == []
    assert len(fake_stripe.customers) == 1  # the victim's alone: nothing adopted or made


async def test_twenty_parallel_checkouts_make_one_customer(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("racer", email="racer@example.com")
    bodies = await asyncio.gather(*(checkout(client, bearer) for _ in range(20)))
    assert all("errors" not in body for body in bodies), bodies
    assert len(fake_stripe.customers) == 1
    assert len(fake_stripe.requests_to("POST", "/v1/customers")) == 1
    assert await pg.fetchval("SELECT count(*) FROM customers WHERE user_id = 'racer'") == 1
    assert await pg.fetchval("SELECT count(*) FROM subscriptions WHERE user_id = 'racer'") == 1


async def test_a_stripe_500_is_retried_into_one_customer(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    fake_stripe.fail_next(1, status=500, path="/v1/customers", method="POST")
    body = await checkout(client, token("u1"))
    assert "errors" not in body
    creates = fake_stripe.requests_to("POST", "/v1/customers")
    assert len(creates) == 2
    assert creates[0].idempotency_key == creates[1].idempotency_key
    assert len(fake_stripe.customers) == 1


async def test_stripe_rate_limiting_is_retried(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    fake_stripe.fail_next(1, status=429, path="/v1/checkout/sessions")
    assert "errors" not in await checkout(client, token("u1"))
    sessions = fake_stripe.requests_to("POST", "/v1/checkout/sessions")
    assert [r.status for r in sessions] == [429, 200]


async def test_a_stripe_outage_is_a_clear_error_and_changes_nothing(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    fake_stripe.down = True
    body = await checkout(client, token("u1"))
    assert error_codes(body) == ["PAYMENT_PROVIDER_ERROR"]
    assert "try again" in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"]["retryable"] is True
    assert await pg.fetchval("SELECT count(*) FROM customers") == 0
    assert await pg.fetchval("SELECT count(*) FROM subscriptions") == 0


async def test_a_customer_deleted_in_stripe_is_replaced(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("u1")
    await checkout(client, bearer)
    old = await pg.fetchval("SELECT stripe_customer_id FROM customers WHERE user_id = 'u1'")
    fake_stripe.delete_customer_directly(old)

    body = await checkout(client, bearer)
    assert "errors" not in body
    new = await pg.fetchval("SELECT stripe_customer_id FROM customers WHERE user_id = 'u1'")
    assert new != old
    assert (
        fake_stripe.checkout_sessions[body["data"]["createCheckoutSession"]["id"]]["customer"]
        == new
    )
    me = await gql(client, "{ me { customer { id } } }", token=bearer)
    assert me["data"]["me"]["customer"]["id"] == new


class TestWithoutStripe:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"stripe_secret_key": None}

    async def test_stripe_backed_mutations_say_stripe_is_not_configured(
        self, client: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        assert error_codes(await checkout(client, token())) == ["STRIPE_NOT_CONFIGURED"]
        assert error_codes(await gql(client, PORTAL, token=token())) == ["STRIPE_NOT_CONFIGURED"]

    async def test_everything_else_works(
        self, client: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        assert (await gql(client, "{ me { id } }", token=token()))["data"]["me"]["id"] == "user-1"


async def test_portal_without_a_customer_is_not_found(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    body = await gql(client, PORTAL, token=token())
    assert error_codes(body) == ["NOT_FOUND"]
    assert fake_stripe.requests == []


async def test_portal_opens_for_the_callers_customer(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token()
    await checkout(client, bearer)
    fake_stripe.reset_requests()
    body = await gql(client, PORTAL, token=bearer)
    url = body["data"]["createPortalSession"]["url"]
    assert url.startswith(f"{fake_stripe.url}/p/session/")
    [request] = fake_stripe.requests
    assert request.params == {
        "customer": await pg.fetchval("SELECT stripe_customer_id FROM customers"),
        "return_url": "http://localhost:3000/billing",
    }


async def test_portal_for_a_customer_deleted_in_stripe_unlinks_it(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token()
    await checkout(client, bearer)
    fake_stripe.delete_customer_directly(
        await pg.fetchval("SELECT stripe_customer_id FROM customers")
    )
    body = await gql(client, PORTAL, token=bearer)
    assert error_codes(body) == ["NOT_FOUND"]
    assert await pg.fetchval("SELECT count(*) FROM customers") == 0
    # Ended as its `customer.deleted` would have ended it, so the user can subscribe again.
    me = await gql(
        client, "{ me { subscription { status } notifications { kind } } }", token=bearer
    )
    assert me["data"]["me"]["subscription"]["status"] == "CANCELED"
    assert me["data"]["me"]["notifications"] == [{"kind": "customer_deleted"}]
    assert "errors" not in await checkout(client, bearer)


class TestPortalConfiguration:
    @pytest.fixture
    def settings_overrides(self, stripe_settings: dict[str, Any]) -> dict[str, Any]:
        return {**stripe_settings, "stripe_portal_configuration_id": "bpc_configured"}

    async def test_the_configured_portal_configuration_is_used(
        self, client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
    ) -> None:
        bearer = token()
        await checkout(client, bearer)
        fake_stripe.reset_requests()
        await gql(client, PORTAL, token=bearer)
        assert fake_stripe.requests[0].params.get("configuration") == "bpc_configured"


def test_the_portal_config_command_creates_a_configuration(
    fake_stripe: FakeStripe,
    pro_price: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_fake")
    monkeypatch.setenv("STRIPE_API_BASE", fake_stripe.url)
    monkeypatch.setenv("STRIPE_PRICE_PRO", pro_price)
    monkeypatch.setenv("APP_URL", "https://app.example.com")
    assert main(["portal-config"]) == 0
    configuration_id = capsys.readouterr().out.strip()
    configuration = fake_stripe.portal_configurations[configuration_id]
    features = configuration["features"]
    assert configuration["business_profile"]["headline"]
    assert configuration["default_return_url"] == "https://app.example.com/billing"
    assert features["payment_method_update"]["enabled"] is True
    assert features["invoice_history"]["enabled"] is True
    assert sorted(features["customer_update"]["allowed_updates"]) == [
        "address",
        "email",
        "name",
        "phone",
        "tax_id",
    ]
    assert features["subscription_cancel"]["mode"] == "at_period_end"
    assert "too_expensive" in features["subscription_cancel"]["cancellation_reason"]["options"]
    update = features["subscription_update"]
    assert update["proration_behavior"] == "create_prorations"
    assert update["products"][0]["prices"] == [pro_price]


async def test_mutations_are_refused_over_get(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    response = await client.get(
        "/graphql", params={"query": PORTAL}, headers={"Authorization": f"Bearer {token()}"}
    )
    assert response.status_code in (400, 405)


async def test_a_retried_checkout_call_reuses_one_idempotency_key(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    fake_stripe.fail_next(1, status=500, path="/v1/checkout/sessions")
    body = await checkout(client, token())
    assert "errors" not in body
    first, retry = fake_stripe.requests_to("POST", "/v1/checkout/sessions")
    assert first.idempotency_key is not None
    assert first.idempotency_key == retry.idempotency_key
    assert len(fake_stripe.checkout_sessions) == 1
