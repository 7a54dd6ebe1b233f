"""`deleteAccount`: billing stops in Stripe, every row of the user goes, old tokens stay out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from tests.helpers import error_codes, gql
from tests.support.stripe import FakeStripe

DELETE = """
mutation ($input: DeleteAccountInput) { deleteAccount(input: $input) { success message } }
"""


@pytest.fixture
def settings_overrides(stripe_settings: dict[str, Any]) -> dict[str, Any]:
    """One network retry, not two: failures still outlast the SDK's retries, sooner."""
    return {**stripe_settings, "stripe_max_network_retries": 1}


@dataclass(frozen=True)
class Account:
    user_id: str
    bearer: str
    customer_id: str
    live: list[str]  # subscription ids Stripe would still bill
    ended: list[str]


async def delete(
    client: httpx.AsyncClient, bearer: str, *, from_stripe: bool | None = None
) -> dict[str, Any]:
    variables = {} if from_stripe is None else {"input": {"deleteFromStripe": from_stripe}}
    return await gql(client, DELETE, variables, token=bearer)


async def rows_of(pg: asyncpg.Connection, user_id: str) -> dict[str, int]:
    """The user's rows in `users` and in every table with a foreign key to it."""
    references = await pg.fetch(
        """
        SELECT c.conrelid::regclass::text AS tbl, a.attname AS col
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'f' AND c.confrelid = 'users'::regclass
        """
    )
    counts = {"users": await pg.fetchval("SELECT count(*) FROM users WHERE id = $1", user_id)}
    for ref in references:
        counts[ref["tbl"]] = await pg.fetchval(
            f'SELECT count(*) FROM {ref["tbl"]} WHERE "{ref["col"]}" = $1', user_id
        )
    return counts


async def tombstones(pg: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await pg.fetch("SELECT * FROM deleted_users ORDER BY user_id"))


async def make_account(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    pro_price: str,
    user_id: str = "ada",
    *,
    with_customer: bool = True,
) -> Account:
    """A user with a row in every table of theirs and, in Stripe, subscriptions in all
    states: two that still bill and two that have ended."""
    bearer = token(user_id)
    body = await gql(client, "{ me { id } }", token=bearer)
    assert "errors" not in body, body
    await pg.execute(
        "INSERT INTO notifications (user_id, kind, message) VALUES ($1, 'info', 'hello')", user_id
    )
    await pg.execute(
        "INSERT INTO usage_records (user_id, metric, quantity) VALUES ($1, 'api.requests', 1)",
        user_id,
    )
    await pg.execute(
        "INSERT INTO sync_jobs (user_id, kind, next_attempt_at) "
        "VALUES ($1, 'profile', now() + interval '1 day')",
        user_id,
    )
    if not with_customer:
        return Account(user_id, bearer, "", [], [])
    customer = fake_stripe.add_customer(email=f"{user_id}@example.com")
    subscription = {
        status: fake_stripe.create_subscription(customer["id"], pro_price, status=status)["id"]
        for status in ("active", "trialing", "canceled", "incomplete_expired")
    }
    await pg.execute(
        "INSERT INTO customers (user_id, stripe_customer_id) VALUES ($1, $2)",
        user_id,
        customer["id"],
    )
    await pg.execute(
        "INSERT INTO subscriptions (user_id, plan_id, status, stripe_subscription_id) "
        "VALUES ($1, 'PRO', 'active', $2)",
        user_id,
        subscription["active"],
    )
    await pg.execute(  # its first invoice
        "INSERT INTO invoices (id, user_id, stripe_customer_id, status, currency, amount_due, "
        "amount_paid, created_at) VALUES ($1, $2, $3, 'paid', 'usd', 1500, 1500, now())",
        f"in_of_{user_id}",
        user_id,
        customer["id"],
    )
    await pg.execute(  # the paid checkout that started it
        "INSERT INTO checkout_sessions (id, user_id, stripe_customer_id, plan_id, price_id, "
        "status, expires_at) VALUES ($1, $2, $3, 'PRO', $4, 'complete', now())",
        f"cs_test_of_{user_id}",
        user_id,
        customer["id"],
        pro_price,
    )
    await pg.execute(  # a plan change whose answer never came, and a preview
        "INSERT INTO sent_changes (user_id, subscription_id, action, params, idempotency_key) "
        "VALUES ($1, $2, 'resume', '{}', $3)",
        user_id,
        subscription["active"],
        f"billing-api:resume:{subscription['active']}:0",
    )
    await pg.execute(
        "INSERT INTO plan_change_previews (user_id, subscription_id, to_price_id, "
        "proration_date, amount_due, currency) VALUES ($1, $2, 'price_team', 0, 3400, 'usd')",
        user_id,
        subscription["active"],
    )
    fake_stripe.reset_requests()
    return Account(
        user_id,
        bearer,
        customer["id"],
        live=[subscription["active"], subscription["trialing"]],
        ended=[subscription["canceled"], subscription["incomplete_expired"]],
    )


