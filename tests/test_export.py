"""`export` and `GET /account/export`: what a user downloads of their data; usage recording."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from databases import Database
from databases.core import Connection

from services.errors import BadUserInput, NotFound
from services.usage import MAX_QUANTITY, record_usage
from tests.helpers import BASE, error_codes, gql, link_customer, sign_up
from tests.support.stripe import FakeStripe

EXPORT = """
{
  export {
    userProfile { id email emailVerified firstName lastName phone
                  customer { id email name phone createdAt } }
    subscription { planId status stripeSubscriptionId priceId cancelAtPeriodEnd
                   currentPeriodEnd updatedAt }
    usageRecords { id metric quantity createdAt }
    stripeCustomer
    exportTimestamp
    exportVersion
  }
}
"""
# Every field the download carries: the GraphQL `export` with all of them selected.
EXPORT_ALL = EXPORT.replace(
    "currentPeriodEnd updatedAt }",
    "cancelAt currentPeriodEnd trialEnd updatedAt }\n    subscriptions { planId status "
    "stripeSubscriptionId priceId cancelAtPeriodEnd cancelAt currentPeriodEnd trialEnd "
    "updatedAt }\n    invoices { id number status currency amountDue amountPaid createdAt "
    "periodStart periodEnd hostedInvoiceUrl invoicePdf }",
)


@pytest.fixture
def settings_overrides(stripe_settings: dict[str, Any]) -> dict[str, Any]:
    """One network retry, not two: failures still outlast the SDK's retries, sooner."""
    return {**stripe_settings, "stripe_max_network_retries": 1}


async def add_usage(pg: asyncpg.Connection, user_id: str, count: int, metric: str) -> None:
    """`count` records whose creation times are shuffled against their ids."""
    minutes = list(range(count))
    random.Random(7).shuffle(minutes)
    await pg.executemany(
        "INSERT INTO usage_records (user_id, metric, quantity, created_at) VALUES ($1, $2, $3, $4)",
        [(user_id, metric, m + 1, BASE + timedelta(minutes=m)) for m in minutes],
    )


