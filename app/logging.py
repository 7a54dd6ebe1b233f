"""Logs as JSON lines (or text in development) carrying the request ID, operation and user.

The per-request values live in context variables (`services.log_context`), so every log
line of a request — ours, Stripe's SDK's, uvicorn's — carries them without being passed
around.
Tokens and secrets are never put in a log record.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from services.log_context import operation_var, request_id_var, user_id_var

QUIET = ("pgserver", "alembic.runtime.plugins", "stripe", "httpx", "httpcore", "databases")


class RequestFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        record.request_id = request_id
        record.request_tag = f" [{request_id}]" if request_id else ""
        record.operation = operation_var.get()
        record.user_id = user_id_var.get()
        return True


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (test runners and supervisors swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(*, json_format: bool, level: int = logging.INFO) -> None:
    handler = _Stderr()
    handler.addFilter(RequestFields())
    if json_format:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(operation)s "
                "%(user_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(levelname)s %(name)s%(request_tag)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # uvicorn's loggers propagate to ours, so they come out in the same format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