def stripe_calls(fake_stripe: FakeStripe) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake_stripe.requests]


def expected_calls(account: Account, *, from_stripe: bool) -> list[tuple[str, str]]:
    calls = [
        ("GET", f"/v1/customers/{account.customer_id}"),
        ("GET", "/v1/subscriptions"),
        # Stripe lists newest first: the trialing one, then the active one.
        *(("DELETE", f"/v1/subscriptions/{sub}") for sub in reversed(account.live)),
    ]
    if from_stripe:
        calls.append(("DELETE", f"/v1/customers/{account.customer_id}"))
    else:  # the kept customer is released: never adopted or linked again
        calls.append(("POST", f"/v1/customers/{account.customer_id}"))
    return calls


async def assert_erased(pg: asyncpg.Connection, account: Account) -> None:
    counts = await rows_of(pg, account.user_id)
    assert {"customers", "subscriptions", "notifications", "usage_records"} <= set(counts)
    assert counts == dict.fromkeys(counts, 0)
    [tombstone] = await tombstones(pg)
    assert tombstone["user_id"] == account.user_id
    assert tombstone["stripe_customer_id"] == (account.customer_id or None)
    assert abs(datetime.now(UTC) - tombstone["deleted_at"]).total_seconds() < 10


async def assert_untouched(pg: asyncpg.Connection, account: Account) -> None:
    counts = await rows_of(pg, account.user_id)
    assert counts == dict.fromkeys(counts, 1)
    assert await tombstones(pg) == []


async def test_deleting_an_account_cancels_its_subscriptions_and_erases_its_rows(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    pro_price: str,
) -> None:
    account = await make_account(client, token, fake_stripe, pg, pro_price)

    body = await delete(client, account.bearer)

    assert "errors" not in body, body
    result = body["data"]["deleteAccount"]
    assert result["success"] is True
    assert "will not be billed again" in result["message"]
    assert "billing history stays" in result["message"]
    assert stripe_calls(fake_stripe) == expected_calls(account, from_stripe=False)
    listing = fake_stripe.requests[1]
    assert listing.params == {
        "customer": account.customer_id,
        "status": "all",
        "limit": "100",
        "expand": ["data.latest_invoice"],
    }
    assert fake_stripe.requests[-1].params == {"metadata": {"userId": "", "accountDeleted": "true"}}
    subscriptions = fake_stripe.subscriptions
    assert all(subscriptions[sub]["status"] == "canceled" for sub in account.live)
    assert subscriptions[account.ended[1]]["status"] == "incomplete_expired"
    assert fake_stripe.customers[account.customer_id].get("deleted") is None
    await assert_erased(pg, account)


async def test_deleting_from_stripe_too_deletes_the_stripe_customer(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    pro_price: str,
) -> None:
    account = await make_account(client, token, fake_stripe, pg, pro_price)

    body = await delete(client, account.bearer, from_stripe=True)

    assert body["data"]["deleteAccount"]["success"] is True
    assert "deleted from our payment provider" in body["data"]["deleteAccount"]["message"]
    assert stripe_calls(fake_stripe) == expected_calls(account, from_stripe=True)
    assert all(fake_stripe.subscriptions[sub]["status"] == "canceled" for sub in account.live)
    assert fake_stripe.customers[account.customer_id]["deleted"] is True
    await assert_erased(pg, account)


async def test_an_account_without_a_stripe_customer_is_deleted_without_asking_stripe(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    pro_price: str,
) -> None:
    account = await make_account(client, token, fake_stripe, pg, pro_price, with_customer=False)

    body = await delete(client, account.bearer, from_stripe=True)

    assert body["data"]["deleteAccount"] == {
        "success": True,
        "message": "Your account and all its data have been deleted.",
    }
    assert fake_stripe.requests == []
    await assert_erased(pg, account)


async def test_a_customer_already_deleted_in_stripe_does_not_block_deletion(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    pro_price: str,
) -> None:
    account = await make_account(client, token, fake_stripe, pg, pro_price)
    fake_stripe.delete_customer_directly(account.customer_id)

    body = await delete(client, account.bearer, from_stripe=True)

    assert body["data"]["deleteAccount"]["success"] is True
    assert stripe_calls(fake_stripe) == [("GET", f"/v1/customers/{account.customer_id}")]
    await assert_erased(pg, account)


