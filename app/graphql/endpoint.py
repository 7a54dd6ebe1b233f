"""`/graphql`: a lean ASGI endpoint over graphql-core, executing Strawberry's schema.

Strawberry builds the schema (types, resolvers, `Info`); this endpoint replaces its HTTP
view and per-request extension runner, which cost most of a small query's time. A document
is parsed, validated and analysed once per distinct query text (`app.graphql.documents`: limits,
cost, root fields), then each request only checks its variables, builds its context and
executes. The rules are those of the Strawberry view it replaces: JSON over POST, queries
only over GET, no batching, no multipart, no websockets.

Before anything is parsed: a body over the limit is refused by `LimitBody` (413), a query
string over it here (414), a query document over `MAX_QUERY_CHARS` here (400), and so are
JSON nested deeper than `MAX_JSON_DEPTH` and strings with lone surrogates (which no UTF-8
response, log line or database could carry).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from inspect import isawaitable
from typing import Any, NamedTuple

from graphql import DocumentNode, ExecutionResult, GraphQLError, GraphQLSchema, OperationType
from graphql.validation import ASTValidationRule
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from app.graphql.caches import ByteBoundedLRU
from app.graphql.documents import Documents, Operation, Prepared
from app.graphql.errors import (
    BAD_USER_INPUT,
    VALIDATION_FAILED,
    domain_entry,
    format_error,
    request_entry,
)
from app.graphql.execution import FlatListExecutor
from app.runtime import Runtime, export_slot, resolve_caller
from resolvers.context import Context
from services.errors import ServiceBusy
from services.log_context import operation_var

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # the contract: over it, 413 before anything is parsed
MAX_QUERY_STRING_BYTES = 64 * 1024  # a GET's query string: as much as a POST's body
MAX_QUERY_CHARS = 16 * 1024  # the query document's text
MAX_JSON_DEPTH = 32  # objects and arrays within each other in `variables`
ANSWERS_MAX_BYTES = 1024 * 1024
_SURROGATE = re.compile("[\ud800-\udfff]")


class HTTPRefusal(Exception):
    """A request refused before GraphQL: answered with `status` and plain-text `reason`."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers


class _Request(NamedTuple):  # a NamedTuple: built on every request, 3x faster than a dataclass
    method: str
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None


