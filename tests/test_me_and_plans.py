"""`me` and `plans`: what a signed-in user and an anonymous visitor see."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.helpers import error_codes, gql, sign_up

ME = "{ me { id email emailVerified firstName lastName phone customer { id } subscription { status } notifications { id } usageRecords { id } } }"


async def test_plans_answer_without_a_token(client: httpx.AsyncClient) -> None:
    body = await gql(client, "{ plans { id name priceId } }")
    assert body == {
        "data": {
            "plans": [
                {"id": "free", "name": "Free", "priceId": None},
                {"id": "PRO", "name": "Pro", "priceId": None},
            ]
        }
    }


@pytest.mark.parametrize("header", ["Bearer not-a-jwt", "Basic abc", "Bearer "])
async def test_plans_ignore_a_bad_token(client: httpx.AsyncClient, header: str) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ plans { id } }"}, headers={"Authorization": header}
    )
    assert response.json()["data"]["plans"][0]["id"] == "free"


@pytest.mark.parametrize("settings_overrides", [{"stripe_price_pro": "price_pro123"}])
async def test_pro_plan_is_priced_from_the_environment(client: httpx.AsyncClient) -> None:
    body = await gql(client, "{ plans { id priceId } }")
    assert {"id": "PRO", "priceId": "price_pro123"} in body["data"]["plans"]


PLANS_TOML = """
[[plans]]
id = "PRO"
name = "Pro"
amount = 1500
currency = "usd"
interval = "month"

