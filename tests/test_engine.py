"""The GraphQL engine is ours, and fenced: results equal graphql-core's own executor's on a
corpus of documents, and a schema it would not honour is refused at start."""

from __future__ import annotations

from collections.abc import Callable
from inspect import isawaitable
from typing import Any

import asyncpg
import httpx
import pytest
import strawberry
from graphql import ExecutionResult, execute, parse
from strawberry.extensions import MaskErrors

from app.graphql.execution import FlatListExecutor
from app.graphql.schema import ExtensionsDoNotRun, executable_schema
from app.runtime import Runtime, resolve_caller
from resolvers.context import Context
from schema.root import Mutation, Query, build_schema
from tests.helpers import link_customer, sign_up
from tests.support.stripe import FakeStripe

CORPUS = {
    "aliases": "{ me { a: id b: email c: id } x: plans { i: id } y: plans { id name } }",
    "directives": """
        query($on: Boolean!) {
          me { id email @include(if: $on) phone @skip(if: $on)
               usageRecords(first: 3) { id metric @skip(if: $on) quantity } }
        }""",
    "named fragments": """
        { me { ...Profile customer { ...Cus } } }
        fragment Profile on User { id firstName lastName usageRecords(first: 2) { ...Use } }
        fragment Use on UsageRecord { metric quantity }
        fragment Cus on Customer { id email }""",
    "inline fragments": """
        { ... on Query { me { ... on User { id subscription { ... on Subscription {
          planId status } } } } } }""",
    "typename everywhere": """
        { __typename me { __typename id subscriptions { __typename planId }
          notifications(first: 5) { __typename kind } } plans { __typename id } }""",
    "nulls": "{ me { phone lastName customer { phone name } subscription { cancelAt trialEnd } } }",
    "lists of leaves": """
        { me { usageRecords(first: 100) { id metric quantity createdAt }
               notifications(first: 100) { id kind message createdAt } } }""",
    "errors": """
        { me { id usageRecords(first: 0) { id } notifications(first: 500) { id } } plans { id } }""",
    "an error beside data": "{ plans { id } me { usageRecords(first: -1) { id } email } }",
}


@pytest.fixture
def settings_overrides(stripe_settings: dict[str, Any]) -> dict[str, Any]:
    return stripe_settings


async def _prepared_user(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection, fake: FakeStripe
) -> str:
    bearer = token("corpus", given_name="Ada")
    await sign_up(client, bearer)
    await link_customer(pg, fake, "corpus")
    await pg.execute(
        "INSERT INTO usage_records (user_id, metric, quantity, created_at) "
        "SELECT 'corpus', 'metric.' || n, n, now() - make_interval(secs => n) "
        "FROM generate_series(1, 40) AS n"
    )
    await pg.execute(
        "INSERT INTO notifications (user_id, kind, message) VALUES ('corpus', 'info', 'hello'),"
        " ('corpus', 'warning', 'careful')"
    )
    return bearer


def _comparable(result: ExecutionResult) -> tuple[Any, list[tuple[str, Any]]]:
    errors = sorted((e.message, e.path) for e in result.errors or ())
    return result.data, errors


@pytest.mark.parametrize("name", sorted(CORPUS))
async def test_the_engine_answers_as_graphql_core_does(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    pg: asyncpg.Connection,
    fake_stripe: FakeStripe,
    runtime: Runtime,
    name: str,
) -> None:
    bearer = await _prepared_user(client, token, pg, fake_stripe)
    schema = executable_schema(build_schema())
    document = parse(CORPUS[name])
    results = []
    for executor_class in (None, FlatListExecutor):
        caller = await resolve_caller(runtime, f"Bearer {bearer}")
        result = execute(
            schema,
            document,
            context_value=Context(runtime, caller=caller),
            variable_values={"on": True},
            executor_class=executor_class,
        )
        if isawaitable(result):
            result = await result
        assert isinstance(result, ExecutionResult)
        results.append(_comparable(result))
    ours, theirs = results[1], results[0]
    assert ours == theirs
    assert (ours[0] is not None) or bool(ours[1])  # an answer, or errors saying why not


def test_a_schema_with_extensions_is_refused_at_start() -> None:
    schema = strawberry.Schema(query=Query, mutation=Mutation, extensions=[MaskErrors])
    with pytest.raises(ExtensionsDoNotRun, match="MaskErrors"):
        executable_schema(schema)
