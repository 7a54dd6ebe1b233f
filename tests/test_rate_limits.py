"""Per-user rate limits on Stripe-backed mutations, exports and deletions, held in PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from app.runtime import Runtime
from tests.helpers import error_codes, gql, link_customer, sign_up
from tests.support.stripe import FakeStripe

CHECKOUT = "mutation { createCheckoutSession { id url } }"
PORTAL = "mutation { createPortalSession { url } }"
SYNC = "mutation { syncSubscription { planId status } }"
EXPORT = "{ export { userProfile { id } stripeCustomer exportTimestamp } }"
DELETE = "mutation { deleteAccount { success message } }"

MESSAGE = re.compile(r"^Too many (.+) requests; try again in (\d+) seconds?\.$")


@pytest.fixture
def limits() -> dict[str, int]:
    """Small limits, so that each bucket trips within a few requests."""
    return {
        "rate_limit_stripe_per_minute": 2,
        "rate_limit_export_per_hour": 2,
        "rate_limit_delete_per_hour": 1,
    }


@pytest.fixture
def settings_overrides(stripe_settings: dict[str, Any], limits: dict[str, int]) -> dict[str, Any]:
    """No network retries, so that calls to a Stripe that is down fail at once."""
    return {**stripe_settings, "stripe_max_network_retries": 0, **limits}


def refusal(body: dict[str, Any]) -> tuple[str, int]:
    """The refused operation's noun and retry-after hint, after checking the error's shape."""
    assert error_codes(body) == ["RATE_LIMITED"], body
    [error] = body["errors"]
    match = MESSAGE.match(error["message"])
    assert match, error["message"]
    retry_after = error["extensions"]["retryAfter"]
    assert isinstance(retry_after, int)
    assert retry_after >= 1
    assert int(match.group(2)) == retry_after
    return match.group(1), retry_after


async def test_checkouts_beyond_the_limit_are_refused_without_asking_stripe(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("ada")
    for _ in range(2):
        assert "errors" not in await gql(client, CHECKOUT, token=bearer)
    fake_stripe.reset_requests()

    body = await gql(client, CHECKOUT, token=bearer)

    what, retry_after = refusal(body)
    assert what == "billing"
    assert 29 <= retry_after <= 30  # 2 a minute: the next one is due 30 s after the first
    assert body["data"] is None
    assert fake_stripe.requests == []
    assert len(fake_stripe.checkout_sessions) == 1  # the second returned the open one
    assert await pg.fetchval("SELECT count(*) FROM customers") == 1


@pytest.mark.parametrize("mutation", [CHECKOUT, PORTAL, SYNC], ids=["checkout", "portal", "sync"])
async def test_each_stripe_backed_mutation_is_limited(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    mutation: str,
) -> None:
    bearer = token("ada")
    await sign_up(client, bearer)
    await link_customer(pg, fake_stripe, "ada", paid=False)
    for _ in range(2):
        assert "errors" not in await gql(client, mutation, token=bearer)
    made = len(fake_stripe.requests)
    assert made >= 2

    assert refusal(await gql(client, mutation, token=bearer))[0] == "billing"
    assert len(fake_stripe.requests) == made


async def test_the_stripe_backed_mutations_share_one_limit_and_failures_count(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("ada")
    await sign_up(client, bearer)
    await link_customer(pg, fake_stripe, "ada", paid=False)
    fake_stripe.down = True
    assert error_codes(await gql(client, SYNC, token=bearer)) == ["PAYMENT_PROVIDER_ERROR"]
    assert error_codes(await gql(client, PORTAL, token=bearer)) == ["PAYMENT_PROVIDER_ERROR"]
    fake_stripe.down = False
    fake_stripe.reset_requests()

    refusal(await gql(client, CHECKOUT, token=bearer))
    assert fake_stripe.requests == []
    assert fake_stripe.checkout_sessions == {}


async def test_another_user_is_not_affected(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    for _ in range(2):
        await gql(client, SYNC, token=token("ada"))
    refusal(await gql(client, SYNC, token=token("ada")))

    body = await gql(client, SYNC, token=token("bob"))
    assert body == {"data": {"syncSubscription": None}}


async def test_exports_are_limited_and_the_download_answers_429_with_retry_after(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("ada")
    await sign_up(client, bearer)
    await link_customer(pg, fake_stripe, "ada", paid=False)
    headers = {"Authorization": f"Bearer {bearer}"}
    # The GraphQL `export` and the download share one limit.
    assert "errors" not in await gql(client, EXPORT, token=bearer)
    assert (await client.get("/account/export", headers=headers)).status_code == 200
    fake_stripe.reset_requests()

    response = await client.get("/account/export", headers=headers)

    assert response.status_code == 429
    assert response.headers["content-type"] == "application/json"
    what, retry_after = refusal(response.json())
    assert what == "data export"
    assert response.headers["retry-after"] == str(retry_after)
    assert 1790 <= retry_after <= 1800  # 2 an hour: the next one is due 30 min after the first
    assert "content-disposition" not in response.headers

    body = await gql(client, EXPORT, token=bearer)
    assert refusal(body)[0] == "data export"
    assert body["data"] is None
    assert fake_stripe.requests == []


async def test_deletions_are_limited_even_when_they_fail(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("ada")
    await sign_up(client, bearer)
    await link_customer(pg, fake_stripe, "ada", paid=False)
    fake_stripe.down = True
    assert error_codes(await gql(client, DELETE, token=bearer)) == ["PAYMENT_PROVIDER_ERROR"]
    fake_stripe.down = False
    fake_stripe.reset_requests()

    what, retry_after = refusal(await gql(client, DELETE, token=bearer))

    assert what == "account deletion"
    assert 3590 <= retry_after <= 3600
    assert fake_stripe.requests == []
    assert await pg.fetchval("SELECT count(*) FROM users WHERE id = 'ada'") == 1
    assert await pg.fetchval("SELECT count(*) FROM deleted_users") == 0
    # The other buckets are untouched by deletions.
    assert "errors" not in await gql(client, SYNC, token=bearer)


async def test_deleting_the_account_does_not_reset_its_deletion_limit(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    await sign_up(client, token("ada"))
    assert "errors" not in await gql(client, DELETE, token=token("ada"))
    deleted_at = await pg.fetchval("SELECT deleted_at FROM deleted_users WHERE user_id = 'ada'")
    again = token("ada", iat=int(deleted_at.timestamp()) + 1)  # a new account
    await sign_up(client, again)

    refusal(await gql(client, DELETE, token=again))
    assert await pg.fetchval("SELECT count(*) FROM users WHERE id = 'ada'") == 1


async def test_the_limit_holds_across_server_processes(
    two_processes: list[httpx.AsyncClient], token: Callable[..., str]
) -> None:
    first, second = two_processes
    bearer = token("ada")
    assert "errors" not in await gql(first, SYNC, token=bearer)
    assert "errors" not in await gql(second, SYNC, token=bearer)

    refusal(await gql(first, SYNC, token=bearer))
    refusal(await gql(second, SYNC, token=bearer))


class TestConcurrency:
    @pytest.fixture
    def limits(self) -> dict[str, int]:
        return {"rate_limit_stripe_per_minute": 5}

    async def test_twenty_parallel_attempts_with_a_limit_of_five_let_exactly_five_through(
        self,
        two_processes: list[httpx.AsyncClient],
        token: Callable[..., str],
        pg: asyncpg.Connection,
    ) -> None:
        bearer = token("racer")
        await sign_up(two_processes[0], bearer)

        bodies = await asyncio.gather(
            *(gql(two_processes[n % 2], SYNC, token=bearer) for n in range(20))
        )

        outcomes = sorted(error_codes(body)[0] if "errors" in body else "ok" for body in bodies)
        assert outcomes == ["RATE_LIMITED"] * 15 + ["ok"] * 5
        assert await pg.fetchval("SELECT count(*) FROM rate_limits WHERE bucket = 'stripe'") == 1


async def test_the_allowance_comes_back_once_the_hint_has_passed(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    bearer = token("ada")
    for _ in range(2):
        await gql(client, SYNC, token=bearer)
    _, retry_after = refusal(await gql(client, SYNC, token=bearer))

    # As if `retryAfter` seconds had passed.
    await pg.execute(
        "UPDATE rate_limits SET tat = tat - make_interval(secs => $1) WHERE user_id = 'ada'",
        retry_after,
    )

    assert "errors" not in await gql(client, SYNC, token=bearer)
    refusal(await gql(client, SYNC, token=bearer))  # one came back, not all of them


class TestZeroTurnsLimitsOff:
    @pytest.fixture
    def limits(self) -> dict[str, int]:
        return {
            "rate_limit_requests_per_minute": 0,
            "rate_limit_stripe_per_minute": 0,
            "rate_limit_export_per_hour": 0,
            "rate_limit_delete_per_hour": 0,
        }

    async def test_nothing_is_limited_or_recorded(
        self, client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
    ) -> None:
        bearer = token("ada")
        for _ in range(8):
            assert "errors" not in await gql(client, SYNC, token=bearer)
            assert "errors" not in await gql(client, EXPORT, token=bearer)
        assert "errors" not in await gql(client, DELETE, token=bearer)
        assert await pg.fetchval("SELECT count(*) FROM rate_limits") == 0


async def test_reading_the_profile_plans_and_editing_the_profile_count_as_requests_only(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    bearer = token("ada")
    for n in range(5):
        assert "errors" not in await gql(client, "{ me { id } plans { id } }", token=bearer)
        update = "mutation($n: String) { updateProfile(input: {firstName: $n}) { firstName } }"
        assert "errors" not in await gql(client, update, {"n": f"Ada {n}"}, token=bearer)
    buckets = await pg.fetch("SELECT user_id, bucket FROM rate_limits")
    assert [tuple(row) for row in buckets] == [("ada", "request")]


class TestRequestLimit:
    @pytest.fixture
    def limits(self) -> dict[str, int]:
        return {"rate_limit_requests_per_minute": 3}

    async def test_every_authenticated_request_counts_and_public_ones_never(
        self, client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
    ) -> None:
        bearer = token("ada")
        assert "errors" not in await gql(client, "{ me { id } }", token=bearer)
        update = 'mutation { updateProfile(input: {firstName: "Ada"}) { firstName } }'
        assert "errors" not in await gql(client, update, token=bearer)
        assert (await client.get("/account/export", headers=auth(bearer))).status_code == 200

        body = await gql(client, "{ me { id } }", token=bearer)
        _, retry_after = refusal_of_requests(body)
        assert 19 <= retry_after <= 20  # 3 a minute: the next one is due 20 s after the first
        download = await client.get("/account/export", headers=auth(bearer))
        assert download.status_code == 429
        # `plans` alone needs no token and counts against nobody.
        for _ in range(5):
            assert "errors" not in await gql(client, "{ plans { id } }", token=bearer)
        # Another user is not affected.
        assert "errors" not in await gql(client, "{ me { id } }", token=token("bob"))
        assert await pg.fetchval("SELECT count(*) FROM users WHERE id = 'ada'") == 1


def auth(bearer: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {bearer}"}


def refusal_of_requests(body: dict[str, Any]) -> tuple[str, int]:
    assert error_codes(body) == ["RATE_LIMITED"], body
    [error] = body["errors"]
    match = re.fullmatch(r"Too many requests; try again in (\d+) seconds?\.", error["message"])
    assert match, error["message"]
    assert int(match.group(1)) == error["extensions"]["retryAfter"]
    return "requests", int(match.group(1))


async def test_state_that_no_longer_limits_anyone_is_purged(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    pg: asyncpg.Connection,
    runtime: Runtime,
) -> None:
    await gql(client, SYNC, token=token("ada"))
    await pg.execute(
        "INSERT INTO rate_limits (user_id, bucket, tat, allowed) "
        "VALUES ('gone', 'delete', now() - interval '1 second', true)"
    )

    assert await runtime.worker.purge_rate_limits() == 1

    rows = await pg.fetch("SELECT user_id, bucket FROM rate_limits ORDER BY bucket")
    assert [tuple(row) for row in rows] == [("ada", "request"), ("ada", "stripe")]
