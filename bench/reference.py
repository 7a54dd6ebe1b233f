"""The bare reference the API is measured against: plain Starlette routes, raw asyncpg.

Each route does the same SQL as the API path it stands beside, and nothing else:

- `POST /bare/me`: read the JSON body, SELECT the user row, answer it as JSON;
- `GET /bare/plans`: a constant JSON document;
- `POST /bare/webhook`: read the body, take id/type/created from it, INSERT … ON CONFLICT;
- `GET /bare/export`: the export's reads (user, customer, subscription, 1,000 usage rows).

    .venv/bin/python -m bench.reference  (DATABASE_URL and PORT in the environment)
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PLANS = [
    {
        "id": "free",
        "name": "Free",
        "priceId": None,
        "amount": 0,
        "currency": None,
        "interval": None,
    },
    {
        "id": "PRO",
        "name": "Pro",
        "priceId": "price_bench",
        "amount": None,
        "currency": None,
        "interval": None,
    },
]
USER_SQL = "SELECT id, email, email_verified, first_name, last_name, phone FROM users WHERE id = $1"


def create_reference(database_url: str) -> Starlette:
    pool: dict[str, asyncpg.Pool] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        created = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
        assert created is not None
        pool["pool"] = created
        yield
        await created.close()

    async def me(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        row = await pool["pool"].fetchrow(USER_SQL, body["variables"]["id"])
        return JSONResponse({"data": {"me": dict(row) if row else None}})

    async def plans(request: Request) -> Response:
        return JSONResponse({"data": {"plans": PLANS}})

    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        event = json.loads(body)
        inserted = await pool["pool"].fetchval(
            """
            INSERT INTO bare_events (id, type, created_at, payload) VALUES ($1, $2, $3, $4::jsonb)
            ON CONFLICT (id) DO NOTHING RETURNING true
            """,
            event["id"],
            event["type"],
            datetime.fromtimestamp(event["created"], UTC),
            body.decode(),
        )
        return JSONResponse({"received": True, "duplicate": inserted is None})

    async def export(request: Request) -> Response:
        user_id = request.query_params["id"]
        async with (
            pool["pool"].acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            user = await conn.fetchrow(USER_SQL, user_id)
            customer = await conn.fetchrow(
                "SELECT stripe_customer_id, email, name, phone, created_at FROM customers WHERE user_id = $1",
                user_id,
            )
            subscription = await conn.fetchrow(
                "SELECT plan_id, status, stripe_subscription_id, price_id, cancel_at_period_end,"
                " current_period_end, updated_at FROM subscriptions WHERE user_id = $1",
                user_id,
            )
            usage = await conn.fetch(
                "SELECT id, metric, quantity, created_at FROM usage_records WHERE user_id = $1"
                " ORDER BY created_at DESC, id DESC LIMIT 1000",
                user_id,
            )

        def plain(row: Any) -> Any:
            return None if row is None else {k: _jsonable(v) for k, v in dict(row).items()}

        return JSONResponse(
            {
                "data": {
                    "export": {
                        "userProfile": plain(user),
                        "customer": plain(customer),
                        "subscription": plain(subscription),
                        "usageRecords": [plain(r) for r in usage],
                    }
                }
            }
        )

    return Starlette(
        routes=[
            Route("/bare/me", me, methods=["POST"]),
            Route("/bare/plans", plans, methods=["GET", "POST"]),
            Route("/bare/webhook", webhook, methods=["POST"]),
            Route("/bare/export", export),
        ],
        lifespan=lifespan,
    )


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


if __name__ == "__main__":
    uvicorn.run(
        create_reference(os.environ["DATABASE_URL"]),
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        log_level="warning",
        access_log=False,
    )
