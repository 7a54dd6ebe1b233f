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
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from strawberry.utils.await_maybe import await_maybe

from app.context import Context
from app.errors import format_error
from app.execution import FlatListExecutor
from app.logging import operation_var

log = logging.getLogger(__name__)

JSON_HEADERS = {"content-type": "application/json"}


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


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
        return Prepared(document, [], _root_fields(document), _only_public(document))


# Root fields whose answer is the same for everyone for the life of the process (the plan
# catalog is built at start-up), so their encoded responses can be reused.
PUBLIC_ROOT_FIELDS = frozenset({"plans", "__typename"})


@dataclass(frozen=True, slots=True)
class Prepared:
    document: DocumentNode | None
    errors: list[GraphQLError]
    label: str  # for metrics and logs: the root fields, bounded by the schema
    public: bool = False


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
        self._public: OrderedDict[tuple[str, str | None, str], bytes] = OrderedDict()
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
        request_id: str = scope["state"]["request_id"]
        try:
            query, variables, operation_name = await self._read(request)
            body = await self._run(request, request_id, query, variables, operation_name)
        except _Refused as refused:
            await PlainTextResponse(refused.reason, refused.status)(scope, receive, send)
            return
        await Response(body, headers=JSON_HEADERS)(scope, receive, send)

    async def _read(self, request: Request) -> tuple[str, dict[str, Any] | None, str | None]:
        if request.method == "GET":
            params = request.query_params
            if "query" not in params:
                raise _Refused(404, "Not Found")
            data: Any = {
                "query": params.get("query"),
                "operationName": params.get("operationName"),
                "variables": _json_param(params.get("variables")),
            }
        elif request.method == "POST":
            content_type = request.headers.get("content-type", "")
            if content_type.split(";")[0].strip().lower() != "application/json":
                raise _Refused(415, "Send GraphQL requests as application/json")
            try:
                data = json.loads(await request.body())
            except ValueError as exc:
                raise _Refused(400, "Unable to parse request body as JSON") from exc
        else:
            raise _Refused(405, "GraphQL only supports GET and POST requests")
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

    async def _run(
        self,
        request: Request,
        request_id: str,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> bytes:
        prepared = self._documents.get(query)
        state = request.scope["state"]
        state["operation"] = prepared.label
        operation_var.set(prepared.label)
        document = prepared.document
        if document is None:
            return _encode(state, None, prepared.errors, request_id)
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            error = GraphQLError("Unknown operation: name the operation to run (operationName)")
            return _encode(state, None, [error], request_id)
        if request.method == "GET" and operation.operation is not OperationType.QUERY:
            raise _Refused(405, "Only queries can be sent over GET; use POST")
        public_key = None
        if prepared.public:
            public_key = (query, operation_name, json.dumps(variables, sort_keys=True))
            cached = self._public.get(public_key)
            if cached is not None:
                state["outcome"] = "ok"
                return cached
        context = Context(request.state.runtime, request, request_id)
        try:
            result = await await_maybe(
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
            await context.close()
        body = _encode(state, result.data, result.errors or [], request_id)
        if public_key is not None and not result.errors:
            self._public[public_key] = body
            if len(self._public) > self._public_size:
                self._public.popitem(last=False)
        return body


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