async def test_the_export_holds_the_profile_subscription_usage_and_stripe_customer(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("ada", given_name="Ada", family_name="Lovelace", phone_number="+14155550100")
    await sign_up(client, bearer)
    customer_id = await link_customer(pg, fake_stripe, "ada")
    await add_usage(pg, "ada", 3, "api.requests")
    before = datetime.now(UTC)

    body = await gql(client, EXPORT, token=bearer)

    assert "errors" not in body, body
    export = body["data"]["export"]
    assert export["userProfile"] == {
        "id": "ada",
        "email": "ada@example.com",
        "emailVerified": True,
        "firstName": "Ada",
        "lastName": "Lovelace",
        "phone": "+14155550100",
        "customer": {
            "id": customer_id,
            "email": "ada@example.com",
            "name": "Name of ada",
            "phone": None,
            "createdAt": BASE.isoformat(),
        },
    }
    assert export["subscription"]["planId"] == "PRO"
    assert export["subscription"]["status"] == "ACTIVE"
    assert export["subscription"]["stripeSubscriptionId"] == "sub_of_ada"
    assert [(r["quantity"], r["createdAt"]) for r in export["usageRecords"]] == [
        (3, (BASE + timedelta(minutes=2)).isoformat()),
        (2, (BASE + timedelta(minutes=1)).isoformat()),
        (1, BASE.isoformat()),
    ]
    assert export["stripeCustomer"] == fake_stripe.customers[customer_id]
    assert export["exportVersion"] == "1.0"
    taken = datetime.fromisoformat(export["exportTimestamp"])
    assert before - timedelta(seconds=5) < taken <= datetime.now(UTC)
    assert [(r.method, r.path) for r in fake_stripe.requests] == [
        ("GET", f"/v1/customers/{customer_id}")
    ]


async def test_the_export_has_the_newest_thousand_usage_records_newest_first(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    bearer = token("heavy")
    await sign_up(client, bearer)
    await add_usage(pg, "heavy", 1005, "api.requests")

    body = await gql(client, "{ export { usageRecords { quantity createdAt } } }", token=bearer)

    records = body["data"]["export"]["usageRecords"]
    assert len(records) == 1000
    # quantity m+1 was created at minute m: the five oldest (quantities 1-5) are left out.
    assert [r["quantity"] for r in records] == list(range(1005, 5, -1))
    assert records[0]["createdAt"] == (BASE + timedelta(minutes=1004)).isoformat()


async def test_another_users_data_is_never_in_an_export(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    for user in ("alice", "bob"):
        await sign_up(client, token(user))
        await link_customer(pg, fake_stripe, user)
        await add_usage(pg, user, 5, f"{user}.metric")
    bob_customer = await pg.fetchval(
        "SELECT stripe_customer_id FROM customers WHERE user_id = 'bob'"
    )
    bob_usage_ids = {
        str(row["id"])
        for row in await pg.fetch("SELECT id FROM usage_records WHERE user_id = 'bob'")
    }

    graphql = await gql(client, EXPORT, token=token("alice"))
    response = await client.get(
        "/account/export", headers={"Authorization": f"Bearer {token('alice')}"}
    )

    for export in (graphql["data"]["export"], response.json()):
        assert export["userProfile"]["id"] == "alice"
        text = json.dumps(export)
        assert "bob" not in text
        assert bob_customer not in text
        assert export["stripeCustomer"]["metadata"] == {"userId": "alice"}
        assert {r["id"] for r in export["usageRecords"]}.isdisjoint(bob_usage_ids)
        assert {r["metric"] for r in export["usageRecords"]} == {"alice.metric"}


async def test_with_stripe_down_the_export_returns_all_but_the_stripe_customer(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("ada")
    await sign_up(client, bearer)
    await link_customer(pg, fake_stripe, "ada")
    await add_usage(pg, "ada", 2, "api.requests")
    fake_stripe.down = True

    body = await gql(client, EXPORT, token=bearer)

    export = body["data"]["export"]
    assert export["userProfile"]["id"] == "ada"
    assert export["subscription"]["planId"] == "PRO"
    assert len(export["usageRecords"]) == 2
    assert export["stripeCustomer"] is None
    [error] = body["errors"]
    assert error["path"] == ["export", "stripeCustomer"]
    assert error["extensions"]["code"] == "PAYMENT_PROVIDER_ERROR"
    assert "try again" in error["message"]
    assert len(fake_stripe.requests) == 2  # the SDK's retry was spent


async def test_the_export_is_one_snapshot_even_when_rows_change_while_it_reads(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    pg: asyncpg.Connection,
    database_url: str,
) -> None:
    """A usage record committed after the export began is not in it, though the export's
    own read of usage records ran after that commit (it waited on a lock we hold)."""
    bearer = token("ada")
    await sign_up(client, bearer)
    await add_usage(pg, "ada", 1, "before")
    other = await asyncpg.connect(database_url)
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.execute("LOCK TABLE usage_records IN ACCESS EXCLUSIVE MODE")
        export = asyncio.create_task(
            gql(client, "{ export { usageRecords { metric } exportTimestamp } }", token=bearer)
        )
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'usage_records'::regclass"
        for _ in range(500):
            if await pg.fetchval(waiting):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the export never reached the usage records")
        await other.execute(
            "INSERT INTO usage_records (user_id, metric, quantity) VALUES ('ada', 'after', 1)"
        )
        committed_at = await other.fetchval("SELECT clock_timestamp()")
        await transaction.commit()
        body = await export
    finally:
        await other.close()

    assert [r["metric"] for r in body["data"]["export"]["usageRecords"]] == ["before"]
    assert datetime.fromisoformat(body["data"]["export"]["exportTimestamp"]) < committed_at


async def test_without_a_stripe_customer_the_export_asks_stripe_nothing(
    client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
) -> None:
    body = await gql(client, EXPORT, token=token("new"))
    assert "errors" not in body
    export = body["data"]["export"]
    assert export["stripeCustomer"] is None
    assert export["subscription"] is None
    assert export["usageRecords"] == []
    assert fake_stripe.requests == []


async def test_a_customer_deleted_in_stripe_exports_as_null(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("ada")
    await sign_up(client, bearer)
    fake_stripe.delete_customer_directly(await link_customer(pg, fake_stripe, "ada"))

    body = await gql(client, "{ export { stripeCustomer userProfile { id } } }", token=bearer)

    assert "errors" not in body
    assert body["data"]["export"] == {"stripeCustomer": None, "userProfile": {"id": "ada"}}


async def test_the_export_needs_a_token(client: httpx.AsyncClient) -> None:
    body = await gql(client, EXPORT)
    assert body["data"] is None
    assert error_codes(body) == ["UNAUTHENTICATED"]


class TestWithoutStripe:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"stripe_secret_key": None}

    async def test_a_customer_that_cannot_be_read_errors_alone(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        fake_stripe: FakeStripe,
        pg: asyncpg.Connection,
    ) -> None:
        """Null would claim Stripe holds nothing about the user; we cannot know that."""
        bearer = token("ada")
        await sign_up(client, bearer)
        await link_customer(pg, fake_stripe, "ada")

        body = await gql(client, EXPORT, token=bearer)

        assert body["data"]["export"]["userProfile"]["id"] == "ada"
        assert body["data"]["export"]["stripeCustomer"] is None
        assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
            (["export", "stripeCustomer"], "STRIPE_NOT_CONFIGURED")
        ]

    async def test_without_a_customer_the_export_is_complete(
        self, client: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        body = await gql(client, EXPORT, token=token("ada"))
        assert "errors" not in body
        assert body["data"]["export"]["stripeCustomer"] is None


# --- the download -----------------------------------------------------------------------


async def download(client: httpx.AsyncClient, bearer: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return await client.get("/account/export", headers=headers)


async def test_the_download_is_the_export_as_a_json_attachment(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("ada", given_name="Ada")
    await sign_up(client, bearer)
    customer_id = await link_customer(pg, fake_stripe, "ada")
    await add_usage(pg, "ada", 4, "api.requests")

    response = await download(client, bearer)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert (
        response.headers["content-disposition"] == 'attachment; filename="customer-data-ada.json"'
    )
    assert response.headers["cache-control"] == "no-store"
    downloaded = response.json()
    assert downloaded["stripeCustomer"]["id"] == customer_id
    assert "errors" not in downloaded
    graphql = (await gql(client, EXPORT_ALL, token=bearer))["data"]["export"]
    assert downloaded.pop("exportTimestamp") <= graphql.pop("exportTimestamp")
    assert downloaded == graphql


async def test_the_download_with_stripe_down_still_delivers_our_data(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    fake_stripe: FakeStripe,
    pg: asyncpg.Connection,
) -> None:
    bearer = token("ada")
    await sign_up(client, bearer)
    await link_customer(pg, fake_stripe, "ada")
    await add_usage(pg, "ada", 2, "api.requests")
    fake_stripe.down = True

    response = await download(client, bearer)

    assert response.status_code == 200
    downloaded = response.json()
    assert downloaded["userProfile"]["id"] == "ada"
    assert len(downloaded["usageRecords"]) == 2
    assert downloaded["stripeCustomer"] is None
    [error] = downloaded["errors"]
    assert error["path"] == ["stripeCustomer"]
    assert error["extensions"]["code"] == "PAYMENT_PROVIDER_ERROR"


async def test_the_download_without_a_valid_token_is_401(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    for bearer in (None, "not-a-jwt", token(expires_in=-120)):
        response = await download(client, bearer)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["UNAUTHENTICATED"]
        assert "content-disposition" not in response.headers
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


FILENAMES = [
    ('a"b\\c/d é', "customer-data-a_b_c_d__.json"),
    ("auth0|5f7c8ec7", "customer-data-auth0_5f7c8ec7.json"),
    ('x";\r\nSet-Cookie: a=b', "customer-data-x____Set-Cookie__a_b.json"),
    ("../../etc/passwd", "customer-data-.._.._etc_passwd.json"),
    ("u" * 255, f"customer-data-{'u' * 200}.json"),
]


async def test_the_download_filename_cannot_be_broken_by_the_user_id(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    for sub, name in FILENAMES:
        response = await download(client, token(sub))
        assert response.status_code == 200
        assert response.headers["content-disposition"] == f'attachment; filename="{name}"'
        assert "set-cookie" not in response.headers
        assert response.json()["userProfile"]["id"] == sub


# --- recording usage --------------------------------------------------------------------


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[Connection]:
    """A connection as the rest of a backend would hold one."""
    database = Database(database_url)
    await database.connect()
    try:
        async with database.connection() as connection:
            yield connection
    finally:
        await database.disconnect()


async def test_recorded_usage_shows_newest_first(
    client: httpx.AsyncClient, token: Callable[..., str], conn: Connection
) -> None:
    bearer = token("ada")
    await sign_up(client, bearer)
    first = await record_usage(conn, "ada", "api.requests", 3)
    second = await record_usage(conn, "ada", "storage:bytes", MAX_QUANTITY)
    assert (first.user_id, first.metric, first.quantity) == ("ada", "api.requests", 3)
    longest = "a" + "b_.:-9" * 10 + "abc"
    assert len(longest) == 64
    third = await record_usage(conn, "ada", longest, 1)

    body = await gql(client, "{ me { usageRecords { id metric quantity } } }", token=bearer)

    assert body["data"]["me"]["usageRecords"] == [
        {"id": str(third.id), "metric": longest, "quantity": 1},
        {"id": str(second.id), "metric": "storage:bytes", "quantity": MAX_QUANTITY},
        {"id": str(first.id), "metric": "api.requests", "quantity": 3},
    ]


BAD_USAGE: list[tuple[Any, Any, str]] = [
    ("", 1, "metric"),
    ("Api.requests", 1, "metric"),
    ("1st", 1, "metric"),
    ("api requests", 1, "metric"),
    ("api.requests\n", 1, "metric"),
    ("a" * 65, 1, "metric"),
    (None, 1, "metric"),
    ("api.requests", 0, "quantity"),
    ("api.requests", -5, "quantity"),
    ("api.requests", MAX_QUANTITY + 1, "quantity"),
    ("api.requests", True, "quantity"),
    ("api.requests", 1.5, "quantity"),
    ("api.requests", "3", "quantity"),
]


async def test_bad_usage_is_refused_and_nothing_recorded(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    conn: Connection,
    pg: asyncpg.Connection,
) -> None:
    await sign_up(client, token("ada"))
    for metric, quantity, field in BAD_USAGE:
        with pytest.raises(BadUserInput) as refused:
            await record_usage(conn, "ada", metric, quantity)
        assert refused.value.extensions["field"] == field, (metric, quantity)
    assert await pg.fetchval("SELECT count(*) FROM usage_records") == 0


async def test_usage_for_an_unknown_user_is_not_found(
    conn: Connection, pg: asyncpg.Connection
) -> None:
    with pytest.raises(NotFound):
        await record_usage(conn, "nobody", "api.requests", 1)
    assert await pg.fetchval("SELECT count(*) FROM usage_records") == 0


class TestExportsAtOnce:
    """A worker builds a bounded number of exports at a time (each holds 1,000 rows several
    times over); the rest wait their turn, but never longer than for a pool connection."""

    @pytest.fixture
    def settings_overrides(self, stripe_settings: dict[str, Any]) -> dict[str, Any]:
        return {**stripe_settings, "export_concurrency": 1, "db_acquire_timeout_seconds": 0.3}

    async def test_exports_wait_their_turn_and_all_complete(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        fake_stripe: FakeStripe,
        pg: asyncpg.Connection,
    ) -> None:
        bearer = token("ada")
        await sign_up(client, bearer)
        customer_id = await link_customer(pg, fake_stripe, "ada")
        fake_stripe.latency = 0.05  # every export asks Stripe for the customer
        bodies = await asyncio.gather(*(gql(client, EXPORT, token=bearer) for _ in range(4)))
        assert all("errors" not in body for body in bodies), bodies
        assert [body["data"]["export"]["stripeCustomer"]["id"] for body in bodies] == [
            customer_id
        ] * 4

    async def test_an_export_stuck_behind_a_slow_one_is_told_to_retry(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        fake_stripe: FakeStripe,
        pg: asyncpg.Connection,
    ) -> None:
        bearer = token("ada")
        await sign_up(client, bearer)
        await link_customer(pg, fake_stripe, "ada")
        fake_stripe.latency = 1.0  # Stripe crawling inside the first export
        slow = asyncio.create_task(gql(client, EXPORT, token=bearer))
        await asyncio.sleep(0.1)

        waiting = await gql(client, EXPORT, token=bearer)
        download = await client.get(
            "/account/export", headers={"Authorization": f"Bearer {bearer}"}
        )

        assert error_codes(waiting) == ["INTERNAL_SERVER_ERROR"]
        assert waiting["errors"][0]["extensions"]["retryable"] is True
        assert "busy" in waiting["errors"][0]["message"]
        assert download.status_code == 503
        assert download.headers["retry-after"] == "1"
        assert download.json()["errors"][0]["extensions"]["retryable"] is True
        assert "errors" not in await slow


async def test_the_download_reads_one_field_and_one_record_a_line(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    bearer = token("ada", given_name="Ada")
    await sign_up(client, bearer)
    await add_usage(pg, "ada", 3, "api.requests")

    text = (await download(client, bearer)).text

    lines = text.splitlines()
    assert lines[0] == "{"
    assert lines[-1] == "}"
    assert lines[1].startswith('  "userProfile": {"id": "ada", ')
    assert lines[3] == '  "usageRecords": ['
    assert [json.loads(line.rstrip(","))["quantity"] for line in lines[4:7]] == [3, 2, 1]
    assert lines[7] == "  ],"
    assert json.loads(text)["userProfile"]["firstName"] == "Ada"
