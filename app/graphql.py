"""Strawberry on Starlette: the per-request context and the shape of errors."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from app.context import Context
from app.errors import format_error

_CONTEXT_KEY = "billing.context"


class GraphQLView(GraphQL[Context, None]):
    """No websockets, no multipart, queries over GET only; each request gets a fresh context."""

    def __init__(self, schema: Any, *, graphiql: bool) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            allow_queries_via_get=True,
            subscription_protocols=(),
            multipart_uploads_enabled=False,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            context: Context | None = scope.pop(_CONTEXT_KEY, None)
            if context is not None:
                await context.close()

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        assert isinstance(request, Request)
        assert isinstance(response, Response)
        context = Context(
            request.state.runtime, request, response, request_id=request.state.request_id
        )
        request.scope[_CONTEXT_KEY] = context
        return context

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        response: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            request_id = request.state.request_id
            response["errors"] = [format_error(error, request_id) for error in result.errors]
        if result.extensions:
            response["extensions"] = result.extensions
        return response
