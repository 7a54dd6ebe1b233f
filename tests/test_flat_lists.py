"""Plain records, and long lists of them, come back exactly as graphql-core's own executor
makes them."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import asyncpg
import httpx
from graphql import execute, parse

from app.graphql.execution import FlatListExecutor
from app.runtime import Runtime, resolve_caller
from resolvers.context import Context
from schema.root import build_schema
from tests.helpers import gql

QUERY = """
query($withTime: Boolean!) {
  me {
    usageRecords(first: 5) {
      __typename
      howMany: quantity
      metric
      id
      createdAt @include(if: $withTime)
      again: quantity @skip(if: $withTime)
    }
    notifications(first: 3) { kind message }
  }
  plain: me {
    __typename
    id
    email
    verified: emailVerified
    firstName @include(if: $withTime)
    lastName
    phone @skip(if: $withTime)
  }
}
"""


async def request_context(runtime: Runtime, bearer: str) -> Context:
    """The context the endpoint would build for a request with this bearer token."""
    caller = await resolve_caller(runtime, f"Bearer {bearer}")
    return Context(runtime, caller=caller)


async def test_the_flat_path_matches_graphql_cores_executor(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    pg: asyncpg.Connection,
    runtime: Runtime,
) -> None:
    bearer = token("u1")
    await gql(client, "{ me { id } }", token=bearer)
    await pg.execute(
        "INSERT INTO usage_records (user_id, metric, quantity, created_at) "
        "SELECT 'u1', 'api.calls', n, now() - make_interval(secs => n) FROM generate_series(1, 7) n"
    )
    await pg.execute(
        "INSERT INTO notifications (user_id, kind, message) VALUES ('u1', 'info', 'hello')"
    )

    for with_time in (True, False):
        body = await gql(client, QUERY, {"withTime": with_time}, token=bearer)
        records = body["data"]["me"]["usageRecords"]
        assert [r["howMany"] for r in records] == [1, 2, 3, 4, 5]
        assert all(r["__typename"] == "UsageRecord" for r in records)
        assert ("createdAt" in records[0]) is with_time
        assert ("again" in records[0]) is not with_time
        plain = body["data"]["plain"]
        assert plain["__typename"] == "User"
        assert plain["id"] == "u1"
        assert ("firstName" in plain) is with_time
        assert ("phone" in plain) is not with_time

    # The same document through both executors, with the same kind of context.
    schema = build_schema()._schema
    document = parse(QUERY)
    results = []
    for executor_class in (None, FlatListExecutor):
        ctx = await request_context(runtime, bearer)
        try:
            result = await execute(
                schema,
                document,
                context_value=ctx,
                variable_values={"withTime": True},
                executor_class=executor_class,
            )  # type: ignore[misc]
        finally:
            ctx.close()
        results.append((result.data, result.errors))
    assert results[0] == results[1]
    assert results[1][1] is None


async def test_an_answered_request_leaves_nothing_for_the_garbage_collector(
    client: httpx.AsyncClient, token: Callable[..., str], runtime: Runtime
) -> None:
    """Memory of a finished request comes back at once, not at the collector's next pass:
    under load, hundreds of requests' worth waited for it (~10 MB of a worker)."""
    bearer = token("u1")
    await gql(client, "{ me { id } }", token=bearer)
    # Loaders (customer, subscription) and list resolvers: every kind of field there is.
    document = parse(
        "{ me { id customer { id } subscription { planId } notifications { id } "
        "usageRecords { id } } plans { id } }"
    )
    schema = build_schema()._schema
    gc.collect()
    gc.disable()
    try:
        context = await request_context(runtime, bearer)
        result = await execute(
            schema, document, context_value=context, executor_class=FlatListExecutor
        )  # type: ignore[misc]
        assert result.errors is None, result.errors
        context.close()
        gone = weakref.ref(context)
        del context, result
        assert gone() is None
    finally:
        gc.enable()
