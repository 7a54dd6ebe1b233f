"""Stripe's rate limit, kept by every process together; no connection waits on Stripe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from app.runtime import Runtime
from tests.helpers import error_codes, gql, link_customer, sign_up
from tests.support.stripe import FakeStripe

SYNC = "mutation { syncSubscription { planId status } }"


@pytest.fixture
def settings_overrides(stripe_settings: dict[str, Any]) -> dict[str, Any]:
    return {
        **stripe_settings,
        "stripe_max_requests_per_second": 4,
        "stripe_max_network_retries": 0,
        "stripe_timeout_seconds": 5.0,  # also how long a call may wait for its turn
    }


async def test_calls_beyond_the_budget_wait_their_turn_across_processes(
    two_processes: list[httpx.AsyncClient],
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    users = [f"u{n}" for n in range(8)]
    for n, user in enumerate(users):
        await sign_up(two_processes[n % 2], token(user))
        await link_customer(pg, fake_stripe, user, paid=False)
    fake_stripe.reset_requests()

    started = time.monotonic()
    bodies = await asyncio.gather(
        *(gql(two_processes[n % 2], SYNC, token=token(user)) for n, user in enumerate(users))
    )
    elapsed = time.monotonic() - started

    assert all("errors" not in body for body in bodies), bodies
    # Each sync reads the subscriptions and the invoices: 16 calls.
    assert len(fake_stripe.requests_to("GET", "/v1/subscriptions")) == 8
    assert len(fake_stripe.requests_to("GET", "/v1/invoices")) == 8
    # 4 a second, evenly spaced: the sixteenth call waited at least 15/4 s for its turn.
    assert elapsed >= 15 / 4 * 0.9


async def test_a_429_from_stripe_holds_every_process_back(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("ada")
    await sign_up(client, bearer)
    await link_customer(pg, fake_stripe, "ada", paid=False)
    fake_stripe.fail_next(1, status=429, path="/v1/subscriptions")

    body = await gql(client, SYNC, token=bearer)

    assert error_codes(body) == ["PAYMENT_PROVIDER_ERROR"]
    assert body["errors"][0]["extensions"]["retryable"] is True
    held_for = await pg.fetchval(
        "SELECT extract(epoch FROM tat - clock_timestamp()) FROM rate_limits "
        "WHERE user_id = '' AND bucket = 'stripe-api'"
    )
    assert held_for > 0.5


class TestAHangingStripe:
    """Stripe hangs while one user sends a dozen Stripe-backed calls at once: no pool
    connection is held meanwhile, so another user is served as usual."""

    @pytest.fixture
    def settings_overrides(self, stripe_settings: dict[str, Any]) -> dict[str, Any]:
        return {
            **stripe_settings,
            "db_pool_min_size": 1,
            "db_pool_max_size": 2,
            "db_acquire_timeout_seconds": 0.5,
            "stripe_timeout_seconds": 3.0,
            "stripe_max_network_retries": 0,
            "rate_limit_stripe_per_minute": 100,
        }

    async def test_another_user_is_served_while_one_waits_on_stripe(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        fake_stripe: FakeStripe,
        runtime: Runtime,
        pg: asyncpg.Connection,
    ) -> None:
        waiting = token("waiting")
        await sign_up(client, waiting)
        await link_customer(pg, fake_stripe, "waiting", paid=False)
        other = token("other")
        await sign_up(client, other)
        fake_stripe.latency = 1.5

        calls = [
            asyncio.create_task(gql(client, SYNC, token=waiting)),
            *(
                asyncio.create_task(
                    gql(client, "mutation { createPortalSession { url } }", token=waiting)
                )
                for _ in range(5)
            ),
            *(asyncio.create_task(gql(client, SYNC, token=waiting)) for _ in range(6)),
        ]
        await asyncio.sleep(0.3)  # all twelve are waiting on Stripe now
        assert runtime.pool.in_use == 0
        answers = [await gql(client, "{ me { id } }", token=other) for _ in range(20)]
        assert all(a == {"data": {"me": {"id": "other"}}} for a in answers), answers

        bodies = await asyncio.gather(*calls)
        assert all("errors" not in body for body in bodies), bodies
        # Concurrent syncs of one user share one read.
        assert len(fake_stripe.requests_to("GET", "/v1/subscriptions")) == 1
