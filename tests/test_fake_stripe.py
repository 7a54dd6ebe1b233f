"""The real ``stripe`` SDK (HTTPXClient, async) against :class:`FakeStripe` over loopback HTTP.

These tests pin down the fake's contract: if the SDK can talk to it and gets Stripe-shaped
objects, errors, retries and idempotency, the billing adapter can be tested against it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import httpx
import pytest
import stripe

from tests.support.stripe import API_VERSION, FakeStripe, parse_form, sign, signed_webhook

# stripe 16.1.0's HTTPXClient sends the form body as ``data=<str>``, which httpx 0.28
# deprecates; under ``filterwarnings = ["error"]`` that warning would surface as an
# APIConnectionError from inside the SDK. Ignore exactly that warning, nothing else
# (pyproject.toml carries the same filter; this keeps the module self-contained).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Use 'content=<...>' to upload raw bytes/text content.:DeprecationWarning"
)

WEBHOOK_SECRET = "whsec_test_secret"
SDK_IDEMPOTENCY_KEY = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def fake_stripe_server() -> Iterator[FakeStripe]:
    with FakeStripe() as fake_stripe:
        yield fake_stripe


@pytest.fixture
def fake_stripe(fake_stripe_server: FakeStripe) -> FakeStripe:
    """The module's fake, emptied (objects, requests, keys, faults) for each test."""
    fake_stripe_server.reset()
    return fake_stripe_server


def make_client(
    fake_stripe: FakeStripe, http_client: stripe.HTTPClient, api_key: str = "sk_test_fake"
) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": fake_stripe.url},
        http_client=http_client,
        max_network_retries=2,
    )


async def close(http_client: stripe.HTTPXClient) -> None:
    # StripeClient has no close(); the HTTP client we passed in owns the httpx.AsyncClient.
    await http_client.close_async()  # type: ignore[no-untyped-call]  # unannotated in the SDK


@pytest.fixture
async def stripe_client(fake_stripe: FakeStripe) -> AsyncIterator[stripe.StripeClient]:
    http_client = stripe.HTTPXClient()
    yield make_client(fake_stripe, http_client)
    await close(http_client)


# --- customers ---------------------------------------------------------------------------


