"""A property-based fuzz of the whole GraphQL surface: no input gets a 5xx or an
`INTERNAL_SERVER_ERROR`, for an anonymous caller and a signed-in one.

Operations come from hypothesis-graphql, built from the app's own schema: valid ones
(every query and mutation field, arguments included) and ones with one schema violation
each; Stripe-backed mutations run for real against the fake Stripe. Then arbitrary JSON as
the variables of the example SPA's operations, and arbitrary request bodies. Each run is
derandomized (the same examples every time, so CI is not flaky) and bounded in examples.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema

from schema.root import build_schema

SCHEMA = build_schema()._schema
OPERATIONS = (
    Path(__file__).resolve().parent.parent / "examples/spa/operations.graphql"
).read_text()
OPERATION_NAMES = re.findall(r"^(?:query|mutation) (\w+)", OPERATIONS, re.MULTILINE)

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

documents = st.one_of(
    from_schema(SCHEMA, mode=Mode.POSITIVE), from_schema(SCHEMA, mode=Mode.NEGATIVE)
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

# Values the SPA's operations accept, so that the examples also get past coercion.
sensible = st.sampled_from(
    [
        "PRO",
        "free",
        True,
        False,
        {"firstName": "Ada", "lastName": None},
        {"phone": "+44 20 7946 0958"},
        {"phone": "not a phone"},
    ]
)


@pytest.fixture
def settings_overrides(stripe_settings: dict[str, Any]) -> dict[str, Any]:
    """Stripe on (the fake), and no rate limits, so the Stripe-backed paths really run."""
    return {
        **stripe_settings,
        "rate_limit_stripe_per_minute": 0,
        "rate_limit_export_per_hour": 0,
        "rate_limit_delete_per_hour": 0,
    }


USERS = itertools.count()


def caller(token: Callable[..., str], signed_in: bool) -> dict[str, str]:
    """Anonymous, or a new user each time (a deleted account stays deleted, so users are
    not shared between examples)."""
    if not signed_in:
        return {}
    return {"Authorization": f"Bearer {token(f'fuzz-{next(USERS)}')}"}


def assert_no_internal_error(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.headers.get("content-type") == "application/json":
        body = response.json()
        codes = [error["extensions"]["code"] for error in body.get("errors", ())]
        assert "INTERNAL_SERVER_ERROR" not in codes, body


@settings(FUZZ, max_examples=400)
@given(document=documents, signed_in=st.booleans(), over_get=st.booleans())
async def test_no_operation_gets_an_internal_error(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    document: str,
    signed_in: bool,
    over_get: bool,
) -> None:
    headers = caller(token, signed_in)
    if over_get:  # mutations too: they must be refused (405), not run
        response = await client.get("/graphql", params={"query": document}, headers=headers)
    else:
        response = await client.post("/graphql", json={"query": document}, headers=headers)
    assert_no_internal_error(response)


@settings(FUZZ, max_examples=200)
@given(
    name=st.sampled_from(OPERATION_NAMES),
    variables=st.dictionaries(
        st.sampled_from(["input", "planId", "deleteFromStripe", "x"]), sensible | json_values
    ),
    signed_in=st.booleans(),
)
async def test_no_variables_get_an_internal_error(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    name: str,
    variables: dict[str, Any],
    signed_in: bool,
) -> None:
    # Python's JSON, as a client might send it: NaN and Infinity included.
    body = json.dumps({"query": OPERATIONS, "operationName": name, "variables": variables})
    response = await client.post(
        "/graphql",
        content=body.encode(),
        headers={"Content-Type": "application/json", **caller(token, signed_in)},
    )
    assert_no_internal_error(response)


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.sampled_from(["query", "variables", "operationName"]), json_values).map(
        lambda value: json.dumps(value).encode()
    ),
)


@settings(FUZZ, max_examples=150)
@given(body=bodies)
async def test_no_request_body_gets_a_5xx(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(
        "/graphql", content=body, headers={"Content-Type": "application/json"}
    )
    assert_no_internal_error(response)
