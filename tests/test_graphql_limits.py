"""The limits every client meets: body and document size, memory held for documents and
answers, query cost, root fields found through fragments."""

from __future__ import annotations

import asyncio
import gc
import re
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message

from app.edge import Edge
from app.graphql.cost import MAX_COST
from app.graphql.endpoint import GraphQLEndpoint
from tests.helpers import error_codes, gql, link_customer, sign_up
from tests.support.stripe import FakeStripe
from tests.test_export import EXPORT_ALL
from tests.test_observability import metric_value

ROOT = Path(__file__).resolve().parent.parent
FULL_EXPORT = (
    "{ export { userProfile { id email emailVerified firstName lastName phone "
    "customer { id email name phone createdAt } subscription { planId status } } "
    "subscription { planId status stripeSubscriptionId priceId cancelAtPeriodEnd "
    "currentPeriodEnd updatedAt } usageRecords { id metric quantity createdAt } "
    "stripeCustomer exportTimestamp exportVersion } }"
)
USAGE_PAGE = "usageRecords(first: 100) { id metric quantity createdAt }"


@pytest.fixture
def endpoint(edge: Edge, app: ASGIApp) -> GraphQLEndpoint:
    """The GraphQL endpoint of the app under test (started), for its caches' byte totals."""
    assert isinstance(edge.app, Starlette)
    graphql = edge.app.state.graphql
    assert isinstance(graphql, GraphQLEndpoint)
    return graphql


# Sizes before parsing ---------------------------------------------------------------------


async def test_a_body_just_under_64_kib_is_read(client: httpx.AsyncClient) -> None:
    padding = "x" * (64 * 1024 - 100)
    response = await client.post(
        "/graphql", json={"query": "{ plans { id } }", "extensions": {"p": padding}}
    )
    assert response.status_code == 200
    assert response.json()["data"]["plans"][0] == {"id": "free"}


async def test_a_document_over_16_kib_is_400_and_not_parsed(
    client: httpx.AsyncClient, endpoint: GraphQLEndpoint
) -> None:
    query = "#" + "c" * (16 * 1024) + "\n{ plans { id } }"
    response = await client.post("/graphql", json={"query": query})
    assert response.status_code == 400
    assert "16384" in response.text
    over_get = await client.get("/graphql", params={"query": query})
    assert over_get.status_code == 400
    assert len(endpoint.documents.cache) == 0  # nothing was parsed, so nothing was kept


async def test_a_document_of_16_kib_is_answered(client: httpx.AsyncClient) -> None:
    query = "{ plans { id } }\n#"
    query += "c" * (16 * 1024 - len(query))
    body = await gql(client, query)
    assert body["data"]["plans"][0] == {"id": "free"}