async def test_customer_create_retrieve_update_list_delete(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    created = await stripe_client.v1.customers.create_async(
        {"email": "ada@example.com", "name": "Ada", "metadata": {"userId": "u1", "plan": "pro"}}
    )
    assert created.id.startswith("cus_")
    assert created.object == "customer"
    assert created.livemode is False
    assert created.email == "ada@example.com"
    assert created.metadata is not None
    assert created.metadata.to_dict() == {"userId": "u1", "plan": "pro"}
    assert isinstance(created.created, int)

    fetched = await stripe_client.v1.customers.retrieve_async(created.id)
    assert fetched.to_dict() == created.to_dict()

    updated = await stripe_client.v1.customers.update_async(
        created.id, {"name": "Ada L.", "metadata": {"plan": "", "team": "t1"}}
    )
    assert updated.name == "Ada L."
    assert updated.metadata is not None
    assert updated.metadata.to_dict() == {"userId": "u1", "team": "t1"}

    await stripe_client.v1.customers.create_async({"email": "other@example.com"})
    by_email = await stripe_client.v1.customers.list_async({"email": "ada@example.com"})
    assert by_email["object"] == "list"
    assert by_email.url == "/v1/customers"
    assert [c.id for c in by_email.data] == [created.id]
    assert by_email.has_more is False
    # Stripe's email filter is exact and case-sensitive.
    assert (await stripe_client.v1.customers.list_async({"email": "ADA@example.com"})).data == []

    deleted = await stripe_client.v1.customers.delete_async(created.id)
    assert deleted.to_dict() == {"id": created.id, "object": "customer", "deleted": True}

    again = await stripe_client.v1.customers.retrieve_async(created.id)
    assert again.to_dict() == {"id": created.id, "object": "customer", "deleted": True}
    assert fake_stripe.customers[created.id] == {
        "id": created.id,
        "object": "customer",
        "deleted": True,
    }
    remaining = await stripe_client.v1.customers.list_async()
    assert created.id not in [c.id for c in remaining.data]

    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.customers.update_async(created.id, {"name": "ghost"})
    assert excinfo.value.code == "resource_missing"


async def test_retrieve_missing_customer_is_resource_missing(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.customers.retrieve_async("cus_missing")
    err = excinfo.value
    assert err.http_status == 404
    assert err.code == "resource_missing"
    assert err.param == "id"
    assert err.user_message == "No such customer: 'cus_missing'"
    body = cast(dict[str, Any], err.json_body)["error"]
    assert body["type"] == "invalid_request_error"
    assert body["doc_url"] == "https://stripe.com/docs/error-codes/resource-missing"
    assert body["request_log_url"].startswith("https://dashboard.stripe.com/test/logs/req_")
    assert err.request_id is not None
    assert err.request_id.startswith("req_")
    assert err.headers is not None
    assert err.headers["stripe-version"] == API_VERSION
    assert err.headers["stripe-should-retry"] == "false"
    assert len(fake_stripe.requests_to("GET", "/v1/customers/")) == 1  # not retried


async def test_customer_list_is_newest_first_and_paginates(
    stripe_client: stripe.StripeClient,
) -> None:
    ids = [(await stripe_client.v1.customers.create_async({"name": f"c{i}"})).id for i in range(3)]
    first = await stripe_client.v1.customers.list_async({"limit": 2})
    assert [c.id for c in first.data] == [ids[2], ids[1]]
    assert first.has_more is True
    rest = await stripe_client.v1.customers.list_async({"limit": 2, "starting_after": ids[1]})
    assert [c.id for c in rest.data] == [ids[0]]
    assert rest.has_more is False
    assert [c.id async for c in first.auto_paging_iter()] == [ids[2], ids[1], ids[0]]


async def test_unknown_parameter_is_rejected(stripe_client: stripe.StripeClient) -> None:
    params = cast(Any, {"email": "a@example.com", "emial": "typo"})
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.customers.create_async(params)
    assert excinfo.value.code == "parameter_unknown"
    assert excinfo.value.param == "emial"


async def test_invalid_api_key_is_401(fake_stripe: FakeStripe) -> None:
    http_client = stripe.HTTPXClient()
    try:
        bad = make_client(fake_stripe, http_client, api_key="pk_test_publishable")
        with pytest.raises(stripe.AuthenticationError) as excinfo:
            await bad.v1.customers.list_async()
    finally:
        await close(http_client)
    assert excinfo.value.http_status == 401
    body = cast(dict[str, Any], excinfo.value.json_body)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("Invalid API Key provided: pk_test_")
    assert len(fake_stripe.requests) == 1


# --- idempotency, retries, faults ----------------------------------------------------------


async def test_idempotent_replay_returns_the_first_response(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    params: Any = {"email": "idem@example.com"}
    first = await stripe_client.v1.customers.create_async(params, {"idempotency_key": "signup-u1"})
    second = await stripe_client.v1.customers.create_async(params, {"idempotency_key": "signup-u1"})
    assert second.id == first.id
    assert len(fake_stripe.customers) == 1
    assert second.last_response is not None
    assert second.last_response.headers["idempotent-replayed"] == "true"
    posts = fake_stripe.requests_to("POST", "/v1/customers")
    assert [(r.idempotency_key, r.replayed) for r in posts] == [
        ("signup-u1", False),
        ("signup-u1", True),
    ]


async def test_idempotency_key_reused_with_other_params_is_an_error(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    await stripe_client.v1.customers.create_async(
        {"email": "a@example.com"}, {"idempotency_key": "k"}
    )
    with pytest.raises(stripe.IdempotencyError) as excinfo:
        await stripe_client.v1.customers.create_async(
            {"email": "b@example.com"}, {"idempotency_key": "k"}
        )
    assert excinfo.value.http_status == 400
    assert "same parameters" in excinfo.value.user_message
    assert len(fake_stripe.customers) == 1


async def test_sdk_retries_a_500_with_its_own_idempotency_key(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    fake_stripe.fail_next(1, status=500, path="/v1/customers", method="POST")
    customer = await stripe_client.v1.customers.create_async({"email": "retry@example.com"})
    posts = fake_stripe.requests_to("POST", "/v1/customers")
    assert [r.status for r in posts] == [500, 200]
    # The SDK generates one UUID-shaped key per call and reuses it for every retry.
    key = posts[0].idempotency_key
    assert key is not None
    assert SDK_IDEMPOTENCY_KEY.match(key)
    assert posts[1].idempotency_key == key
    assert list(fake_stripe.customers) == [customer.id]


async def test_sdk_retries_a_429_then_succeeds(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    fake_stripe.fail_next(1, status=429)
    await stripe_client.v1.customers.list_async()
    assert [r.status for r in fake_stripe.requests] == [429, 200]

    fake_stripe.fail_next(1, status=429)
    with pytest.raises(stripe.RateLimitError) as excinfo:
        await stripe_client.v1.customers.list_async(options={"max_network_retries": 0})
    body = cast(dict[str, Any], excinfo.value.json_body)["error"]
    assert body["code"] == "rate_limit"
    assert body["type"] == "invalid_request_error"
    assert excinfo.value.headers is not None
    assert excinfo.value.headers["stripe-should-retry"] == "true"


async def test_injected_500_surfaces_as_api_error_without_retries(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    fake_stripe.fail_next(1, status=500)
    with pytest.raises(stripe.APIError) as excinfo:
        await stripe_client.v1.customers.list_async(options={"max_network_retries": 0})
    assert excinfo.value.http_status == 500
    assert cast(dict[str, Any], excinfo.value.json_body)["error"]["type"] == "api_error"


async def test_down_makes_the_sdk_raise_after_its_retries(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    fake_stripe.down = True
    with pytest.raises(stripe.APIConnectionError):
        await stripe_client.v1.customers.create_async({"email": "down@example.com"})
    attempts = fake_stripe.requests_to("POST", "/v1/customers")
    assert len(attempts) == 3  # first try + max_network_retries=2
    assert {r.status for r in attempts} == {0}
    assert len({r.idempotency_key for r in attempts}) == 1

    fake_stripe.down_mode = "unavailable"
    with pytest.raises(stripe.APIError) as excinfo:
        await stripe_client.v1.customers.list_async(options={"max_network_retries": 0})
    assert excinfo.value.http_status == 503

    fake_stripe.down = False
    assert (await stripe_client.v1.customers.list_async()).data == []
    assert fake_stripe.customers == {}


async def test_latency_and_client_timeout(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    fake_stripe.latency = 0.05
    started = time.monotonic()
    await stripe_client.v1.customers.list_async()
    assert time.monotonic() - started >= 0.05

    fake_stripe.latency = 0.2
    fake_stripe.reset_requests()
    http_client = stripe.HTTPXClient(timeout=0.05)
    impatient = make_client(fake_stripe, http_client)
    try:
        with pytest.raises(stripe.APIConnectionError):
            await impatient.v1.customers.list_async(options={"max_network_retries": 0})
    finally:
        await close(http_client)
    while (
        not fake_stripe.requests
    ):  # the fake_stripe still answers (late); let it finish before moving on
        await asyncio.sleep(0.01)


async def test_failure_rate_fails_that_share_of_calls_with_a_retryable_500(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    fake_stripe.failure_rate = 1.0
    with pytest.raises(stripe.APIError) as excinfo:
        await stripe_client.v1.customers.create_async(
            {"email": "a@example.com"}, {"max_network_retries": 0}
        )
    assert excinfo.value.http_status == 500
    assert cast(dict[str, Any], excinfo.value.json_body)["error"]["type"] == "api_error"
    assert excinfo.value.headers is not None
    assert excinfo.value.headers["stripe-should-retry"] == "true"
    assert fake_stripe.customers == {}  # failed before executing

    fake_stripe.failure_rate = 0.5
    fake_stripe.seed(7)
    fake_stripe.reset_requests()
    outcomes = []
    for n in range(100):
        try:
            await stripe_client.v1.customers.create_async(
                {"email": f"c{n}@example.com"}, {"max_network_retries": 0}
            )
            outcomes.append(True)
        except stripe.APIError:
            outcomes.append(False)
    assert 30 <= outcomes.count(False) <= 70
    assert len(fake_stripe.customers) == outcomes.count(True)
    statuses = [r.status for r in fake_stripe.requests_to("POST", "/v1/customers")]
    assert statuses.count(500) == outcomes.count(False)

    # The SDK's own retries (idempotency key kept) mostly get through at 10 %.
    fake_stripe.failure_rate = 0.1
    for n in range(20):
        await stripe_client.v1.customers.create_async({"email": f"r{n}@example.com"})

    fake_stripe.reset()
    assert fake_stripe.failure_rate == 0.0


async def test_requests_record_the_api_key_they_presented(fake_stripe: FakeStripe) -> None:
    http_client = stripe.HTTPXClient()
    try:
        for key in ("sk_test_server_a", "sk_test_server_b"):
            await make_client(fake_stripe, http_client, key).v1.customers.list_async()
    finally:
        await close(http_client)
    assert [r.api_key for r in fake_stripe.requests] == ["sk_test_server_a", "sk_test_server_b"]


# --- checkout ------------------------------------------------------------------------------


async def test_checkout_session_for_a_seeded_price(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(
        unit_amount=1500, currency="usd", interval="month", product_name="Pro"
    )
    assert price["id"].startswith("price_")
    fetched_price = await stripe_client.v1.prices.retrieve_async(price["id"])
    assert fetched_price.recurring is not None
    assert fetched_price.recurring.interval == "month"
    assert fetched_price.unit_amount == 1500

    customer = await stripe_client.v1.customers.create_async({"email": "buyer@example.com"})
    session = await stripe_client.v1.checkout.sessions.create_async(
        {
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": price["id"], "quantity": 1}],
            "client_reference_id": "u1",
            "metadata": {"userId": "u1"},
            "subscription_data": {"metadata": {"userId": "u1"}},
            "success_url": "https://app.example/billing/success?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://app.example/billing/cancel",
        }
    )
    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session"
    assert session.url == f"{fake_stripe.url}/c/pay/{session.id}"
    assert session.status == "open"
    assert session.payment_status == "unpaid"
    assert session.customer == customer.id
    assert session.amount_total == 1500
    assert session.client_reference_id == "u1"
    assert session.subscription is None

    sent = fake_stripe.requests_to("POST", "/v1/checkout/sessions")[0].params
    assert sent["line_items"] == [{"price": price["id"], "quantity": "1"}]
    assert sent["subscription_data"] == {"metadata": {"userId": "u1"}}

    expanded = await stripe_client.v1.checkout.sessions.retrieve_async(
        session.id, {"expand": ["line_items"]}
    )
    assert expanded.line_items is not None
    assert [item.price.id for item in expanded.line_items.data if item.price] == [price["id"]]

    async with httpx.AsyncClient() as browser:
        page = await browser.get(session.url)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>Fake Stripe Checkout</title>" in page.text
    assert session.id in page.text


async def test_checkout_session_rejects_unknown_price_and_customer(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.checkout.sessions.create_async(
            {"mode": "subscription", "line_items": [{"price": "price_nope", "quantity": 1}]}
        )
    assert excinfo.value.http_status == 400
    assert excinfo.value.code == "resource_missing"
    assert excinfo.value.param == "line_items[0][price]"

    price = fake_stripe.add_price()
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.checkout.sessions.create_async(
            {
                "mode": "subscription",
                "customer": "cus_nope",
                "line_items": [{"price": price["id"], "quantity": 1}],
            }
        )
    assert excinfo.value.code == "resource_missing"
    assert excinfo.value.param == "customer"
    assert excinfo.value.user_message == "No such customer: 'cus_nope'"
    # 4xx user errors carry Stripe-Should-Retry: false, so the SDK does not retry them.
    assert [r.status for r in fake_stripe.requests_to("POST", "/v1/checkout/sessions")] == [
        400,
        400,
    ]
    assert fake_stripe.checkout_sessions == {}


async def test_completed_checkout_shows_up_as_a_subscription(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(interval="month")
    customer = await stripe_client.v1.customers.create_async({"email": "sub@example.com"})
    session = await stripe_client.v1.checkout.sessions.create_async(
        {
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": price["id"], "quantity": 1}],
            "subscription_data": {"metadata": {"userId": "u1"}},
            "success_url": "https://app.example/ok",
        }
    )
    before = int(time.time())
    created = fake_stripe.complete_checkout(session.id)
    assert created["status"] == "active"

    listing = await stripe_client.v1.subscriptions.list_async({"customer": customer.id})
    assert [s.id for s in listing.data] == [created["id"]]
    sub = listing.data[0]
    assert sub.id.startswith("sub_")
    assert sub.customer == customer.id
    assert sub.metadata.to_dict() == {"userId": "u1"}
    # Pinned API version: the billing period lives on each subscription item.
    assert "current_period_end" not in sub
    item = sub.items.data[0]
    assert item.id.startswith("si_")
    assert item.price.id == price["id"]
    assert item.current_period_start >= before
    assert 28 * 86400 <= item.current_period_end - item.current_period_start <= 31 * 86400

    completed = await stripe_client.v1.checkout.sessions.retrieve_async(session.id)
    assert completed.status == "complete"
    assert completed.payment_status == "paid"
    assert completed.subscription == sub.id

    scheduled = await stripe_client.v1.subscriptions.update_async(
        sub.id, {"cancel_at_period_end": True, "metadata": {"reason": "too pricey"}}
    )
    assert scheduled.cancel_at_period_end is True
    assert scheduled.cancel_at == item.current_period_end
    assert scheduled.metadata.to_dict() == {"userId": "u1", "reason": "too pricey"}

    canceled = await stripe_client.v1.subscriptions.cancel_async(sub.id)
    assert canceled.status == "canceled"
    assert canceled.canceled_at is not None
    assert canceled.ended_at is not None
    assert (await stripe_client.v1.subscriptions.list_async({"customer": customer.id})).data == []
    every = await stripe_client.v1.subscriptions.list_async(
        {"customer": customer.id, "status": "all", "expand": ["data.customer"]}
    )
    assert [s.id for s in every.data] == [sub.id]
    expanded_customer = every.data[0].customer
    assert isinstance(expanded_customer, stripe.Customer)
    assert expanded_customer.email == "sub@example.com"


async def test_hosted_checkout_pay_button_completes_and_redirects(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price()
    session = await stripe_client.v1.checkout.sessions.create_async(
        {
            "mode": "subscription",
            "customer_email": "new@example.com",
            "line_items": [{"price": price["id"], "quantity": 2}],
            "success_url": "https://app.example/ok?session_id={CHECKOUT_SESSION_ID}",
        }
    )
    assert session.customer is None
    async with httpx.AsyncClient() as browser:
        paid = await browser.post(f"{fake_stripe.url}/c/pay/{session.id}/complete")
    assert paid.status_code == 303
    assert paid.headers["location"] == f"https://app.example/ok?session_id={session.id}"

    completed = await stripe_client.v1.checkout.sessions.retrieve_async(session.id)
    assert completed.status == "complete"
    assert completed.url is None
    assert isinstance(completed.customer, str)  # created from customer_email, as Stripe does
    customer = await stripe_client.v1.customers.retrieve_async(completed.customer)
    assert customer.email == "new@example.com"
    assert completed.subscription is not None
    sub = await stripe_client.v1.subscriptions.retrieve_async(str(completed.subscription))
    assert sub.items.data[0].quantity == 2


async def test_concurrent_requests_are_safe(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    fake_stripe.latency = 0.01
    created = await asyncio.gather(
        *(
            stripe_client.v1.customers.create_async({"email": f"c{i}@example.com"})
            for i in range(20)
        )
    )
    assert len({c.id for c in created}) == 20
    assert len(fake_stripe.customers) == 20
    assert len(fake_stripe.requests_to("POST", "/v1/customers")) == 20


async def test_subscription_helpers_and_dashboard_deletion(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price()
    customer = await stripe_client.v1.customers.create_async({"email": "pd@example.com"})
    sub = fake_stripe.create_subscription(customer.id, price["id"], metadata={"userId": "u9"})
    fake_stripe.set_subscription_status(sub["id"], "past_due", current_period_end=1_900_000_000)
    fetched = await stripe_client.v1.subscriptions.retrieve_async(sub["id"])
    assert fetched.status == "past_due"
    assert fetched.items.data[0].current_period_end == 1_900_000_000

    fake_stripe.delete_customer_directly(customer.id)
    gone = await stripe_client.v1.customers.retrieve_async(customer.id)
    assert gone.deleted is True
    assert fake_stripe.subscriptions[sub["id"]]["status"] == "canceled"


# --- billing portal ------------------------------------------------------------------------


async def test_portal_configuration_and_session(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(product_name="Pro")
    config = await stripe_client.v1.billing_portal.configurations.create_async(
        {
            "business_profile": {"headline": "Manage your plan"},
            "default_return_url": "https://app.example/account",
            "features": {
                "customer_update": {"enabled": True, "allowed_updates": ["email", "address"]},
                "invoice_history": {"enabled": True},
                "subscription_cancel": {"enabled": True, "mode": "at_period_end"},
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "products": [{"product": price["product"], "prices": [price["id"]]}],
                },
            },
        }
    )
    assert config.id.startswith("bpc_")
    assert config.object == "billing_portal.configuration"
    assert config.business_profile.headline == "Manage your plan"
    assert config.features.customer_update.allowed_updates == ["email", "address"]
    assert config.features.subscription_cancel.mode == "at_period_end"
    products = config.features.subscription_update.products
    assert products is not None
    assert products[0].prices == [price["id"]]
    assert config.features.payment_method_update.enabled is False
    sent = fake_stripe.requests_to("POST", "/v1/billing_portal/configurations")[0].params
    assert sent["features"]["subscription_update"]["products"][0]["prices"] == [price["id"]]

    fetched = await stripe_client.v1.billing_portal.configurations.retrieve_async(config.id)
    assert fetched.to_dict() == config.to_dict()

    customer = await stripe_client.v1.customers.create_async({"email": "portal@example.com"})
    session = await stripe_client.v1.billing_portal.sessions.create_async(
        {"customer": customer.id, "configuration": config.id}
    )
    assert session.id.startswith("bps_")
    assert session.object == "billing_portal.session"
    assert session.configuration == config.id
    assert session.return_url == "https://app.example/account"
    assert session.url == f"{fake_stripe.url}/p/session/{session.id}"
    async with httpx.AsyncClient() as browser:
        page = await browser.get(session.url)
    assert page.status_code == 200
    assert session.id in page.text

    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.billing_portal.sessions.create_async({"customer": "cus_nope"})
    assert (excinfo.value.code, excinfo.value.param) == ("resource_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.billing_portal.sessions.create_async(
            {"customer": customer.id, "configuration": "bpc_nope"}
        )
    assert (excinfo.value.code, excinfo.value.param) == ("resource_missing", "configuration")


# --- webhooks & wire format ----------------------------------------------------------------


async def test_webhook_signature_verifies_with_the_sdk(fake_stripe: FakeStripe) -> None:
    price = fake_stripe.add_price()
    customer = fake_stripe.add_customer("hook@example.com")
    sub = fake_stripe.create_subscription(customer["id"], price["id"])
    event = fake_stripe.event(
        "customer.subscription.updated", sub, previous_attributes={"status": "trialing"}
    )
    assert event["id"].startswith("evt_")
    assert event["api_version"] == API_VERSION == stripe.api_version
    payload, headers = signed_webhook(event, WEBHOOK_SECRET)

    verified = stripe.Webhook.construct_event(
        payload, headers["Stripe-Signature"], WEBHOOK_SECRET, tolerance=300
    )
    assert verified.id == event["id"]
    assert verified.type == "customer.subscription.updated"
    assert verified.data.object["id"] == sub["id"]
    assert verified.data.previous_attributes is not None
    assert verified.data.previous_attributes["status"] == "trialing"

    rolled = sign(payload, "whsec_old", extra_secrets=[WEBHOOK_SECRET])
    assert rolled.count("v1=") == 2
    stripe.Webhook.construct_event(payload, rolled, WEBHOOK_SECRET, tolerance=300)

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            payload, headers["Stripe-Signature"], "whsec_wrong", tolerance=300
        )
    stale = sign(payload, WEBHOOK_SECRET, timestamp=int(time.time()) - 600)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stale, WEBHOOK_SECRET, tolerance=300)


async def test_requests_are_recorded_with_decoded_params(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    await stripe_client.v1.customers.list_async({"email": "x@example.com", "limit": 3})
    (recorded,) = fake_stripe.requests_to("GET", "/v1/customers")
    assert recorded.params == {"email": "x@example.com", "limit": "3"}
    assert recorded.idempotency_key is None  # the SDK only adds keys to POSTs
    assert recorded.stripe_version == API_VERSION
    assert recorded.status == 200
    fake_stripe.reset_requests()
    assert fake_stripe.requests == []


def test_parse_form_decodes_stripe_brackets() -> None:
    pairs = [
        ("metadata[userId]", "u1"),
        ("line_items[0][price]", "price_a"),
        ("line_items[0][quantity]", "1"),
        ("line_items[1][price]", "price_b"),
        ("features[subscription_update][products][0][prices][0]", "price_a"),
        ("features[subscription_update][products][0][prices][1]", "price_b"),
        ("expand[]", "customer"),
        ("expand[]", "subscription"),
        ("email", ""),
    ]
    assert parse_form(pairs) == {
        "metadata": {"userId": "u1"},
        "line_items": [{"price": "price_a", "quantity": "1"}, {"price": "price_b"}],
        "features": {"subscription_update": {"products": [{"prices": ["price_a", "price_b"]}]}},
        "expand": ["customer", "subscription"],
        "email": "",
    }


# --- subscriptions: several per customer, cancellation -------------------------------------


async def test_several_subscriptions_per_customer_and_their_cancellation(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    monthly = fake_stripe.add_price(unit_amount=1000, interval="month", product_name="Pro")
    yearly = fake_stripe.add_price(unit_amount=9000, interval="year", product_name="Archive")
    customer = fake_stripe.add_customer("many@example.com")
    first = fake_stripe.create_subscription(customer["id"], monthly["id"])
    second = fake_stripe.create_subscription(customer["id"], monthly["id"])
    listing = await stripe_client.v1.subscriptions.list_async({"customer": customer["id"]})
    assert [s.id for s in listing.data] == [second["id"], first["id"]]

    # A mixed-interval subscription: a yearly item next to the monthly one.
    mixed = await stripe_client.v1.subscriptions.update_async(
        first["id"], {"items": [{"price": yearly["id"]}], "proration_behavior": "none"}
    )
    ends = sorted(item.current_period_end for item in mixed.items.data)
    assert ends[1] - ends[0] > 300 * 86400

    at_min = await stripe_client.v1.subscriptions.update_async(
        first["id"], {"cancel_at": "min_period_end"}
    )
    assert (at_min.cancel_at, at_min.cancel_at_period_end) == (ends[0], False)
    assert at_min.canceled_at is not None
    at_max = await stripe_client.v1.subscriptions.update_async(
        first["id"], {"cancel_at": "max_period_end"}
    )
    assert at_max.cancel_at == ends[1]
    at_time = await stripe_client.v1.subscriptions.update_async(
        first["id"], {"cancel_at": ends[0] - 86400}
    )
    assert at_time.cancel_at == ends[0] - 86400
    kept = await stripe_client.v1.subscriptions.update_async(first["id"], {"cancel_at": ""})
    assert (kept.cancel_at, kept.canceled_at) == (None, None)

    # cancel_at_period_end also fills cancel_at; with mixed intervals it is the earliest end.
    at_end = await stripe_client.v1.subscriptions.update_async(
        first["id"], {"cancel_at_period_end": True}
    )
    assert (at_end.cancel_at_period_end, at_end.cancel_at) == (True, ends[0])
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.subscriptions.update_async(
            first["id"], {"cancel_at": "min_period_end", "cancel_at_period_end": True}
        )
    assert excinfo.value.code == "parameters_exclusive"

    # The Billing Portal's "cancel at period end": cancel_at set, cancel_at_period_end false.
    portal = fake_stripe.portal_cancel(second["id"], feedback="too_expensive")
    period_end = portal["items"]["data"][0]["current_period_end"]
    assert (portal["cancel_at"], portal["cancel_at_period_end"]) == (period_end, False)
    assert portal["cancellation_details"] == {
        "comment": None,
        "feedback": "too_expensive",
        "reason": "cancellation_requested",
    }
    fetched = await stripe_client.v1.subscriptions.retrieve_async(second["id"])
    assert (fetched.cancel_at, fetched.cancel_at_period_end) == (period_end, False)
    assert fetched.status == "active"

    await stripe_client.v1.subscriptions.cancel_async(second["id"])
    live = await stripe_client.v1.subscriptions.list_async({"customer": customer["id"]})
    assert [s.id for s in live.data] == [first["id"]]


async def test_subscription_list_expands_latest_invoice_of_each_item(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(unit_amount=1500)
    customer = fake_stripe.add_customer("expand@example.com")
    subs = [fake_stripe.create_subscription(customer["id"], price["id"]) for _ in range(2)]
    listing = await stripe_client.v1.subscriptions.list_async(
        {"customer": customer["id"], "expand": ["data.latest_invoice.payments"]}
    )
    assert len(listing.data) == 2
    for sub in listing.data:
        invoice = sub.latest_invoice
        assert isinstance(invoice, stripe.Invoice)
        assert invoice.id == fake_stripe.subscriptions[sub.id]["latest_invoice"]
        assert invoice.to_dict()["parent"]["subscription_details"]["subscription"] == sub.id
        assert invoice.payments is not None
        assert [p.amount_paid for p in invoice.payments.data] == [1500]
    plain = await stripe_client.v1.subscriptions.retrieve_async(subs[0]["id"])
    assert isinstance(plain.latest_invoice, str)


# --- invoices ------------------------------------------------------------------------------


async def checkout_subscription(
    stripe_client: stripe.StripeClient,
    fake_stripe: FakeStripe,
    price_id: str,
    **extra: Any,
) -> tuple[str, dict[str, Any]]:
    """A session completed in the fake: (session id, subscription)."""
    customer = await stripe_client.v1.customers.create_async({"email": "inv@example.com"})
    params: Any = {
        "mode": "subscription",
        "customer": customer.id,
        "line_items": [{"price": price_id, "quantity": 1}],
        "success_url": "https://app.example/ok",
        **extra,
    }
    session = await stripe_client.v1.checkout.sessions.create_async(params)
    return session.id, fake_stripe.complete_checkout(session.id)


async def test_a_new_subscription_has_a_paid_invoice_shaped_for_the_pinned_version(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(unit_amount=1500, product_name="Pro")
    _, sub = await checkout_subscription(
        stripe_client, fake_stripe, price["id"], subscription_data={"metadata": {"userId": "u1"}}
    )
    assert sub["latest_invoice"].startswith("in_")
    invoice = await stripe_client.v1.invoices.retrieve_async(sub["latest_invoice"])
    body = invoice.to_dict()
    # Pinned API version: no top-level subscription/charge/payment_intent on invoices.
    for gone in ("subscription", "charge", "payment_intent", "paid"):
        assert gone not in body
    assert "payments" not in body  # includable only
    assert body["parent"] == {
        "quote_details": None,
        "subscription_details": {
            "metadata": {"userId": "u1"},
            "subscription": sub["id"],
            "subscription_proration_date": None,
        },
        "type": "subscription_details",
    }
    assert invoice.status == "paid"
    assert invoice.billing_reason == "subscription_create"
    assert (invoice.amount_due, invoice.amount_paid, invoice.amount_remaining) == (1500, 1500, 0)
    assert invoice.customer == sub["customer"]
    assert invoice.number is not None
    assert re.fullmatch(r"[A-Z0-9]{8}-0001", invoice.number)
    assert invoice.status_transitions.finalized_at is not None
    assert invoice.status_transitions.paid_at is not None
    assert invoice.period_start == invoice.period_end == sub["created"]
    (line,) = invoice.lines.data
    item = sub["items"]["data"][0]
    assert line.amount == 1500
    assert line.description == "1 \u00d7 Pro (at $15.00 / month)"
    assert (line.period.start, line.period.end) == (
        item["current_period_start"],
        item["current_period_end"],
    )
    assert line.to_dict()["parent"]["subscription_item_details"]["subscription_item"] == item["id"]
    assert invoice.hosted_invoice_url is not None
    assert invoice.invoice_pdf is not None
    async with httpx.AsyncClient() as browser:
        page = await browser.get(invoice.hosted_invoice_url)
        pdf = await browser.get(invoice.invoice_pdf)
    assert page.status_code == 200
    assert invoice.number in page.text
    assert pdf.headers["content-type"] == "application/pdf"

    # Invoice payments: an InvoicePayment per payment, pointing at a PaymentIntent.
    payments = await stripe_client.v1.invoice_payments.list_async({"invoice": invoice.id})
    (payment,) = payments.data
    assert payment.object == "invoice_payment"
    assert payment.invoice == invoice.id
    assert (payment.status, payment.amount_paid, payment.is_default) == ("paid", 1500, True)
    assert payment.payment.type == "payment_intent"
    assert isinstance(payment.payment.payment_intent, str)
    assert payment.payment.payment_intent.startswith("pi_")
    expanded = await stripe_client.v1.invoices.retrieve_async(invoice.id, {"expand": ["payments"]})
    assert expanded.payments is not None
    assert [p.id for p in expanded.payments.data] == [payment.id]
    fetched_payment = await stripe_client.v1.invoice_payments.retrieve_async(payment.id)
    assert fetched_payment.to_dict() == payment.to_dict()


async def test_invoice_list_filters_and_errors(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(unit_amount=1000)
    ada = fake_stripe.add_customer("ada@example.com")
    bob = fake_stripe.add_customer("bob@example.com")
    sub_a = fake_stripe.create_subscription(ada["id"], price["id"])
    sub_b = fake_stripe.create_subscription(bob["id"], price["id"])
    failed = fake_stripe.fail_payment(sub_a["id"])

    by_customer = await stripe_client.v1.invoices.list_async({"customer": ada["id"]})
    assert [i.id for i in by_customer.data] == [failed["id"], sub_a["latest_invoice"]]
    assert by_customer.url == "/v1/invoices"
    by_sub = await stripe_client.v1.invoices.list_async({"subscription": sub_b["id"]})
    assert [i.id for i in by_sub.data] == [sub_b["latest_invoice"]]
    open_ones = await stripe_client.v1.invoices.list_async({"status": "open"})
    assert [i.id for i in open_ones.data] == [failed["id"]]
    # Filters are exact and case-sensitive.
    upper = await stripe_client.v1.invoices.list_async({"customer": ada["id"].upper()})
    assert upper.data == []
    recent = await stripe_client.v1.invoices.list_async({"created": {"gte": failed["created"]}})
    assert failed["id"] in [i.id for i in recent.data]
    assert (
        await stripe_client.v1.invoices.list_async({"created": {"gt": failed["created"] + 60}})
    ).data == []

    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.invoices.list_async(cast(Any, {"status": "OPEN"}))
    assert excinfo.value.param == "status"
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.invoices.retrieve_async("in_missing")
    assert (excinfo.value.http_status, excinfo.value.code) == (404, "resource_missing")
    assert excinfo.value.user_message == "No such invoice: 'in_missing'"


async def test_a_trial_starts_with_a_paid_invoice_for_zero(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(unit_amount=1500, product_name="Pro")
    session_id, sub = await checkout_subscription(
        stripe_client, fake_stripe, price["id"], subscription_data={"trial_period_days": 14}
    )
    assert sub["status"] == "trialing"
    assert sub["trial_end"] - sub["trial_start"] == 14 * 86400
    assert sub["items"]["data"][0]["current_period_end"] == sub["trial_end"]
    invoice = await stripe_client.v1.invoices.retrieve_async(sub["latest_invoice"])
    assert (invoice.status, invoice.amount_due, invoice.amount_paid) == ("paid", 0, 0)
    assert invoice.lines.data[0].description == "Trial period for Pro"
    assert invoice.lines.data[0].amount == 0
    payments = await stripe_client.v1.invoice_payments.list_async({"invoice": invoice.id})
    assert payments.data == []  # nothing was charged
    session = await stripe_client.v1.checkout.sessions.retrieve_async(session_id)
    assert session.payment_status == "no_payment_required"

    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.checkout.sessions.create_async(
            {
                "mode": "subscription",
                "line_items": [{"price": price["id"], "quantity": 1}],
                "subscription_data": {"trial_period_days": 0},
            }
        )
    assert excinfo.value.param == "subscription_data[trial_period_days]"


async def test_failed_renewal_then_paid_invoice(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(unit_amount=1500)
    customer = fake_stripe.add_customer("late@example.com")
    sub = fake_stripe.create_subscription(customer["id"], price["id"])
    old_end = sub["items"]["data"][0]["current_period_end"]

    failed = fake_stripe.fail_payment(sub["id"])
    assert failed["billing_reason"] == "subscription_cycle"
    assert (failed["status"], failed["attempted"], failed["attempt_count"]) == ("open", True, 1)
    assert failed["next_payment_attempt"] is not None
    assert (failed["amount_due"], failed["amount_remaining"]) == (1500, 1500)
    event = fake_stripe.event("invoice.payment_failed", failed)
    assert event["data"]["object"]["id"] == failed["id"]
    past_due = await stripe_client.v1.subscriptions.retrieve_async(sub["id"])
    assert past_due.status == "past_due"
    assert past_due.latest_invoice == failed["id"]
    assert past_due.items.data[0].current_period_start == old_end  # the period renewed
    (payment,) = (
        await stripe_client.v1.invoice_payments.list_async({"invoice": failed["id"]})
    ).data
    assert (payment.status, payment.amount_paid) == ("open", None)

    # Paying through the API with the card still declined: 402, the invoice stays open.
    fake_stripe.decline_next_payment()
    with pytest.raises(stripe.CardError) as excinfo:
        await stripe_client.v1.invoices.pay_async(failed["id"])
    assert excinfo.value.http_status == 402
    assert excinfo.value.code == "card_declined"
    body = cast(dict[str, Any], excinfo.value.json_body)["error"]
    assert (body["type"], body["decline_code"]) == ("card_error", "generic_decline")
    assert fake_stripe.invoices[failed["id"]]["attempt_count"] == 2

    paid = await stripe_client.v1.invoices.pay_async(failed["id"])
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 1500, 0)
    assert (await stripe_client.v1.subscriptions.retrieve_async(sub["id"])).status == "active"
    with pytest.raises(stripe.InvalidRequestError):
        await stripe_client.v1.invoices.pay_async(failed["id"])

    # The test-side helper pays as the customer would (e.g. on the hosted page).
    again = fake_stripe.fail_payment(sub["id"])
    assert fake_stripe.subscriptions[sub["id"]]["status"] == "past_due"
    assert fake_stripe.pay_invoice(again["id"])["status"] == "paid"
    assert fake_stripe.subscriptions[sub["id"]]["status"] == "active"


async def test_void_and_mark_uncollectible(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(unit_amount=1500)
    customer = fake_stripe.add_customer("void@example.com")
    sub = fake_stripe.create_subscription(customer["id"], price["id"])
    first = fake_stripe.fail_payment(sub["id"])

    bad_debt = await stripe_client.v1.invoices.mark_uncollectible_async(first["id"])
    assert bad_debt.status == "uncollectible"
    assert bad_debt.status_transitions.marked_uncollectible_at is not None
    voided = await stripe_client.v1.invoices.void_invoice_async(first["id"])
    assert voided.status == "void"
    assert voided.status_transitions.voided_at is not None
    (payment,) = (await stripe_client.v1.invoice_payments.list_async({"invoice": first["id"]})).data
    assert payment.status == "canceled"

    for action in (
        stripe_client.v1.invoices.void_invoice_async,
        stripe_client.v1.invoices.mark_uncollectible_async,
        stripe_client.v1.invoices.pay_async,
    ):
        with pytest.raises(stripe.InvalidRequestError) as excinfo:
            await action(first["id"])  # void is final
        assert excinfo.value.http_status == 400
    with pytest.raises(stripe.InvalidRequestError):
        await stripe_client.v1.invoices.void_invoice_async(sub["latest_invoice"])  # paid


async def test_only_a_one_off_draft_can_be_deleted(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(unit_amount=1500)
    customer = fake_stripe.add_customer("drafts@example.com")
    sub = fake_stripe.create_subscription(customer["id"], price["id"])
    draft = await stripe_client.v1.invoices.create_async({"customer": customer["id"]})
    assert (draft.status, draft.parent, draft.amount_due) == ("draft", None, 0)

    deleted = await stripe_client.v1.invoices.delete_async(draft.id)
    assert (deleted.id, deleted.deleted) == (draft.id, True)
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await stripe_client.v1.invoices.retrieve_async(draft.id)
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await stripe_client.v1.invoices.delete_async(sub["latest_invoice"])  # a subscription's
    assert refused.value.http_status == 400
    with pytest.raises(stripe.InvalidRequestError) as no_customer:
        await stripe_client.v1.invoices.create_async({})
    assert no_customer.value.code == "parameter_missing"


# --- refunds -------------------------------------------------------------------------------


async def test_refunds_partial_full_and_too_much(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    customer = fake_stripe.add_customer("refund@example.com")
    pi = fake_stripe.add_payment(customer["id"], 2000)
    assert pi["status"] == "succeeded"

    partial = await stripe_client.v1.refunds.create_async(
        {
            "payment_intent": pi["id"],
            "amount": 500,
            "reason": "requested_by_customer",
            "metadata": {"ticket": "T-1"},
        },
        {"idempotency_key": "refund-T-1"},
    )
    assert partial.id.startswith("re_")
    assert partial.object == "refund"
    assert (partial.amount, partial.currency, partial.status) == (500, "usd", "succeeded")
    assert (partial.payment_intent, partial.charge) == (pi["id"], pi["latest_charge"])
    assert partial.reason == "requested_by_customer"
    assert partial.metadata is not None
    assert partial.metadata.to_dict() == {"ticket": "T-1"}
    replay = await stripe_client.v1.refunds.create_async(
        {
            "payment_intent": pi["id"],
            "amount": 500,
            "reason": "requested_by_customer",
            "metadata": {"ticket": "T-1"},
        },
        {"idempotency_key": "refund-T-1"},
    )
    assert replay.id == partial.id
    assert fake_stripe.charges[pi["latest_charge"]]["amount_refunded"] == 500

    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.refunds.create_async({"payment_intent": pi["id"], "amount": 1600})
    assert excinfo.value.param == "amount"
    assert excinfo.value.user_message == (
        "Refund amount ($16.00) is greater than unrefunded amount on charge ($15.00)"
    )

    rest = await stripe_client.v1.refunds.create_async({"charge": pi["latest_charge"]})
    assert rest.amount == 1500  # the whole remainder by default
    charge = fake_stripe.charges[pi["latest_charge"]]
    assert (charge["amount_refunded"], charge["refunded"]) == (2000, True)

    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.refunds.create_async({"payment_intent": pi["id"]})
    assert excinfo.value.code == "charge_already_refunded"
    assert excinfo.value.user_message == f"Charge {pi['latest_charge']} has already been refunded."

    listing = await stripe_client.v1.refunds.list_async({"payment_intent": pi["id"]})
    assert [r.id for r in listing.data] == [rest.id, partial.id]
    assert (await stripe_client.v1.refunds.retrieve_async(rest.id)).amount == 1500

    for params in (
        {"payment_intent": "pi_missing"},
        {"charge": "ch_missing"},
        {"amount": 100},
    ):
        with pytest.raises(stripe.InvalidRequestError) as excinfo:
            await stripe_client.v1.refunds.create_async(cast(Any, params))
        assert excinfo.value.http_status == 400
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.refunds.create_async(
            cast(Any, {"payment_intent": pi["id"], "reason": "changed_mind"})
        )
    assert excinfo.value.param == "reason"


async def test_refund_of_an_invoice_payment(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(unit_amount=1500)
    customer = fake_stripe.add_customer("sub-refund@example.com")
    sub = fake_stripe.create_subscription(customer["id"], price["id"])
    (payment,) = (
        await stripe_client.v1.invoice_payments.list_async({"invoice": sub["latest_invoice"]})
    ).data
    pi_id = payment.payment.payment_intent
    assert isinstance(pi_id, str)
    refund = await stripe_client.v1.refunds.create_async({"payment_intent": pi_id})
    assert refund.amount == 1500

    failed = fake_stripe.fail_payment(sub["id"])
    (unpaid,) = (await stripe_client.v1.invoice_payments.list_async({"invoice": failed["id"]})).data
    with pytest.raises(stripe.InvalidRequestError):
        await stripe_client.v1.refunds.create_async(
            {"payment_intent": str(unpaid.payment.payment_intent)}
        )


# --- checkout sessions ---------------------------------------------------------------------


async def test_checkout_session_list_filters_expiry_and_events(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(unit_amount=1500)
    one_time = fake_stripe.add_price(unit_amount=700, interval=None, product_name="Credits")
    customer = await stripe_client.v1.customers.create_async({"email": "cs@example.com"})
    params: Any = {
        "mode": "subscription",
        "customer": customer.id,
        "line_items": [{"price": price["id"], "quantity": 1}],
    }
    completed = await stripe_client.v1.checkout.sessions.create_async(params)
    expired = await stripe_client.v1.checkout.sessions.create_async(params)
    still_open = await stripe_client.v1.checkout.sessions.create_async(params)
    paid_once = await stripe_client.v1.checkout.sessions.create_async(
        {
            "mode": "payment",
            "customer": customer.id,
            "line_items": [{"price": one_time["id"], "quantity": 2}],
        }
    )
    sub = fake_stripe.complete_checkout(completed.id)
    fake_stripe.complete_checkout(paid_once.id)
    expired_now = await stripe_client.v1.checkout.sessions.expire_async(expired.id)
    assert (expired_now.status, expired_now.url) == ("expired", None)
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.checkout.sessions.expire_async(expired.id)
    assert excinfo.value.user_message == (
        'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout '
        'Session has a status of "expired".'
    )
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.checkout.sessions.expire_async("cs_test_missing")
    assert excinfo.value.code == "resource_missing"

    sessions = stripe_client.v1.checkout.sessions
    everything = await sessions.list_async({"customer": customer.id})
    assert [s.id for s in everything.data] == [
        paid_once.id,
        still_open.id,
        expired.id,
        completed.id,
    ]
    assert everything.url == "/v1/checkout/sessions"
    assert [s.id for s in (await sessions.list_async({"status": "open"})).data] == [still_open.id]
    assert [s.id for s in (await sessions.list_async({"status": "expired"})).data] == [expired.id]
    by_sub = await sessions.list_async({"subscription": sub["id"]})
    assert [s.id for s in by_sub.data] == [completed.id]
    paid = fake_stripe.checkout_sessions[paid_once.id]
    assert paid["payment_status"] == "paid"
    assert fake_stripe.payment_intents[paid["payment_intent"]]["amount"] == 1400
    by_pi = await sessions.list_async({"payment_intent": paid["payment_intent"]})
    assert [s.id for s in by_pi.data] == [paid_once.id]
    by_email = await sessions.list_async({"customer_details": {"email": "cs@example.com"}})
    assert paid_once.id in [s.id for s in by_email.data]
    assert (await sessions.list_async({"customer": customer.id.upper()})).data == []
    assert (
        await sessions.list_async({"created": {"lt": completed.created}})
    ).data == []  # exact timestamps work like every created filter
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await sessions.list_async(cast(Any, {"status": "completed"}))
    assert excinfo.value.param == "status"

    # The fake does not send webhooks: the helpers' results (and the stored sessions) are
    # what a test wraps with fake.event().
    done = fake_stripe.event(
        "checkout.session.completed", fake_stripe.checkout_sessions[completed.id]
    )
    assert done["data"]["object"]["subscription"] == sub["id"]
    gone = fake_stripe.expire_checkout(still_open.id)
    assert fake_stripe.event("checkout.session.expired", gone)["data"]["object"]["status"] == (
        "expired"
    )


async def test_checkout_promotion_codes_tax_and_trial_parameters(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(unit_amount=1500)
    base: Any = {"mode": "subscription", "line_items": [{"price": price["id"], "quantity": 1}]}
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.checkout.sessions.create_async(
            cast(Any, {**base, "allow_promotion_codes": True, "discounts": [{"coupon": "SPRING"}]})
        )
    assert excinfo.value.code == "parameters_exclusive"
    assert excinfo.value.user_message == (
        "You may only specify one of these parameters: allow_promotion_codes, discounts."
    )
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.checkout.sessions.create_async(
            cast(Any, {**base, "discounts": [{"coupon": "SPRING"}]})
        )
    assert (excinfo.value.code, excinfo.value.param) == ("resource_missing", "discounts[0][coupon]")

    customer = await stripe_client.v1.customers.create_async({"email": "tax@example.com"})
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        # No address on the customer and none saved from Checkout: Stripe cannot tax.
        await stripe_client.v1.checkout.sessions.create_async(
            cast(Any, {**base, "customer": customer.id, "automatic_tax": {"enabled": True}})
        )
    assert excinfo.value.param == "automatic_tax[enabled]"

    session_params: Any = {
        **base,
        "customer": customer.id,
        "customer_update": {"address": "auto"},
        "allow_promotion_codes": True,
        "automatic_tax": {"enabled": True},
        "subscription_data": {"trial_period_days": 7},
    }
    session = await stripe_client.v1.checkout.sessions.create_async(session_params)
    assert session.allow_promotion_codes is True
    assert session.automatic_tax.enabled is True
    assert session.automatic_tax.status == "requires_location_inputs"
    assert session.automatic_tax.liability is not None
    assert session.automatic_tax.liability.type == "self"
    sub = fake_stripe.complete_checkout(session.id)
    assert sub["status"] == "trialing"
    assert sub["trial_end"] - sub["created"] == 7 * 86400
    assert sub["automatic_tax"]["enabled"] is True
    completed = await stripe_client.v1.checkout.sessions.retrieve_async(session.id)
    assert completed.automatic_tax.status == "complete"


# --- price swaps and invoice previews -----------------------------------------------------


def swap_setup(fake_stripe: FakeStripe) -> tuple[dict[str, Any], str, int]:
    """A 10 USD/month subscription, a 30 USD/month price, and the middle of the period."""
    basic = fake_stripe.add_price(unit_amount=1000, product_name="Basic")
    business = fake_stripe.add_price(unit_amount=3000, product_name="Business")
    customer = fake_stripe.add_customer("swap@example.com")
    sub = fake_stripe.create_subscription(customer["id"], basic["id"])
    item = sub["items"]["data"][0]
    start, end = item["current_period_start"], item["current_period_end"]
    return sub, business["id"], start + (end - start) // 2


async def test_price_swap_with_always_invoice_is_invoiced_and_paid(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    sub, business, middle = swap_setup(fake_stripe)
    item = sub["items"]["data"][0]
    updated = await stripe_client.v1.subscriptions.update_async(
        sub["id"],
        {
            "items": [{"id": item["id"], "price": business}],
            "proration_behavior": "always_invoice",
            "proration_date": middle,
        },
    )
    assert updated.items.data[0].price.id == business
    assert updated.items.data[0].id == item["id"]
    assert updated.status == "active"
    assert updated.latest_invoice != sub["latest_invoice"]
    invoice = await stripe_client.v1.invoices.retrieve_async(str(updated.latest_invoice))
    assert invoice.billing_reason == "subscription_update"
    assert [(line.amount, line.description) for line in invoice.lines.data] == [
        (-500, f"Unused time on Basic after {time.strftime('%d %b %Y', time.gmtime(middle))}"),
        (
            1500,
            f"Remaining time on Business after {time.strftime('%d %b %Y', time.gmtime(middle))}",
        ),
    ]
    for line in invoice.lines.data:
        details = line.to_dict()["parent"]["subscription_item_details"]
        assert details["proration"] is True
        assert details["invoice_item"].startswith("ii_")
        assert (line.period.start, line.period.end) == (middle, item["current_period_end"])
    assert (invoice.status, invoice.amount_due, invoice.amount_paid) == ("paid", 1000, 1000)


async def test_price_swap_payment_behaviors_when_the_card_is_declined(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    sub, business, middle = swap_setup(fake_stripe)
    item_id = sub["items"]["data"][0]["id"]
    swap: Any = {
        "items": [{"id": item_id, "price": business}],
        "proration_behavior": "always_invoice",
        "proration_date": middle,
    }

    fake_stripe.decline_next_payment()
    with pytest.raises(stripe.CardError) as excinfo:
        await stripe_client.v1.subscriptions.update_async(
            sub["id"],
            cast(Any, {**swap, "payment_behavior": "error_if_incomplete"}),
            {"idempotency_key": "declined-once"},
        )
    assert (excinfo.value.http_status, excinfo.value.code) == (402, "card_declined")
    unchanged = fake_stripe.subscriptions[sub["id"]]
    assert unchanged["items"]["data"][0]["price"]["id"] != business
    assert unchanged["latest_invoice"] == sub["latest_invoice"]
    assert len(fake_stripe.invoices) == 1
    # Stripe keeps the decline for the key: the same request again is declined again,
    # although the card would pay now.
    with pytest.raises(stripe.CardError) as replayed:
        await stripe_client.v1.subscriptions.update_async(
            sub["id"],
            cast(Any, {**swap, "payment_behavior": "error_if_incomplete"}),
            {"idempotency_key": "declined-once"},
        )
    assert replayed.value.code == "card_declined"
    assert fake_stripe.requests[-1].replayed
    assert len(fake_stripe.invoices) == 1

    fake_stripe.decline_next_payment()
    pending = await stripe_client.v1.subscriptions.update_async(
        sub["id"], cast(Any, {**swap, "payment_behavior": "pending_if_incomplete"})
    )
    assert pending.status == "active"
    assert pending.items.data[0].price.id != business  # not applied until paid
    assert pending.pending_update is not None
    assert pending.pending_update.subscription_items is not None
    assert pending.pending_update.subscription_items[0].price.id == business
    open_invoice = fake_stripe.invoices[str(pending.latest_invoice)]
    assert (open_invoice["status"], open_invoice["amount_due"]) == ("open", 1000)
    fake_stripe.pay_invoice(open_invoice["id"])
    applied = await stripe_client.v1.subscriptions.retrieve_async(sub["id"])
    assert applied.pending_update is None
    assert applied.items.data[0].price.id == business
    with pytest.raises(stripe.InvalidRequestError):
        await stripe_client.v1.subscriptions.update_async(
            sub["id"],
            cast(
                Any, {**swap, "payment_behavior": "pending_if_incomplete", "metadata": {"a": "b"}}
            ),
        )


async def test_price_swap_allow_incomplete_and_default_incomplete_leave_past_due(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    for behavior in ("allow_incomplete", "default_incomplete"):
        sub, business, middle = swap_setup(fake_stripe)
        fake_stripe.decline_next_payment()
        updated = await stripe_client.v1.subscriptions.update_async(
            sub["id"],
            {
                "items": [{"id": sub["items"]["data"][0]["id"], "price": business}],
                "proration_behavior": "always_invoice",
                "proration_date": middle,
                "payment_behavior": cast(Any, behavior),
            },
        )
        assert updated.status == "past_due"
        assert updated.items.data[0].price.id == business  # applied anyway
        invoice = fake_stripe.invoices[str(updated.latest_invoice)]
        assert invoice["status"] == "open"
        assert invoice["attempted"] is (behavior == "allow_incomplete")
        fake_stripe.pay_invoice(invoice["id"])
        assert fake_stripe.subscriptions[sub["id"]]["status"] == "active"
        fake_stripe.reset()


async def test_create_prorations_waits_for_the_next_invoice_which_the_preview_shows(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    sub, business, middle = swap_setup(fake_stripe)
    item = sub["items"]["data"][0]
    details: Any = {
        "items": [{"id": item["id"], "price": business}],
        "proration_date": middle,
    }
    preview = await stripe_client.v1.invoices.create_preview_async(
        {"customer": sub["customer"], "subscription": sub["id"], "subscription_details": details}
    )
    assert preview.id.startswith("upcoming_in_")
    assert (preview.status, preview.number, preview.billing_reason) == ("draft", None, "upcoming")
    assert preview.to_dict()["parent"]["subscription_details"]["subscription_proration_date"] == (
        middle
    )
    # Credit for unused Basic, charge for remaining Business, then the next month of Business.
    assert [line.amount for line in preview.lines.data] == [-500, 1500, 3000]
    assert preview.amount_due == 4000
    next_line = preview.lines.data[2]
    assert next_line.period.start == item["current_period_end"]
    assert next_line.to_dict()["parent"]["subscription_item_details"]["proration"] is False
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.invoices.retrieve_async(preview.id)
    assert excinfo.value.code == "resource_missing"  # previews are not stored

    immediate = await stripe_client.v1.invoices.create_preview_async(
        {
            "subscription": sub["id"],
            "subscription_details": cast(Any, {**details, "proration_behavior": "always_invoice"}),
        }
    )
    assert [line.amount for line in immediate.lines.data] == [-500, 1500]
    assert immediate.amount_due == 1000
    without = await stripe_client.v1.invoices.create_preview_async(
        {
            "subscription": sub["id"],
            "subscription_details": {
                "items": details["items"],
                "proration_behavior": "none",
            },
        }
    )
    assert [line.amount for line in without.lines.data] == [3000]
    with pytest.raises(stripe.InvalidRequestError):
        await stripe_client.v1.invoices.create_preview_async(
            {
                "subscription": sub["id"],
                "subscription_details": cast(Any, {**details, "proration_behavior": "none"}),
            }
        )

    # The same change, applied: nothing is invoiced now, the prorations are pending...
    updated = await stripe_client.v1.subscriptions.update_async(
        sub["id"], {"items": details["items"], "proration_date": middle}
    )
    assert updated.latest_invoice == sub["latest_invoice"]
    # ...and the next preview (no change asked) shows them before the next period.
    after = await stripe_client.v1.invoices.create_preview_async({"subscription": sub["id"]})
    assert [line.amount for line in after.lines.data] == [-500, 1500, 3000]
    # At the renewal they are invoiced with the new period.
    renewal = fake_stripe.fail_payment(sub["id"])
    assert [line["amount"] for line in renewal["lines"]["data"]] == [-500, 1500, 3000]


async def test_preview_of_a_new_subscription_and_errors(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price(unit_amount=1500, product_name="Pro")
    customer = fake_stripe.add_customer("new@example.com")
    preview = await stripe_client.v1.invoices.create_preview_async(
        {"customer": customer["id"], "subscription_details": {"items": [{"price": price["id"]}]}}
    )
    assert preview.amount_due == 1500
    assert preview.lines.data[0].description == "1 \u00d7 Pro (at $15.00 / month)"
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.invoices.create_preview_async({"customer": customer["id"]})
    assert excinfo.value.code == "parameter_missing"
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.invoices.create_preview_async({"subscription": "sub_missing"})
    assert (excinfo.value.code, excinfo.value.param) == ("resource_missing", "subscription")


async def test_interval_change_resets_the_billing_period_and_invoices_at_once(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    sub, _, middle = swap_setup(fake_stripe)
    yearly = fake_stripe.add_price(unit_amount=10000, interval="year", product_name="Yearly")
    updated = await stripe_client.v1.subscriptions.update_async(
        sub["id"],
        {
            "items": [{"id": sub["items"]["data"][0]["id"], "price": yearly["id"]}],
            "proration_date": middle,
        },
    )
    item = updated.items.data[0]
    assert item.current_period_start == middle
    assert 365 * 86400 <= item.current_period_end - middle <= 366 * 86400
    invoice = fake_stripe.invoices[str(updated.latest_invoice)]
    assert [line["amount"] for line in invoice["lines"]["data"]] == [-500, 10000]
    assert (invoice["status"], invoice["amount_paid"]) == ("paid", 9500)


# --- entitlements --------------------------------------------------------------------------


async def test_active_entitlements_and_their_summary_event(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    customer = fake_stripe.add_customer("ent@example.com")
    listing = await stripe_client.v1.entitlements.active_entitlements.list_async(
        {"customer": customer["id"]}
    )
    assert (listing.data, listing.has_more) == ([], False)

    summary = fake_stripe.set_active_entitlements(customer["id"], ["export", "api-access"])
    listing = await stripe_client.v1.entitlements.active_entitlements.list_async(
        {"customer": customer["id"]}
    )
    assert listing.url == "/v1/entitlements/active_entitlements"
    assert sorted(e.lookup_key for e in listing.data) == ["api-access", "export"]
    for ent in listing.data:
        assert ent.object == "entitlements.active_entitlement"
        assert ent.id.startswith("ent_test_")
        assert isinstance(ent.feature, str)
        assert ent.feature.startswith("feat_test_")

    event = fake_stripe.event("entitlements.active_entitlement_summary.updated", summary)
    payload, headers = signed_webhook(event, WEBHOOK_SECRET)
    verified = stripe.Webhook.construct_event(
        payload, headers["Stripe-Signature"], WEBHOOK_SECRET, tolerance=300
    )
    obj = verified.data.object
    assert obj["object"] == "entitlements.active_entitlement_summary"
    assert obj["customer"] == customer["id"]
    assert sorted(e["lookup_key"] for e in obj["entitlements"]["data"]) == [
        "api-access",
        "export",
    ]

    # Keys kept keep their entitlement; one feature per lookup key across customers.
    export_id = next(e.id for e in listing.data if e.lookup_key == "export")
    fake_stripe.set_active_entitlements(customer["id"], ["export"])
    (left,) = (
        await stripe_client.v1.entitlements.active_entitlements.list_async(
            {"customer": customer["id"]}
        )
    ).data
    assert left.id == export_id
    other = fake_stripe.add_customer("other@example.com")
    other_summary = fake_stripe.set_active_entitlements(other["id"], ["export"])
    assert other_summary["entitlements"]["data"][0]["feature"] == left.feature

    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.entitlements.active_entitlements.list_async(cast(Any, {"limit": 5}))
    assert (excinfo.value.code, excinfo.value.param) == ("parameter_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        await stripe_client.v1.entitlements.active_entitlements.list_async(
            {"customer": "cus_missing"}
        )
    assert excinfo.value.code == "resource_missing"


# --- list limits & auto-pagination ---------------------------------------------------------


async def test_every_list_endpoint_keeps_limits_between_1_and_100(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    customer = fake_stripe.add_customer("limits@example.com")
    v1 = stripe_client.v1
    listers: list[tuple[str, Any, dict[str, Any]]] = [
        ("customers", v1.customers.list_async, {}),
        ("prices", v1.prices.list_async, {}),
        ("subscriptions", v1.subscriptions.list_async, {}),
        ("invoices", v1.invoices.list_async, {}),
        ("invoice_payments", v1.invoice_payments.list_async, {}),
        ("refunds", v1.refunds.list_async, {}),
        ("checkout sessions", v1.checkout.sessions.list_async, {}),
        ("portal configurations", v1.billing_portal.configurations.list_async, {}),
        (
            "active entitlements",
            v1.entitlements.active_entitlements.list_async,
            {"customer": customer["id"]},
        ),
    ]
    for name, lister, base in listers:
        for limit, bound in ((0, "greater than or equal to 1"), (101, "less than or equal to 100")):
            with pytest.raises(stripe.InvalidRequestError) as excinfo:
                await lister({**base, "limit": limit})
            assert (excinfo.value.param, excinfo.value.code) == (
                "limit",
                "parameter_invalid_integer",
            ), name
            assert excinfo.value.user_message == f"This value must be {bound}.", name
        assert (await lister({**base, "limit": 100})).has_more is False, name

    # Default 10, with has_more.
    price = fake_stripe.add_price()
    for _ in range(11):
        fake_stripe.create_subscription(customer["id"], price["id"])
    page = await v1.invoices.list_async()
    assert (len(page.data), page.has_more) == (10, True)
    pays = await v1.invoice_payments.list_async()
    assert (len(pays.data), pays.has_more) == (10, True)


async def test_auto_paging_iter_walks_150_subscriptions(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price = fake_stripe.add_price()
    customer = fake_stripe.add_customer("pages@example.com")
    created = [
        fake_stripe.create_subscription(customer["id"], price["id"])["id"] for _ in range(150)
    ]
    fake_stripe.reset_requests()
    first = await stripe_client.v1.subscriptions.list_async(
        {"customer": customer["id"], "limit": 100}
    )
    assert (len(first.data), first.has_more) == (100, True)
    # stripe-python 16: auto_paging_iter() returns an iterator usable with `async for`,
    # fetching the next pages with list_async (starting_after = last id of each page).
    seen = [sub.id async for sub in first.auto_paging_iter()]
    assert seen == list(reversed(created))
    pages = fake_stripe.requests_to("GET", "/v1/subscriptions")
    assert [r.params.get("starting_after") for r in pages] == [None, seen[99]]
    assert all(r.params["customer"] == customer["id"] for r in pages)

    # Backwards from the oldest with ending_before.
    oldest = await stripe_client.v1.subscriptions.list_async(
        {"customer": customer["id"], "limit": 100, "ending_before": created[0]}
    )
    assert [s.id for s in oldest.data] == list(reversed(created[1:101]))
    assert oldest.has_more is True


async def test_a_lost_response_is_replayed_for_a_retry_with_the_same_key(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    """Stripe acted, the answer never arrived: the SDK's retry gets the stored answer."""
    fake_stripe.lose_next_responses(1, path="/v1/customers", method="POST")
    customer = await stripe_client.v1.customers.create_async(
        {"email": "lost@example.com"}, {"idempotency_key": "key-lost-1"}
    )
    first, retry = fake_stripe.requests_to("POST", "/v1/customers")
    assert (first.idempotency_key, retry.idempotency_key) == ("key-lost-1", "key-lost-1")
    assert (first.replayed, retry.replayed) == (False, True)
    assert list(fake_stripe.customers) == [customer.id]


async def test_a_dropped_request_never_reaches_stripe(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    """The network failed on the way: nothing was done, and the SDK's retry with the same
    key acts for the first time."""
    fake_stripe.drop_next_requests(1, path="/v1/customers", method="POST")
    customer = await stripe_client.v1.customers.create_async(
        {"email": "dropped@example.com"}, {"idempotency_key": "key-dropped-1"}
    )
    [only] = fake_stripe.requests_to("POST", "/v1/customers")
    assert (only.idempotency_key, only.replayed) == ("key-dropped-1", False)
    assert list(fake_stripe.customers) == [customer.id]
