"""The bare reference the API is measured against: plain Starlette routes, raw asyncpg.

Each route does the same SQL as the API path it stands beside, and nothing else:

- `POST /bare/me`: read the JSON body, count the request against the user's limit and
  SELECT the user row in one statement (the API's), answer it as JSON;
- `GET /bare/plans`: a constant JSON document;
- `POST /bare/webhook`: read the body, take id/type/created/customer from it, INSERT the
  bytes … ON CONFLICT;
- `GET /bare/export`: the export's reads (user, customer, subscriptions, 1,000 usage rows).

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

from db.events import INSERT_SQL
from db.export import CUSTOMER_SQL, SUBSCRIPTION_SQL, USAGE_SQL, USER_SQL
from db.users import GET_COUNTING_SQL
from services.rate_limits import Bucket

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
# The API's own statements, so both sides do the same SQL.
ME_SQL = GET_COUNTING_SQL
WEBHOOK_SQL = INSERT_SQL.replace("INSERT INTO stripe_events", "INSERT INTO bare_events")
# The request limit the bench configures: counted on every request, never refusing one.
REQUESTS = Bucket("request", "", 1_000_000_000, 60)


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
        row = await pool["pool"].fetchrow(
            ME_SQL,
            body["variables"]["id"],
            REQUESTS.name,
            REQUESTS.emission,
            REQUESTS.tolerance,
            1,
        )
        profile = ("id", "email", "email_verified", "first_name", "last_name", "phone")
        user = None if row["id"] is None else {k: row[k] for k in profile}
        return JSONResponse({"data": {"me": user}})

    async def plans(request: Request) -> Response:
        return JSONResponse({"data": {"plans": PLANS}})

    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        event = json.loads(body)
        data = event["data"]["object"]
        inserted = await pool["pool"].fetchval(
            WEBHOOK_SQL,
            event["id"],
            event["type"],
            datetime.fromtimestamp(event["created"], UTC),
            body,
            data.get("customer") or data.get("id"),
        )
        return JSONResponse({"received": True, "duplicate": inserted is None})

    async def export(request: Request) -> Response:
        user_id = request.query_params["id"]
        async with (
            pool["pool"].acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            user = await conn.fetchrow(USER_SQL, user_id)
            customer = await conn.fetchrow(CUSTOMER_SQL, user_id)
            subscriptions = await conn.fetch(SUBSCRIPTION_SQL, user_id)
            usage = await conn.fetch(USAGE_SQL, user_id, 1000)

        def plain(row: Any) -> Any:
            return None if row is None else {k: _jsonable(v) for k, v in dict(row).items()}

        return JSONResponse(
            {
                "data": {
                    "export": {
                        "userProfile": plain(user),
                        "customer": plain(customer),
                        "subscriptions": [plain(r) for r in subscriptions],
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
