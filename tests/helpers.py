"""Small helpers the tests share: GraphQL calls, a linked Stripe customer, signed webhook
deliveries, a paid checkout, calls to the fake Stripe as the Dashboard would make them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from tests.support.stripe import sign

if TYPE_CHECKING:
    import asyncpg

    from app.runtime import Runtime
    from tests.support.stripe import FakeStripe

BASE = datetime(2026, 1, 1, tzinfo=UTC)
CHECKOUT = (
    "mutation($input: CreateCheckoutSessionInput) { createCheckoutSession(input: $input) "
    "{ id url } }"
)


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def sign_up(client: httpx.AsyncClient, bearer: str) -> None:
    """The user's first request, which provisions them."""
    body = await gql(client, "{ me { id } }", token=bearer)
    assert "errors" not in body, body


async def link_customer(
    pg: asyncpg.Connection, fake_stripe: FakeStripe, user_id: str, *, paid: bool = True
) -> str:
    """A Stripe customer in the fake, linked to the user as checkout would leave it; `paid`
    adds the active PRO subscription a paid checkout leaves."""
    customer = fake_stripe.add_customer(
        email=f"{user_id}@example.com", name=f"Name of {user_id}", metadata={"userId": user_id}
    )
    await pg.execute(
        "INSERT INTO customers (user_id, stripe_customer_id, email, name, created_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        user_id,
        customer["id"],
        customer["email"],
        customer["name"],
        BASE,
    )
    if paid:
        await pg.execute(
            "INSERT INTO subscriptions (user_id, plan_id, status, stripe_subscription_id, "
            "price_id, current_period_end) VALUES ($1, 'PRO', 'active', $2, 'price_pro', $3)",
            user_id,
            f"sub_of_{user_id}",
            BASE + timedelta(days=30),
        )
    customer_id: str = customer["id"]
    return customer_id


async def post_webhook(
    client: httpx.AsyncClient,
    event: dict[str, Any] | bytes,
    secret: str,
    *,
    timestamp: int | None = None,
    header: str | None = None,
) -> httpx.Response:
    """POST an event to `/webhooks/stripe` as Stripe would: signed with `secret` now (or at
    `timestamp`), or with the `Stripe-Signature` `header` given."""
    payload = event if isinstance(event, bytes) else json.dumps(event).encode()
    signature = header if header is not None else sign(payload, secret, timestamp)
    return await client.post(
        "/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )


async def deliver(client: httpx.AsyncClient, event: dict[str, Any], secret: str) -> None:
    """An event delivered and recorded (2xx), its processing left to the worker."""
    response = await post_webhook(client, event, secret)
    assert response.status_code == 200, response.text


async def paid_checkout(
    client: httpx.AsyncClient,
    fake: FakeStripe,
    runtime: Runtime,
    bearer: str,
    secret: str,
    plan: str | None = None,
) -> dict[str, Any]:
    """Checkout (for `plan`, else the default), paid, and `customer.subscription.created`
    processed: returns the subscription as the fake holds it."""
    variables = {"input": {"planId": plan}} if plan else {}
    body = await gql(client, CHECKOUT, variables, token=bearer)
    assert "errors" not in body, body
    subscription = fake.complete_checkout(body["data"]["createCheckoutSession"]["id"])
    await deliver(client, fake.event("customer.subscription.created", subscription), secret)
    await runtime.worker.drain()
    return subscription


async def stripe_api(
    fake: FakeStripe, method: str, path: str, data: dict[str, str] | None = None
) -> dict[str, Any]:
    """A call to the fake's API as the Dashboard or the Billing Portal would make it."""
    async with httpx.AsyncClient(
        base_url=fake.url, headers={"Authorization": "Bearer sk_test_fake"}
    ) as http:
        response = await http.request(method, path, data=data)
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found


def iso(seconds: int | None) -> str | None:
    """Unix seconds as the API's DateTime shows them."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()
