"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from db import health
from db.migrate import head_revision

log = logging.getLogger(__name__)
READY_TIMEOUT_SECONDS = 2.0


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready only when the database answers and its schema is what this code expects."""
    pool = request.state.runtime.pool
    try:
        async with (
            asyncio.timeout(READY_TIMEOUT_SECONDS),
            pool.connection(READY_TIMEOUT_SECONDS) as pg,
        ):
            version = await health.migration_version(pg)
    except Exception as exc:
        log.warning("readiness check failed: %s", type(exc).__name__)
        return JSONResponse({"status": "unavailable", "reason": "database unreachable"}, 503)
    expected = head_revision()
    if version != expected:
        return JSONResponse(
            {
                "status": "unavailable",
                "reason": "migrations not current",
                "database": version,
                "expected": expected,
            },
            503,
        )
    return JSONResponse({"status": "ready", "migration": version})
