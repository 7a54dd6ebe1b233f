"""Small helpers the tests share: GraphQL calls, a linked Stripe customer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import asyncpg

    from tests.support.stripe import FakeStripe

BASE = datetime(2026, 1, 1, tzinfo=UTC)


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
