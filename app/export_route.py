"""`GET /account/export`: the caller's `export` as a JSON file to keep.

The body has the field names of the GraphQL `export`. When Stripe cannot be asked for the
customer, the file still comes (200) with `stripeCustomer: null` and an `errors` entry
saying why, as GraphQL would: a user downloading their data is better served by all we
hold plus a note on the missing part than by nothing at all, and can download again later.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.context import Runtime, export_slot, resolve_caller
from app.errors import domain_entry, masked_entry
from db.connection import PoolExhausted
from db.customers import CustomerRecord
from db.subscriptions import SubscriptionRecord
from db.usage import UsageRecordRow
from db.users import UserRecord
from services import export
from services.errors import (
    PaymentProviderError,
    RateLimited,
    ServiceBusy,
    StripeNotConfigured,
    Unauthenticated,
    busy,
)

log = logging.getLogger(__name__)

_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._@+-]")
MAX_FILENAME_ID = 200


def filename(user_id: str) -> str:
    """`customer-data-<user id>.json`, with anything that could break out of the quoted
    header value or name a path (quotes, backslashes, slashes, control and non-ASCII
    characters) replaced by `_`, and bounded in length."""
    return f"customer-data-{_UNSAFE_IN_FILENAME.sub('_', user_id)[:MAX_FILENAME_ID]}.json"


def _user(record: UserRecord, customer: CustomerRecord | None) -> dict[str, Any]:
    return {
        "id": record.id,
        "email": record.email,
        "emailVerified": record.email_verified,
        "firstName": record.first_name,
        "lastName": record.last_name,
        "phone": record.phone,
        "customer": None
        if customer is None
        else {
            "id": customer.stripe_customer_id,
            "email": customer.email,
            "name": customer.name,
            "phone": customer.phone,
            "createdAt": customer.created_at.isoformat(),
        },
    }


def _subscription(record: SubscriptionRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "planId": record.plan_id,
        "status": record.status.upper(),
        "stripeSubscriptionId": record.stripe_subscription_id,
        "priceId": record.price_id,
        "cancelAtPeriodEnd": record.cancel_at_period_end,
        "cancelAt": _time(record.cancel_at),
        "currentPeriodEnd": _time(record.current_period_end),
        "trialEnd": _time(record.trial_end),
        "updatedAt": record.updated_at.isoformat(),
    }


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _usage(record: UsageRecordRow) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "metric": record.metric,
        "quantity": record.quantity,
        "createdAt": record.created_at.isoformat(),
    }


def document(
    data: export.AccountExport,
    stripe_customer: Mapping[str, Any] | None,
    errors: list[dict[str, Any]],
) -> dict[str, Any]:
    """The export as the GraphQL `export` field would answer it, all fields selected."""
    body: dict[str, Any] = {
        "userProfile": _user(data.user, data.customer),
        "subscription": _subscription(data.subscription),
        "usageRecords": [_usage(r) for r in data.usage_records],
        "subscriptions": [_subscription(r) for r in data.subscriptions],
        "stripeCustomer": None if stripe_customer is None else dict(stripe_customer),
        "exportTimestamp": data.exported_at.isoformat(),
        "exportVersion": data.version,
    }
    if errors:
        body["errors"] = errors
    return body


def readable_json(body: Mapping[str, Any]) -> str:
    """One top-level field a line and one list item a line: easy to read and to diff, and
    every piece is written by `json`'s C encoder. (`indent=` switches to its pure-Python
    encoder: a third slower here, and its thousands of small strings kept a worker ~1.3 MB
    bigger after a burst of downloads.)"""
    fields = []
    for key, value in body.items():
        if isinstance(value, list) and value:
            items = ",\n".join("    " + _compact(item) for item in value)
            fields.append(f"  {_compact(key)}: [\n{items}\n  ]")
        else:
            fields.append(f"  {_compact(key)}: {_compact(value)}")
    return "{\n" + ",\n".join(fields) + "\n}\n"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


async def account_export(request: Request) -> Response:
    """Bearer auth as for GraphQL; 401 with `UNAUTHENTICATED` for a missing or bad token,
    429 with `RATE_LIMITED` and `Retry-After` when the user exported too often, 503 with
    `Retry-After` when the server is too busy to build it now."""
    try:
        runtime: Runtime = request.state.runtime
        async with export_slot(runtime):
            return await _download(runtime, request.headers.get("authorization"))
    except Unauthenticated as exc:
        return JSONResponse(
            {"errors": [domain_entry(exc)]}, 401, headers={"WWW-Authenticate": "Bearer"}
        )
    except RateLimited as exc:
        return JSONResponse(
            {"errors": [domain_entry(exc)]}, 429, headers={"Retry-After": str(exc.retry_after)}
        )
    except (ServiceBusy, PoolExhausted) as exc:
        refusal = exc if isinstance(exc, ServiceBusy) else busy()
        return JSONResponse({"errors": [domain_entry(refusal)]}, 503, headers={"Retry-After": "1"})
    except Exception:
        request_id = request.state.request_id
        log.exception("account export failed", extra={"request_id": request_id})
        return JSONResponse({"errors": [masked_entry(request_id)]}, 500)


async def _download(runtime: Runtime, authorization: str | None) -> Response:
    user = await resolve_caller(runtime, authorization)
    data = await export.our_data(runtime.pool, user, rate_limit=runtime.settings.rate_limits.export)
    customer_id = None if data.customer is None else data.customer.stripe_customer_id
    errors: list[dict[str, Any]] = []
    try:
        stripe_customer = await export.stripe_customer(
            runtime.pool,
            runtime.stripe,
            user,
            customer_id,
            rate_limit=runtime.settings.rate_limits.stripe,
        )
    except (PaymentProviderError, StripeNotConfigured, RateLimited) as exc:
        stripe_customer = None
        errors.append(domain_entry(exc, ["stripeCustomer"]))
    return Response(
        readable_json(document(data, stripe_customer, errors)),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{filename(data.user.id)}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