async def test_a_stripe_failure_mid_deletion_deletes_nothing_and_a_retry_finishes(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    pro_price: str,
) -> None:
    account = await make_account(client, token, fake_stripe, pg, pro_price)
    canceled_first, failing = reversed(account.live)  # Stripe lists newest first
    # Two failures: the first try and the SDK's retry.
    fake_stripe.fail_next(2, status=500, path=f"/v1/subscriptions/{failing}", method="DELETE")

    body = await delete(client, account.bearer, from_stripe=True)

    assert error_codes(body) == ["PAYMENT_PROVIDER_ERROR"]
    assert body["data"] is None
    assert fake_stripe.subscriptions[failing]["status"] != "canceled"
    assert fake_stripe.customers[account.customer_id].get("deleted") is None
    await assert_untouched(pg, account)

    assert fake_stripe.subscriptions[canceled_first]["status"] == "canceled"
    fake_stripe.reset_requests()
    body = await delete(client, account.bearer, from_stripe=True)

    assert body["data"]["deleteAccount"]["success"] is True
    assert stripe_calls(fake_stripe) == [  # the one canceled before is not canceled again
        ("GET", f"/v1/customers/{account.customer_id}"),
        ("GET", "/v1/subscriptions"),
        ("DELETE", f"/v1/subscriptions/{failing}"),
        ("DELETE", f"/v1/customers/{account.customer_id}"),
    ]
    assert fake_stripe.customers[account.customer_id]["deleted"] is True
    await assert_erased(pg, account)


async def test_with_stripe_down_nothing_is_deleted(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    pro_price: str,
) -> None:
    account = await make_account(client, token, fake_stripe, pg, pro_price)
    fake_stripe.down = True

    body = await delete(client, account.bearer)

    assert error_codes(body) == ["PAYMENT_PROVIDER_ERROR"]
    assert body["errors"][0]["extensions"]["retryable"] is True
    await assert_untouched(pg, account)

    fake_stripe.down = False
    assert (await delete(client, account.bearer))["data"]["deleteAccount"]["success"] is True
    await assert_erased(pg, account)


class TestWithoutStripe:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"stripe_secret_key": None}

    async def test_an_account_with_a_customer_cannot_be_deleted(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        fake_stripe: FakeStripe,
        pg: asyncpg.Connection,
        pro_price: str,
    ) -> None:
        """Its subscriptions could not be canceled, so it would go on being billed."""
        account = await make_account(client, token, fake_stripe, pg, pro_price)

        body = await delete(client, account.bearer)

        assert error_codes(body) == ["STRIPE_NOT_CONFIGURED"]
        await assert_untouched(pg, account)

    async def test_an_account_without_a_customer_is_deleted(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        fake_stripe: FakeStripe,
        pg: asyncpg.Connection,
        pro_price: str,
    ) -> None:
        account = await make_account(client, token, fake_stripe, pg, pro_price, with_customer=False)
        assert (await delete(client, account.bearer))["data"]["deleteAccount"]["success"] is True
        await assert_erased(pg, account)


async def test_deletion_needs_a_token(client: httpx.AsyncClient, pg: asyncpg.Connection) -> None:
    body = await gql(client, DELETE)
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert await tombstones(pg) == []


async def test_a_token_from_before_the_deletion_is_refused_and_a_newer_one_starts_afresh(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    pro_price: str,
) -> None:
    account = await make_account(client, token, fake_stripe, pg, pro_price)
    assert "errors" not in await delete(client, account.bearer)
    deleted_at = (await tombstones(pg))[0]["deleted_at"]
    same_second = int(deleted_at.timestamp())

    stale = [account.bearer, token("ada", iat=same_second), token("ada", iat=None)]
    for bearer in stale:
        assert error_codes(await gql(client, "{ me { id } }", token=bearer)) == ["UNAUTHENTICATED"]
        response = await client.get(
            "/account/export", headers={"Authorization": f"Bearer {bearer}"}
        )
        assert response.status_code == 401
        assert response.json()["errors"][0]["message"] == "This account was deleted"
    assert await pg.fetchval("SELECT count(*) FROM users") == 0

    fresh = token("ada", iat=same_second + 1)
    body = await gql(
        client,
        "{ me { id customer { id } usageRecords { id } notifications { id } } }",
        token=fresh,
    )
    assert body == {
        "data": {"me": {"id": "ada", "customer": None, "usageRecords": [], "notifications": []}}
    }
    # The fresh account exists now; the old tokens still do not reach it.
    for bearer in stale:
        assert error_codes(await gql(client, "{ me { id } }", token=bearer)) == ["UNAUTHENTICATED"]


async def test_two_concurrent_deletions_delete_once(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
    pro_price: str,
) -> None:
    account = await make_account(client, token, fake_stripe, pg, pro_price)
    fake_stripe.latency = 0.05  # both requests are surely in flight at once

    first, second = await asyncio.gather(
        delete(client, account.bearer, from_stripe=True),
        delete(client, account.bearer, from_stripe=True),
    )

    outcomes = sorted(
        "success" if "errors" not in body else error_codes(body)[0] for body in (first, second)
    )
    assert outcomes == ["UNAUTHENTICATED", "success"]  # the second finds the account gone
    assert len(await tombstones(pg)) == 1
    assert len(fake_stripe.requests_to("DELETE", "/v1/customers")) == 1
    assert len(fake_stripe.requests_to("DELETE", "/v1/subscriptions")) == len(account.live)
    await assert_erased(pg, account)
