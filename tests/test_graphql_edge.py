"""The GraphQL edge: limits, malformed requests, error codes, masking, production mode."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.types import ASGIApp, Message

from tests.helpers import error_codes, gql


async def post_raw(client: httpx.AsyncClient, content: bytes, content_type: str) -> httpx.Response:
    return await client.post("/graphql", content=content, headers={"Content-Type": content_type})


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b'{"query": 5}', "application/json"),
        (b'{"query": "{ plans { id } }", "variables": [1]}', "application/json"),
        (b"query={ plans { id } }", "application/x-www-form-urlencoded"),
        (b"{ plans { id } }", "text/plain"),
        (
            b"--x\r\nContent-Disposition: form-data; name=operations\r\n\r\n{}\r\n--x--",
            "multipart/form-data; boundary=x",
        ),
        (b"{}", "application/json"),
    ],
)
async def test_malformed_requests_get_a_4xx_not_a_500(
    client: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    response = await post_raw(client, content, content_type)
    assert 400 <= response.status_code < 500, response.text


async def test_batched_operations_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", json=[{"query": "{ plans { id } }"}, {"query": "{ plans { id } }"}]
    )
    assert response.status_code == 400


async def test_a_syntax_error_has_a_code(client: httpx.AsyncClient) -> None:
    body = await gql(client, "{ plans { id ")
    assert error_codes(body) == ["GRAPHQL_PARSE_FAILED"]


async def test_an_unknown_field_has_a_code(client: httpx.AsyncClient) -> None:
    body = await gql(client, "{ nope }")
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_a_variable_of_the_wrong_type_is_bad_user_input(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    body = await gql(
        client,
        "query($n: Int!) { me { notifications(first: $n) { id } } }",
        {"n": "many"},
        token=token(),
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_queries_deeper_than_the_limit_are_refused(client: httpx.AsyncClient) -> None:
    """The schema is not recursive today; the limit guards the day it becomes so."""
    deep = "{ me " + "{ customer " * 11 + "{ id }" + " }" * 11 + " }"
    body = await gql(client, deep)
    assert body.get("data") is None
    depth_errors = [e for e in body["errors"] if "exceeds maximum operation depth" in e["message"]]
    assert [e["extensions"]["code"] for e in depth_errors] == ["GRAPHQL_VALIDATION_FAILED"]


async def test_too_many_aliases_are_refused(client: httpx.AsyncClient) -> None:
    aliases = " ".join(f"p{n}: plans {{ id }}" for n in range(31))
    body = await gql(client, "{ " + aliases + " }")
    assert "GRAPHQL_VALIDATION_FAILED" in error_codes(body)


async def test_thirty_aliases_are_fine(client: httpx.AsyncClient) -> None:
    aliases = " ".join(f"p{n}: plans {{ id }}" for n in range(30))
    body = await gql(client, "{ " + aliases + " }")
    assert "errors" not in body


async def test_too_many_tokens_are_refused(client: httpx.AsyncClient) -> None:
    body = await gql(client, "{ plans { " + "id " * 2500 + "} }")
    assert error_codes(body) == ["GRAPHQL_PARSE_FAILED"]


async def test_a_body_over_64_kib_is_413(client: httpx.AsyncClient) -> None:
    padding = "x" * (64 * 1024)
    response = await client.post(
        "/graphql", json={"query": "{ plans { id } }", "extensions": {"p": padding}}
    )
    assert response.status_code == 413


async def test_a_streamed_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "{ plans { id } }", "extensions": {"p": "'
        for _ in range(17):
            yield b"x" * 4096
        yield b'"}}'

    response = await client.post(
        "/graphql", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


async def test_queries_work_over_get(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": "{ plans { id } }"})
    assert response.json()["data"]["plans"][0]["id"] == "free"


async def test_graphiql_is_served_in_development(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_websocket_protocols_are_not_offered(app: ASGIApp) -> None:
    inbox: list[Message] = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"sec-websocket-protocol", b"graphql-transport-ws")],
        "subprotocols": ["graphql-transport-ws"],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    assert [message["type"] for message in sent] == ["websocket.close"]


async def test_responses_carry_a_request_id(client: httpx.AsyncClient) -> None:
    mine = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    generated = await client.get("/healthz", headers={"X-Request-ID": "bad id\x01"})
    assert len(generated.headers["x-request-id"]) == 32


async def test_cors_allows_the_app_origin_only(client: httpx.AsyncClient) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = await client.options(
        "/graphql", headers={"Origin": "http://localhost:3000", **preflight}
    )
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    refused = await client.options(
        "/graphql", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in refused.headers


async def test_cors_answers_vary_by_origin_and_expose_the_request_id(
    client: httpx.AsyncClient,
) -> None:
    query = {"query": "{ plans { id } }"}
    browser = await client.post("/graphql", json=query, headers={"Origin": "http://localhost:3000"})
    assert browser.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "x-request-id" in browser.headers["access-control-expose-headers"].lower()
    assert "Origin" in browser.headers["vary"]
    # No Origin, the same answer: caches must still keep the two apart.
    server = await client.post("/graphql", json=query)
    assert "access-control-allow-origin" not in server.headers
    assert "Origin" in server.headers["vary"]
    assert server.json() == browser.json()


async def test_other_methods_are_405_naming_the_allowed_ones(client: httpx.AsyncClient) -> None:
    response = await client.put("/graphql", json={"query": "{ plans { id } }"})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert "x-request-id" in response.headers


async def test_a_remembered_public_answer_is_only_given_to_the_same_request(
    client: httpx.AsyncClient,
) -> None:
    """`plans` answers are reused for the same normalised request; anything else is worked
    out."""
    for _ in range(2):
        ids = await client.post("/graphql", json={"query": "{ plans { id } }"})
        assert ids.json() == {"data": {"plans": [{"id": "free"}, {"id": "PRO"}]}}
    names = await client.post("/graphql", json={"query": "{ plans { name } }"})
    assert names.json()["data"]["plans"][0] == {"name": "Free"}
    over_get = await client.get("/graphql", params={"query": "{ plans { id } }"})
    assert over_get.json() == ids.json()
    unauthenticated = await client.post("/graphql", json={"query": "{ plans { id } me { id } }"})
    assert error_codes(unauthenticated.json()) == ["UNAUTHENTICATED"]


async def test_an_unexpected_failure_is_masked(
    client: httpx.AsyncClient, token: Callable[..., str], pg: asyncpg.Connection
) -> None:
    await gql(client, "{ me { id } }", token=token())
    await pg.execute("DROP TABLE notifications")
    response = await client.post(
        "/graphql",
        json={"query": "{ me { id notifications { id } } }"},
        headers={"Authorization": f"Bearer {token()}", "X-Request-ID": "req-mask-1"},
    )
    body = response.json()
    assert body["errors"] == [
        {
            "message": "Internal server error",
            "path": ["me", "notifications"],
            "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-mask-1"},
        }
    ]
    assert "notifications" not in body["errors"][0]["message"]


class TestProduction:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"app_env": "production"}

    async def test_introspection_is_off(self, client: httpx.AsyncClient) -> None:
        body = await gql(client, "{ __schema { queryType { name } } }")
        assert body.get("data") is None
        assert set(error_codes(body)) == {"GRAPHQL_VALIDATION_FAILED"}

    async def test_field_suggestions_are_off(self, client: httpx.AsyncClient) -> None:
        body = await gql(client, "{ plan { id } }")
        assert "Did you mean" not in body["errors"][0]["message"]

    async def test_graphiql_is_off(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/graphql", headers={"Accept": "text/html"})
        assert response.status_code == 404

    async def test_queries_still_work(self, client: httpx.AsyncClient) -> None:
        assert (await gql(client, "{ plans { id } }"))["data"]["plans"][0]["id"] == "free"


async def test_field_suggestions_help_in_development(client: httpx.AsyncClient) -> None:
    body = await gql(client, "{ plan { id } }")
    assert "Did you mean" in body["errors"][0]["message"]
