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


class TestProductionSuggestsNoNames:
    """No message in production suggests a name, from validation or from coercing a
    variable at execution (graphql-core's `hide_suggestions`)."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"app_env": "production"}

    @pytest.mark.parametrize(
        ("query", "variables", "code"),
        [
            (
                "mutation($i: UpdateProfileInput!) { updateProfile(input: $i) { id } }",
                {"i": {"frstName": "x"}},
                "BAD_USER_INPUT",
            ),
            ('mutation { updateProfile(input: {frstName: "x"}) { id } }', {}, None),
            ("{ me { notifications(frst: 1) { id } } }", {}, None),
            ("{ me { frstName } }", {}, None),
            ("query($s: SubscriptionStatu) { plans { id } }", {}, None),
            (
                "mutation($i: CreateCheckoutSessionInput) { createCheckoutSession(input: $i) { id } }",
                {"i": {"plnId": "PRO"}},
                "BAD_USER_INPUT",
            ),
        ],
        ids=["input field by variable", "input field", "argument", "field", "type", "input"],
    )
    async def test_no_message_suggests_a_name(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        query: str,
        variables: dict[str, Any],
        code: str | None,
    ) -> None:
        body = await gql(client, query, variables, token=token())
        assert body.get("data") is None
        assert set(error_codes(body)) == {code or "GRAPHQL_VALIDATION_FAILED"}
        for error in body["errors"]:
            assert "Did you mean" not in error["message"]
            assert "firstName" not in error["message"]

    async def test_the_message_still_says_what_is_wrong(
        self, client: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        body = await gql(
            client,
            "mutation($i: UpdateProfileInput!) { updateProfile(input: $i) { id } }",
            {"i": {"frstName": "x"}},
            token=token(),
        )
        assert "Did you mean" not in body["errors"][0]["message"]
        assert "frstName" in body["errors"][0]["message"]


async def test_a_variable_suggests_names_in_development(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    body = await gql(
        client,
        "mutation($i: UpdateProfileInput!) { updateProfile(input: $i) { id } }",
        {"i": {"frstName": "x"}},
        token=token(),
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "Did you mean 'firstName'" in body["errors"][0]["message"]


# Malformed input: a 4xx, BAD_USER_INPUT or a document error code, never a 500 -------------


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [33, 900, 5000])
async def test_deeply_nested_variables_are_refused(
    client: httpx.AsyncClient, token: Callable[..., str], depth: int
) -> None:
    query = "query($v: Int) { me { notifications(first: $v) { id } } }"
    posted = await post_raw(
        client,
        ('{"query": "' + query + '", "variables": {"v": ' + nested_json(depth) + "}}").encode(),
        "application/json",
    )
    assert posted.status_code == 400, posted.text
    over_get = await client.get(
        "/graphql",
        params={"query": query, "variables": '{"v": ' + nested_json(depth) + "}"},
        headers={"Authorization": f"Bearer {token()}"},
    )
    assert over_get.status_code == 400, over_get.text


async def test_variables_nested_within_the_limit_are_coerced_as_usual(
    client: httpx.AsyncClient,
) -> None:
    body = await gql(
        client, "query($v: Int) { me { notifications(first: $v) { id } } }", {"v": [[[1]]]}
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]


BIG = "9" * 5000


@pytest.mark.parametrize(
    "query",
    [
        f"{{ me {{ notifications(first: {BIG}) {{ id }} }} }}",
        f"query($n: Int = {BIG}) {{ me {{ notifications(first: $n) {{ id }} }} }}",
        f"{{ plans @include(if: {BIG}) {{ id }} }}",
        f"{{ me {{ notifications(first: {BIG}.5e3) {{ id }} }} }}",
    ],
    ids=["argument", "variable default", "directive", "float"],
)
async def test_a_5000_digit_number_in_the_query_is_a_document_error(
    client: httpx.AsyncClient, token: Callable[..., str], query: str
) -> None:
    body = await gql(client, query, token=token())
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_a_5000_digit_number_in_the_variables_is_refused(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    response = await post_raw(
        client,
        b'{"query": "query($n: Int!) { me { notifications(first: $n) { id } } }", '
        b'"variables": {"n": ' + BIG.encode() + b"}}",
        "application/json",
    )
    assert response.status_code == 400


LONE = "\\ud800"  # as JSON escapes it


@pytest.mark.parametrize(
    "body",
    [
        '{"query": "query($n: String) { plans { id } }", "variables": {"n": "a' + LONE + '"}}',
        '{"query": "query($n: String) { plans { id } }", "variables": {"' + LONE + '": "a"}}',
        '{"query": "query($i: UpdateProfileInput!) { updateProfile(input: $i) { id } }", '
        '"variables": {"i": {"firstName": ["' + LONE + '"]}}}',
        '{"query": "{ plans { id } } # ' + LONE + '"}',
        '{"query": "{ plans(x: \\"' + LONE + '\\") { id } }"}',
        '{"query": "query Q { plans { id } }", "operationName": "Q' + LONE + '"}',
    ],
    ids=["variable", "variable name", "input field", "comment", "string literal", "operation"],
)
@pytest.mark.usefixtures("json_logs")
async def test_a_lone_surrogate_is_refused_and_never_logged(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    body: str,
) -> None:
    response = await client.post(
        "/graphql",
        content=body.encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token()}"},
    )
    assert response.status_code == 400
    err = capsys.readouterr().err
    assert "\ud800" not in err.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    assert "ud800" not in err.lower()


async def test_an_unused_variable_is_a_validation_error(client: httpx.AsyncClient) -> None:
    body = await gql(client, "query($unused: Int) { plans { id } }", {"unused": 1})
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_a_null_variable_for_an_argument_that_may_not_be_null_is_bad_input(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    """Coerced while the field runs (the argument has a default, so the nullable variable
    validates): the caller's input, not an internal error."""
    body = await gql(
        client,
        "query($n: Int) { me { notifications(first: $n) { id } } }",
        {"n": None},
        token=token(),
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_a_client_gone_before_its_body_arrived_is_no_error(app: ASGIApp) -> None:
    """It went away (or was dropped as too slow, app.process.slow_clients): there is no one to
    answer, and nothing for the server to log as an exception in the application."""
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"query": "{ pl', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    assert messages == []  # the body was read up to the disconnect
    assert sent == []