async def test_a_query_string_over_64_kib_is_414(app: ASGIApp) -> None:
    """Sent as the server hands it over (httpx refuses to build such a URL)."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    query_string = b"query=%7B+plans+%7B+id+%7D+%7D&pad=" + b"x" * (64 * 1024)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "scheme": "http",
        "query_string": query_string,
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 414


# Memory held for documents and answers ------------------------------------------------------


async def test_distinct_commented_documents_stay_within_the_documents_bound(
    client: httpx.AsyncClient, endpoint: GraphQLEndpoint
) -> None:
    """The attack of the issue: each body a new comment (near the document limit), each
    document valid and public."""
    documents, answers = endpoint.documents.cache, endpoint.answers
    sent = 450
    for n in range(sent):
        query = f"#{n}" + "c" * 15_000 + "\n{ plans { id } }"
        response = await client.post("/graphql", json={"query": query, "pad": "p" * 40_000})
        assert response.json()["data"]["plans"][0] == {"id": "free"}
        assert documents.total_bytes <= documents.max_bytes
        assert answers.total_bytes <= answers.max_bytes
    assert 0 < len(documents) < sent  # the least recently used went
    assert documents.total_bytes > documents.max_bytes // 2


async def test_many_distinct_invalid_documents_stay_within_the_bound(
    client: httpx.AsyncClient, endpoint: GraphQLEndpoint
) -> None:
    documents = endpoint.documents.cache
    for n in range(300):
        # Each one's error quotes its long string literal back.
        query = '{ me { notifications(first: "' + f"{n}" + "s" * 15_000 + '") { id } } }'
        body = await gql(client, query)
        assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]
        assert documents.total_bytes <= documents.max_bytes
    assert len(documents) < 300


async def test_padded_members_and_unread_variables_share_one_answer(
    client: httpx.AsyncClient, endpoint: GraphQLEndpoint
) -> None:
    """Public answers are kept by the normalised request (document digest, operation name,
    the variables the operation declares), never by the raw bytes."""
    for n in range(200):
        padded = await client.post(
            "/graphql", json={"query": "{ plans { id } }", "pad": f"{n}" + "p" * 30_000}
        )
        unread = await client.post(
            "/graphql",
            json={"query": "{ plans { id } }", "variables": {"pad": f"{n}" + "v" * 30_000}},
        )
        assert (
            padded.json() == unread.json() == {"data": {"plans": [{"id": "free"}, {"id": "PRO"}]}}
        )
    assert len(endpoint.answers) == 1
    assert endpoint.answers.total_bytes < 1024


async def test_declared_variables_are_part_of_a_public_answers_key(
    client: httpx.AsyncClient, endpoint: GraphQLEndpoint
) -> None:
    query = "query($all: Boolean!) { plans { id name @include(if: $all) } }"
    for _ in range(2):
        short = await gql(client, query, {"all": False})
        full = await gql(client, query, {"all": True})
        assert short["data"]["plans"][0] == {"id": "free"}
        assert full["data"]["plans"][0] == {"id": "free", "name": "Free"}
    assert len(endpoint.answers) == 2


@pytest.mark.parametrize(
    "query",
    [
        "{ me { " + "id " * 600 + "} }",
        "{ me { " + " ".join(f"a{i}: id" for i in range(29)) + " } }",
        "#" + "c" * 16_000 + "\n{ plans { id } }",
        "{ me { "
        + " ".join(f"a{i}: usageRecords(first: {i}) {{ id }}" for i in range(25))
        + " } }",
        FULL_EXPORT,
        (ROOT / "examples/spa/operations.graphql").read_text(),
        '{ me { notifications(first: "' + "s" * 15_000 + '") { id } } }',
        "{ nope }",
        "{ plans { id ",
    ],
    ids=[
        "short fields",
        "aliases",
        "long comment",
        "arguments",
        "full export",
        "the SPA's operations",
        "an error quoting a long literal",
        "an unknown field",
        "a syntax error",
    ],
)
async def test_a_kept_document_is_counted_at_no_less_than_it_holds(
    endpoint: GraphQLEndpoint, query: str
) -> None:
    """The byte bound is only as good as the estimate: tracemalloc measures what dropping
    the kept documents gives back, and the cache must have counted at least that."""
    documents = endpoint.documents
    for n in range(200):  # what preparing anything warms up once is not the entries'
        documents.get(f"{{ warm{n} }}")
    documents.cache.clear()
    gc.collect()
    tracemalloc.start()
    try:
        for n in range(3):
            documents.get(f"{query}\n#{n}")
        gc.collect()
        holding = tracemalloc.get_traced_memory()[0]
        counted = documents.cache.total_bytes
        documents.cache.clear()
        gc.collect()
        held = holding - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert 0 < held <= counted, (held, counted)
    assert counted < 3 * held  # and not wildly more: the bound means something


# Query cost --------------------------------------------------------------------------------


async def test_thirty_pages_of_usage_records_are_too_complex_and_nothing_runs(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    aliases = " ".join(f"u{n}: {USAGE_PAGE}" for n in range(30))
    response = await client.post(
        "/graphql",
        json={"query": "{ me { " + aliases + " } }"},
        headers={"Authorization": f"Bearer {token('heavy')}"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert error_codes(body) == ["QUERY_TOO_COMPLEX"]
    assert body["errors"][0]["extensions"]["maxCost"] == MAX_COST
    assert body["errors"][0]["extensions"]["cost"] > MAX_COST
    # Nothing executed: the caller was not even provisioned.
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


async def test_the_cost_counts_through_fragments_and_variables(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    bearer = token()
    hidden = (
        "{ ...Q } fragment Q on Query { me { ...U } } "
        "fragment U on User { " + " ".join(f"u{n}: {USAGE_PAGE}" for n in range(30)) + " }"
    )
    assert error_codes(await gql(client, hidden, token=bearer)) == ["QUERY_TOO_COMPLEX"]
    # `first` from a variable counts as a full page, whatever the variable says.
    by_variable = (
        "query($n: Int!) { me { "
        + " ".join(
            f"u{n}: usageRecords(first: $n) {{ id metric quantity createdAt }}" for n in range(13)
        )
        + " } }"
    )
    assert error_codes(await gql(client, by_variable, {"n": 1}, token=bearer)) == [
        "QUERY_TOO_COMPLEX"
    ]
    fewer = "{ me { " + " ".join(f"u{n}: {USAGE_PAGE}" for n in range(12)) + " } }"
    body = await gql(client, fewer, token=bearer)
    assert "errors" not in body
    assert body["data"]["me"]["u0"] == []


async def test_fragments_that_spread_twice_are_not_a_denial_of_service(
    client: httpx.AsyncClient,
) -> None:
    """Each fragment spreading the next one twice: 2^40 fields for a walker that does not
    merge (the depth and alias limits took minutes on 25 levels); refused at once."""
    levels = 40
    query = (
        "{ me { ...F0 } } "
        + " ".join(f"fragment F{i} on User {{ id ...F{i + 1} ...F{i + 1} }}" for i in range(levels))
        + f" fragment F{levels} on User {{ id }}"
    )
    body = await gql(client, query)
    assert error_codes(body) == ["QUERY_TOO_COMPLEX"]


@pytest.mark.parametrize("query", [FULL_EXPORT, EXPORT_ALL], ids=["full", "all its fields"])
async def test_a_full_export_is_under_the_limit_and_runs(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    endpoint: GraphQLEndpoint,
    query: str,
) -> None:
    operation = endpoint.documents.get(query).operation(None)
    assert operation is not None
    assert operation.cost < MAX_COST
    bearer = token("exporter")
    await sign_up(client, bearer)
    body = await gql(client, query, token=bearer)
    assert "errors" not in body
    assert body["data"]["export"]["exportVersion"]


async def test_every_operation_of_the_spa_is_under_the_limit(endpoint: GraphQLEndpoint) -> None:
    text = (ROOT / "examples/spa/operations.graphql").read_text()
    names = re.findall(r"^(?:query|mutation) (\w+)", text, re.MULTILINE)
    assert len(names) == 11
    prepared = endpoint.documents.get(text)
    assert prepared.errors == ()
    for name in names:
        operation = prepared.operation(name)
        assert operation is not None, name
        assert 0 < operation.cost < MAX_COST, (name, operation.cost)


class TestEachStripeBackedField:
    @pytest.fixture
    def settings_overrides(self, stripe_settings: dict[str, Any]) -> dict[str, Any]:
        return {**stripe_settings, "rate_limit_stripe_per_minute": 2}

    @pytest.mark.parametrize(
        "query",
        [
            "{ export { a: stripeCustomer b: stripeCustomer c: stripeCustomer } }",
            "{ export { a: stripeCustomer ...S } } fragment S on Export { b: stripeCustomer "
            "c: stripeCustomer }",
        ],
        ids=["aliases", "through-a-fragment"],
    )
    async def test_counts_against_the_stripe_limit(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        fake_stripe: FakeStripe,
        pg: asyncpg.Connection,
        query: str,
    ) -> None:
        """Three occurrences of a Stripe-backed field are three Stripe calls: with two a
        minute allowed, the third is refused, and Stripe is asked twice."""
        bearer = token("many")
        await sign_up(client, bearer)
        await link_customer(pg, fake_stripe, "many", paid=False)
        fake_stripe.reset_requests()
        body = await gql(client, query, token=bearer)
        assert sorted(error_codes(body)) == ["RATE_LIMITED"]
        assert len(fake_stripe.requests_to("GET", "/v1/customers/")) == 2


# Root fields through fragments ------------------------------------------------------------

INLINE_EXPORT = "{ ... on Query { export { exportVersion stripeCustomer } } }"
SPREAD_EXPORT = "{ ...E } fragment E on Query { export { exportVersion stripeCustomer } }"


class TestExportsThroughFragments:
    @pytest.fixture
    def settings_overrides(self, stripe_settings: dict[str, Any]) -> dict[str, Any]:
        return {**stripe_settings, "export_concurrency": 1, "db_acquire_timeout_seconds": 0.3}

    @pytest.mark.parametrize("waiting_query", [INLINE_EXPORT, SPREAD_EXPORT])
    async def test_an_export_behind_a_fragment_takes_an_export_slot(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        fake_stripe: FakeStripe,
        pg: asyncpg.Connection,
        waiting_query: str,
    ) -> None:
        bearer = token("ada")
        await sign_up(client, bearer)
        await link_customer(pg, fake_stripe, "ada")
        fake_stripe.latency = 1.0  # Stripe crawling inside the first export
        slow = asyncio.create_task(gql(client, INLINE_EXPORT, token=bearer))
        await asyncio.sleep(0.1)
        waiting = await gql(client, waiting_query, token=bearer)
        assert error_codes(waiting) == ["INTERNAL_SERVER_ERROR"]
        assert waiting["errors"][0]["extensions"]["retryable"] is True
        assert "errors" not in await slow

    async def test_an_export_behind_a_fragment_is_labelled_export(
        self, client: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        bearer = token("ada")
        await sign_up(client, bearer)
        await gql(client, "{ ... on Query { export { exportVersion } } }", token=bearer)
        await gql(client, "{ ...E } fragment E on Query { export { exportVersion } }", token=bearer)
        text = (await client.get("/metrics")).text
        assert metric_value(text, "billing_requests_total", operation="export", outcome="ok") == 2
        assert 'operation="fragments"' not in text


async def test_a_public_field_beside_a_private_one_in_a_fragment_is_never_remembered(
    client: httpx.AsyncClient, endpoint: GraphQLEndpoint
) -> None:
    for query in (
        "{ ... on Query { plans { id } me { id } } }",
        "{ plans { id } ...M } fragment M on Query { me { id } }",
    ):
        for _ in range(2):
            assert error_codes(await gql(client, query)) == ["UNAUTHENTICATED"]
    assert len(endpoint.answers) == 0


async def test_a_public_field_in_a_fragment_is_remembered(
    client: httpx.AsyncClient, endpoint: GraphQLEndpoint
) -> None:
    query = "{ ...P } fragment P on Query { plans { id } }"
    for _ in range(2):
        body = await gql(client, query)
        assert body["data"]["plans"][0] == {"id": "free"}
    assert len(endpoint.answers) == 1