[[plans]]
id = "TEAM"
name = "Team"
price_id = "price_team1"
amount = 4900
currency = "usd"
interval = "month"
"""


class TestPlansFile:
    @pytest.fixture
    def settings_overrides(self, tmp_path: Path) -> dict[str, Any]:
        path = tmp_path / "plans.toml"
        path.write_text(PLANS_TOML)
        return {"plans_file": path, "stripe_price_pro": "price_pro123"}

    async def test_a_plans_file_adds_plans_and_describes_pro(
        self, client: httpx.AsyncClient
    ) -> None:
        body = await gql(client, "{ plans { id name priceId amount currency interval } }")
        assert body["data"]["plans"] == [
            {
                "id": "free",
                "name": "Free",
                "priceId": None,
                "amount": 0,
                "currency": None,
                "interval": None,
            },
            {
                "id": "PRO",
                "name": "Pro",
                "priceId": "price_pro123",
                "amount": 1500,
                "currency": "usd",
                "interval": "month",
            },
            {
                "id": "TEAM",
                "name": "Team",
                "priceId": "price_team1",
                "amount": 4900,
                "currency": "usd",
                "interval": "month",
            },
        ]


async def test_me_answers_with_the_callers_own_profile(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    body = await gql(client, ME, token=token("user-a", email="a@example.com"))
    assert body == {
        "data": {
            "me": {
                "id": "user-a",
                "email": "a@example.com",
                "emailVerified": True,
                "firstName": None,
                "lastName": None,
                "phone": None,
                "customer": None,
                "subscription": None,
                "notifications": [],
                "usageRecords": [],
            }
        }
    }
    other = await gql(client, "{ me { id email } }", token=token("user-b", email="b@example.com"))
    assert other["data"]["me"] == {"id": "user-b", "email": "b@example.com"}


async def test_first_request_fills_the_profile_from_the_claims(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    first = token("u1", given_name="Ada", family_name="Lovelace", phone_number="+44 20 7946 0958")
    body = await gql(client, "{ me { firstName lastName phone } }", token=first)
    assert body["data"]["me"] == {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "phone": "+442079460958",
    }

    later = token("u1", given_name="Someone", family_name="Else", phone_number="+14155550100")
    body = await gql(client, "{ me { firstName lastName phone } }", token=later)
    assert body["data"]["me"] == {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "phone": "+442079460958",
    }


async def test_a_full_name_claim_is_split_into_first_and_last(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    body = await gql(
        client, "{ me { firstName lastName } }", token=token("u2", name="Grace Brewster Hopper")
    )
    assert body["data"]["me"] == {"firstName": "Grace", "lastName": "Brewster Hopper"}


async def test_unusable_profile_claims_are_dropped_not_fatal(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    body = await gql(
        client,
        "{ me { id firstName phone } }",
        token=token("u3", given_name="x" * 500, phone_number="not a phone"),
    )
    assert body["data"]["me"] == {"id": "u3", "firstName": None, "phone": None}


async def test_email_follows_the_latest_token(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    await gql(
        client, "{ me { id } }", token=token("u4", email="old@example.com", email_verified=False)
    )
    body = await gql(
        client,
        "{ me { email emailVerified } }",
        token=token("u4", email="new@example.com", email_verified=True),
    )
    assert body["data"]["me"] == {"email": "new@example.com", "emailVerified": True}


async def test_a_string_email_verified_claim_is_understood(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    body = await gql(client, "{ me { emailVerified } }", token=token("u5", email_verified="true"))
    assert body["data"]["me"]["emailVerified"] is True


async def test_racing_first_requests_create_one_user(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    bearer = token("racer", email="racer@example.com")
    bodies = await asyncio.gather(*(gql(client, "{ me { id } }", token=bearer) for _ in range(10)))
    assert all(body == {"data": {"me": {"id": "racer"}}} for body in bodies)
    assert await pg.fetchval("SELECT count(*) FROM users WHERE id = 'racer'") == 1


async def test_me_shows_the_stored_customer_subscription_and_lists(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    bearer = token("u6")
    await gql(client, "{ me { id } }", token=bearer)
    await pg.execute(
        "INSERT INTO customers (user_id, stripe_customer_id, email) VALUES ('u6', 'cus_123', 'u6@example.com')"
    )
    await pg.execute(
        "INSERT INTO subscriptions (user_id, plan_id, status) VALUES ('u6', 'PRO', 'past_due')"
    )
    for n in range(3):
        await pg.execute(
            "INSERT INTO notifications (user_id, kind, message, created_at) VALUES ('u6', 'info', $1, now() + make_interval(secs => $2))",
            f"note {n}",
            n,
        )
        await pg.execute(
            "INSERT INTO usage_records (user_id, metric, quantity, created_at) VALUES ('u6', 'api_calls', $1::int, now() + make_interval(secs => $1::int))",
            n + 1,
        )
    body = await gql(
        client,
        "{ me { customer { id email } subscription { planId status cancelAtPeriodEnd } notifications(first: 2) { message } usageRecords { quantity } } }",
        token=bearer,
    )
    assert body["data"]["me"] == {
        "customer": {"id": "cus_123", "email": "u6@example.com"},
        "subscription": {"planId": "PRO", "status": "PAST_DUE", "cancelAtPeriodEnd": False},
        "notifications": [{"message": "note 2"}, {"message": "note 1"}],
        "usageRecords": [{"quantity": 3}, {"quantity": 2}, {"quantity": 1}],
    }


@pytest.mark.parametrize("first", [0, -1, 101])
async def test_notifications_page_size_is_bounded(
    client: httpx.AsyncClient, token: Callable[..., str], first: int
) -> None:
    body = await gql(
        client,
        "query($n: Int!) { me { notifications(first: $n) { id } } }",
        {"n": first},
        token=token(),
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]


@pytest.mark.parametrize("first", [0, 101, 1000])
async def test_usage_records_page_size_is_bounded(
    client: httpx.AsyncClient, token: Callable[..., str], first: int
) -> None:
    body = await gql(
        client,
        "query($n: Int!) { me { usageRecords(first: $n) { id } } }",
        {"n": first},
        token=token(),
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_a_full_page_of_usage_records_is_served(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    bearer = token("pager")
    await sign_up(client, bearer)
    await pg.execute(
        "INSERT INTO usage_records (user_id, metric, quantity) "
        "SELECT 'pager', 'api_calls', n FROM generate_series(1, 120) AS n"
    )
    body = await gql(client, "{ me { usageRecords(first: 100) { quantity } } }", token=bearer)
    assert len(body["data"]["me"]["usageRecords"]) == 100
