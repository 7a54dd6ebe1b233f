"""What every log line of a request carries: its request ID, GraphQL operation and user.

Context variables, set where each becomes known (the edge, the engine, the caller's
resolution) and read by the log filter (`app.logging`), so no layer passes them around.
They live below every layer that may set them.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
operation_var: ContextVar[str | None] = ContextVar("operation", default=None)
user_id_var: ContextVar[str | None] = ContextVar("user_id", default=None)