class GraphQLEndpoint:
    def __init__(
        self,
        schema: GraphQLSchema,
        extra_rules: Sequence[type[ASTValidationRule]],
        *,
        max_tokens: int,
        hide_suggestions: bool,
    ) -> None:
        self._schema = schema
        self._hide_suggestions = hide_suggestions
        self.documents = Documents(
            schema, extra_rules, max_tokens=max_tokens, hide_suggestions=hide_suggestions
        )
        # Encoded answers of public operations (`plans`), by the normalised request: the
        # document's digest, the operation's name and the variables it declares.
        self.answers: ByteBoundedLRU[tuple[bytes, str | None, str | None], bytes] = ByteBoundedLRU(
            ANSWERS_MAX_BYTES
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no websocket protocols are offered
            return
        try:
            body = await self._respond(scope, receive, scope["state"])
        except HTTPRefusal as refused:
            response = PlainTextResponse(refused.reason, refused.status, refused.headers)
            await response(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _respond(self, scope: Scope, receive: Receive, state: dict[str, Any]) -> bytes:
        sent = _read(*await _raw(scope, receive))
        prepared = self.documents.get(sent.query)
        operation = prepared.operation(sent.operation_name)
        label = prepared.label if operation is None else operation.label
        state["operation"] = label
        operation_var.set(label)
        if prepared.document is None:
            return _encode(state, None, prepared.errors)
        if operation is None:
            error = GraphQLError("Unknown operation: name the operation to run (operationName)")
            return _encode(state, None, [request_entry(error, VALIDATION_FAILED)])
        if sent.method == "GET" and operation.kind is not OperationType.QUERY:
            raise HTTPRefusal(405, "Only queries can be sent over GET; use POST")
        too_complex = operation.too_complex()
        if too_complex is not None:
            return _encode(state, None, [too_complex])
        if not operation.public:
            return await self._run(scope, state, prepared.document, operation, sent)
        key = _answer_key(prepared, operation, sent)
        body = self.answers.get(key)
        if body is not None:  # the same normalised request as an answered public one
            state["outcome"] = "ok"
            return body
        body = await self._run(scope, state, prepared.document, operation, sent)
        if state["outcome"] == "ok":
            self.answers.put(key, body, len(body) + 40)  # a bytes object's header
        return body

    async def _run(
        self,
        scope: Scope,
        state: dict[str, Any],
        document: DocumentNode,
        operation: Operation,
        sent: _Request,
    ) -> bytes:
        runtime: Runtime = state["runtime"]
        context = await self._context(runtime, scope, operation)
        request_id: str = state["request_id"]
        if operation.heavy:
            try:
                async with export_slot(runtime):  # the answer's JSON counts too
                    data, errors = await self.execute(
                        context, document, sent.variables, sent.operation_name, request_id
                    )
                    return _encode(state, data, errors)
            except ServiceBusy as busy:
                return _encode(state, None, [domain_entry(busy)])
        data, errors = await self.execute(
            context, document, sent.variables, sent.operation_name, request_id
        )
        return _encode(state, data, errors)

    async def _context(self, runtime: Runtime, scope: Scope, operation: Operation) -> Context:
        """The request's context, its caller resolved first unless every root field is public."""
        if operation.public:
            return Context(runtime)
        authorization = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None
        )
        try:
            caller = await resolve_caller(runtime, authorization)
        except Exception as refusal:  # raised again by each field that reads the caller
            return Context(runtime, refusal=refusal)
        return Context(runtime, caller=caller)

    async def execute(
        self,
        context: Context,
        document: DocumentNode,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        request_id: str,
    ) -> tuple[Any, list[dict[str, Any]]]:
        """Run a validated document: the data and the formatted errors. Variables that do not
        coerce are the caller's (`BAD_USER_INPUT`); errors of fields are formatted by
        `format_error` (domain errors coded, anything else masked). The context is closed
        afterwards."""
        try:
            executor = FlatListExecutor.build(
                self._schema,
                document,
                context_value=context,
                raw_variable_values=variables,
                operation_name=operation_name,
                hide_suggestions=self._hide_suggestions,
            )
            if isinstance(executor, list):
                return None, [request_entry(error, BAD_USER_INPUT) for error in executor]
            result = executor.execute_operation()
            if isawaitable(result):
                result = await result
            assert isinstance(result, ExecutionResult), "this executor never streams"
        finally:
            context.close()
        errors = [format_error(error, request_id) for error in result.errors or ()]
        return result.data, errors


async def _raw(scope: Scope, receive: Receive) -> tuple[str, bytes]:
    """The request as sent: the method with the query string or the JSON body (413 over
    `MAX_BODY_BYTES`, by its Content-Length or as it streams in).

    Read from the ASGI scope and messages themselves: Starlette's `Request`, `headers` and
    `body()`, and a body-limit middleware around, cost ~5 µs more a request, a third of a
    remembered `plans` answer."""
    method: str = scope["method"]
    if method == "GET":
        query_string: bytes = scope["query_string"]
        if len(query_string) > MAX_QUERY_STRING_BYTES:
            raise HTTPRefusal(414, f"Query string too long (limit {MAX_QUERY_STRING_BYTES} bytes)")
        return method, query_string
    if method == "POST":
        content_type = length = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
        if length and (not length.isdigit() or len(length) > 12):
            raise HTTPRefusal(400, "Invalid Content-Length")
        if length and int(length) > MAX_BODY_BYTES:
            raise _too_large()
        if content_type.split(b";")[0].strip().lower() != b"application/json":
            raise HTTPRefusal(415, "Send GraphQL requests as application/json")
        return method, await _body(receive)
    raise HTTPRefusal(405, "GraphQL only supports GET and POST requests", {"Allow": "GET, POST"})


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect  # as Starlette's `Request.body()` does: the edge logs a 499
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large() -> HTTPRefusal:
    return HTTPRefusal(413, f"Request body too large (limit {MAX_BODY_BYTES} bytes)")


def _read(method: str, content: bytes) -> _Request:
    if method == "GET":
        params = QueryParams(content)
        if "query" not in params:
            raise HTTPRefusal(404, "Not Found")
        data: Any = {
            "query": params.get("query"),
            "operationName": params.get("operationName"),
            "variables": _json(params.get("variables"), "`variables` is not valid JSON"),
        }
    else:
        data = _json(content, "Unable to parse request body as JSON")
    if isinstance(data, list):
        raise HTTPRefusal(400, "Batching is not enabled")
    if not isinstance(data, dict):
        raise HTTPRefusal(400, "The request body must be a JSON object")
    query, variables, operation_name = (
        data.get("query"),
        data.get("variables"),
        data.get("operationName"),
    )
    if not isinstance(query, str) or not query.strip():
        raise HTTPRefusal(400, "No GraphQL query found in the request")
    if len(query) > MAX_QUERY_CHARS:
        raise HTTPRefusal(400, f"The query document is over {MAX_QUERY_CHARS} characters")
    if not isinstance(variables, dict | None):
        raise HTTPRefusal(400, "The operation's `variables` must be an object or null")
    if not isinstance(operation_name, str | None):
        raise HTTPRefusal(400, "The operation's `operationName` must be a string or null")
    _check_text(query)
    if operation_name is not None:
        _check_text(operation_name)
    if variables:
        _check_values(variables)
    return _Request(method, query, variables, operation_name)


def _json(content: str | bytes | None, problem: str) -> Any:
    if content is None:
        return None
    try:
        # JSON over HTTP is UTF-8: decoded here, `json` skips guessing the encoding.
        return json.loads(content.decode() if isinstance(content, bytes) else content)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise HTTPRefusal(400, problem) from exc


def _check_text(text: str) -> None:
    if not text.isascii() and _SURROGATE.search(text):
        raise HTTPRefusal(400, "Strings must be valid Unicode: a lone surrogate was sent")


def _check_values(variables: dict[str, Any]) -> None:
    """Nesting within `MAX_JSON_DEPTH` and no lone surrogates, keys included; iterative,
    so the check itself never recurses."""
    stack: list[tuple[Any, int]] = [(variables, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise HTTPRefusal(400, f"`variables` are nested over {MAX_JSON_DEPTH} levels deep")
            if isinstance(value, dict):
                for key in value:
                    _check_text(key)
                stack.extend((item, depth + 1) for item in value.values())
            else:
                stack.extend((item, depth + 1) for item in value)


def _answer_key(
    prepared: Prepared, operation: Operation, sent: _Request
) -> tuple[bytes, str | None, str | None]:
    """A public answer's key: what decides the answer, never the raw request (comments,
    spacing and members nobody reads are not in it)."""
    variables = None
    if operation.variables and sent.variables:
        declared = {k: v for k, v in sent.variables.items() if k in operation.variables}
        variables = json.dumps(declared, sort_keys=True, separators=(",", ":"))
    return prepared.key, sent.operation_name, variables


def _encode(state: dict[str, Any], data: Any, errors: Sequence[Mapping[str, Any]]) -> bytes:
    payload: dict[str, Any] = {"data": data}
    if errors:
        payload["errors"] = errors
        state["outcome"] = errors[0]["extensions"]["code"]
    else:
        state["outcome"] = "ok"
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
