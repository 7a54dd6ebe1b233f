"""`/graphql`: a lean ASGI endpoint over graphql-core, executing Strawberry's schema.

Strawberry builds the schema (types, resolvers, `Info`); this endpoint replaces its HTTP
view and per-request extension runner, which cost most of a small query's time. A document
is parsed and validated once per distinct query text (bounded LRU, limits included in the
cached validation), then each request only builds its context and executes. The rules are
those of the Strawberry view it replaces: JSON over POST, queries only over GET, no
batching, no multipart, no websockets.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    execute,
    get_operation_ast,
    parse,
    validate,
)
from graphql.validation import ASTValidationRule, specified_rules
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send
from strawberry.utils.await_maybe import await_maybe

from app.context import Context, Runtime, export_slot, resolve_caller
from app.errors import format_error
from app.execution import FlatListExecutor
from app.logging import operation_var
from services.errors import ServiceBusy

log = logging.getLogger(__name__)


class _Refused(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers


class _Documents:
    """Parsed and validated documents by query text: an LRU, so its memory is bounded."""

    def __init__(
        self,
        schema: GraphQLSchema,
        rules: Sequence[type[ASTValidationRule]],
        *,
        max_tokens: int,
        hide_suggestions: bool,
        size: int,
    ) -> None:
        self._schema = schema
        self._rules = tuple(rules)
        self._max_tokens = max_tokens
        self._hide_suggestions = hide_suggestions
        self._size = size
        self._cache: OrderedDict[str, Prepared] = OrderedDict()

    def get(self, query: str) -> Prepared:
        found = self._cache.get(query)
        if found is not None:
            self._cache.move_to_end(query)
            return found
        found = self._prepare(query)
        self._cache[query] = found
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return found

    def _prepare(self, query: str) -> Prepared:
        try:
            document = parse(query, max_tokens=self._max_tokens)
        except GraphQLError as error:
            return Prepared(None, [error], "invalid")
        errors = validate(self._schema, document, self._rules)
        if self._hide_suggestions:
            for invalid in errors:
                if "Did you mean" in invalid.message:
                    invalid.message = invalid.message.split("Did you mean")[0].strip()
        if errors:
            return Prepared(None, errors, "invalid")
        label = _root_fields(document)
        heavy = not HEAVY_ROOT_FIELDS.isdisjoint(label.split("+"))
        return Prepared(document, [], label, _only_public(document), heavy)


# Root fields whose answers are large: built a few at a time (`Runtime.export_slots`).
HEAVY_ROOT_FIELDS = frozenset({"export"})

# Root fields whose answer is the same for everyone for the life of the process (the plan
# catalog is built at start-up), so their encoded responses can be reused.
PUBLIC_ROOT_FIELDS = frozenset({"plans", "__typename"})


@dataclass(frozen=True, slots=True)
class Prepared:
    document: DocumentNode | None
    errors: list[GraphQLError]
    label: str  # for metrics and logs: the root fields, bounded by the schema
    public: bool = False
    heavy: bool = False


def _only_public(document: DocumentNode) -> bool:
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            return False
        if definition.operation is not OperationType.QUERY:
            return False
        for selection in definition.selection_set.selections:
            if (
                not isinstance(selection, FieldNode)
                or selection.name.value not in PUBLIC_ROOT_FIELDS
            ):
                return False
            if selection.directives:
                return False
    return True


def _root_fields(document: DocumentNode) -> str:
    """`me`, `createCheckoutSession`, `me+plans`: never the client's own operation name,
    which would let a client mint unbounded metric labels."""
    names: set[str] = set()
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            names.update(
                selection.name.value
                for selection in definition.selection_set.selections
                if isinstance(selection, FieldNode)
            )
    return "+".join(sorted(names)) or "fragments"


class GraphQLEndpoint:
    def __init__(
        self,
        schema: GraphQLSchema,
        extra_rules: Sequence[type[ASTValidationRule]],
        *,
        max_tokens: int,
        hide_suggestions: bool,
        cache_size: int = 512,
    ) -> None:
        self._schema = schema
        # Answers to public queries by the exact request; the same bytes, the same answer.
        self._public: OrderedDict[tuple[str, bytes], _Public] = OrderedDict()
        self._public_size = cache_size
        self._documents = _Documents(
            schema,
            (*specified_rules, *extra_rules),
            max_tokens=max_tokens,
            hide_suggestions=hide_suggestions,
            size=cache_size,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no websocket protocols are offered
            return
        request = Request(scope, receive)
        state = scope["state"]
        try:
            raw = await self._raw(request)
            public = self._public.get(raw)
            if public is not None:  # the same bytes as an answered public query
                state["operation"], state["outcome"] = public.label, "ok"
                operation_var.set(public.label)
                body = public.body
            else:
                body = await self._run(request, state, raw)
        except _Refused as refused:
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

    async def _raw(self, request: Request) -> tuple[str, bytes]:
        """The request as sent: the method with the query string or the JSON body."""
        method = request.method
        if method == "GET":
            return method, request.scope["query_string"]
        if method == "POST":
            content_type = request.headers.get("content-type", "")
            if content_type.split(";")[0].strip().lower() != "application/json":
                raise _Refused(415, "Send GraphQL requests as application/json")
            return method, await request.body()
        raise _Refused(405, "GraphQL only supports GET and POST requests", {"Allow": "GET, POST"})

    def _read(self, raw: tuple[str, bytes]) -> tuple[str, dict[str, Any] | None, str | None]:
        method, content = raw
        if method == "GET":
            params = QueryParams(content)
            if "query" not in params:
                raise _Refused(404, "Not Found")
            data: Any = {
                "query": params.get("query"),
                "operationName": params.get("operationName"),
                "variables": _json_param(params.get("variables")),
            }
        else:
            try:
                data = json.loads(content)
            except ValueError as exc:
                raise _Refused(400, "Unable to parse request body as JSON") from exc
        if isinstance(data, list):
            raise _Refused(400, "Batching is not enabled")
        if not isinstance(data, dict):
            raise _Refused(400, "The request body must be a JSON object")
        query, variables, operation_name = (
            data.get("query"),
            data.get("variables"),
            data.get("operationName"),
        )
        if not isinstance(query, str) or not query.strip():
            raise _Refused(400, "No GraphQL query found in the request")
        if not isinstance(variables, dict | None):
            raise _Refused(400, "The operation's `variables` must be an object or null")
        if not isinstance(operation_name, str | None):
            raise _Refused(400, "The operation's `operationName` must be a string or null")
        return query, variables, operation_name

    async def _run(self, request: Request, state: dict[str, Any], raw: tuple[str, bytes]) -> bytes:
        query, variables, operation_name = self._read(raw)
        request_id: str = state["request_id"]
        prepared = self._documents.get(query)
        state["operation"] = prepared.label
        operation_var.set(prepared.label)
        document = prepared.document
        if document is None:
            return _encode(state, None, prepared.errors, request_id)
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            error = GraphQLError("Unknown operation: name the operation to run (operationName)")
            return _encode(state, None, [error], request_id)
        if raw[0] == "GET" and operation.operation is not OperationType.QUERY:
            raise _Refused(405, "Only queries can be sent over GET; use POST")
        context = await self._context(state["runtime"], request, prepared)
        if prepared.heavy:
            try:
                async with export_slot(state["runtime"]):  # the answer's JSON counts too
                    result = await self._execute(context, document, variables, operation_name)
                    return _encode(state, result.data, result.errors or [], request_id)
            except ServiceBusy as busy:
                error = GraphQLError(busy.message, original_error=busy)
                return _encode(state, None, [error], request_id)
        result = await self._execute(context, document, variables, operation_name)
        body = _encode(state, result.data, result.errors or [], request_id)
        if prepared.public and not result.errors:
            self._public[raw] = _Public(prepared.label, body)
            if len(self._public) > self._public_size:
                self._public.popitem(last=False)
        return body

    async def _context(self, runtime: Runtime, request: Request, prepared: Prepared) -> Context:
        """The request's context, its caller resolved first unless every root field is public."""
        if prepared.public:
            return Context(runtime, request)
        try:
            caller = await resolve_caller(runtime, request.headers.get("authorization"))
        except Exception as refusal:  # raised again by each field that reads the caller
            return Context(runtime, request, refusal=refusal)
        return Context(runtime, request, caller=caller)

    async def _execute(
        self,
        context: Context,
        document: DocumentNode,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> ExecutionResult:
        try:
            return await await_maybe(
                execute(
                    self._schema,
                    document,
                    context_value=context,
                    variable_values=variables,
                    operation_name=operation_name,
                    executor_class=FlatListExecutor,
                )
            )
        finally:
            context.close()


@dataclass(frozen=True, slots=True)
class _Public:
    """An answer that is the same for everyone: `plans` and the like."""

    label: str
    body: bytes


def _json_param(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise _Refused(400, "`variables` is not valid JSON") from exc


def _encode(
    state: dict[str, Any], data: Any, errors: Sequence[GraphQLError], request_id: str
) -> bytes:
    payload: dict[str, Any] = {"data": data}
    if errors:
        formatted = [format_error(error, request_id) for error in errors]
        payload["errors"] = formatted
        state["outcome"] = formatted[0]["extensions"]["code"]
    else:
        state["outcome"] = "ok"
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
