"""`GET /account/export`: the caller's `export` as a JSON file to keep.

The file is the GraphQL `export` itself: the download runs `DOCUMENT` (every field of the
export) through the same engine and resolvers as `POST /graphql`, so the two never differ.
When Stripe cannot be asked for the customer, the file still comes (200) with
`stripeCustomer: null` and an `errors` entry saying why, as GraphQL answers: a user
downloading their data is better served by all we hold plus a note on the missing part than
by nothing at all, and can download again later.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from graphql import DocumentNode
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.graphql.endpoint import GraphQLEndpoint
from app.graphql.errors import INTERNAL, domain_entry, masked_entry
from app.runtime import Runtime, export_slot, resolve_caller
from db.connection import PoolExhausted
from resolvers.context import Context
from services.errors import RateLimited, ServiceBusy, Unauthenticated, busy

log = logging.getLogger(__name__)

_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._@+-]")
MAX_FILENAME_ID = 200

SUBSCRIPTION_FIELDS = (
    "planId status stripeSubscriptionId priceId cancelAtPeriodEnd cancelAt currentPeriodEnd "
    "trialEnd updatedAt"
)
# Everything the export holds, in the file's order.
DOCUMENT = f"""
query Download {{
  export {{
    userProfile {{
      id email emailVerified firstName lastName phone
      customer {{ id email name phone createdAt }}
    }}
    subscription {{ {SUBSCRIPTION_FIELDS} }}
    usageRecords {{ id metric quantity createdAt }}
    subscriptions {{ {SUBSCRIPTION_FIELDS} }}
    invoices {{
      id number status currency amountDue amountPaid createdAt periodStart periodEnd
      hostedInvoiceUrl invoicePdf
    }}
    stripeCustomer
    exportTimestamp
    exportVersion
  }}
}}
"""


def filename(user_id: str) -> str:
    """`customer-data-<user id>.json`, with anything that could break out of the quoted
    header value or name a path (quotes, backslashes, slashes, control and non-ASCII
    characters) replaced by `_`, and bounded in length."""
    return f"customer-data-{_UNSAFE_IN_FILENAME.sub('_', user_id)[:MAX_FILENAME_ID]}.json"


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


class Download:
    """The route. Bearer auth as for GraphQL; 401 with `UNAUTHENTICATED` for a missing or
    bad token, 429 with `RATE_LIMITED` and `Retry-After` when the user exported (or asked)
    too often, 503 with `Retry-After` when the server is too busy to build it now."""

    def __init__(self, graphql: GraphQLEndpoint) -> None:
        self._graphql = graphql
        prepared = graphql.documents.prepare(DOCUMENT)
        assert prepared.document is not None, prepared.errors
        self._document: DocumentNode = prepared.document

    async def handle(self, request: Request) -> Response:
        request_id: str = request.state.request_id
        try:
            runtime: Runtime = request.state.runtime
            async with export_slot(runtime):
                return await self._download(runtime, request, request_id)
        except Unauthenticated as exc:
            return _unauthenticated(domain_entry(exc))
        except RateLimited as exc:
            return _too_many(domain_entry(exc), exc.retry_after)
        except (ServiceBusy, PoolExhausted) as exc:
            return _busy(domain_entry(exc if isinstance(exc, ServiceBusy) else busy()))
        except Exception:
            log.exception("account export failed", extra={"request_id": request_id})
            return JSONResponse({"errors": [masked_entry(request_id)]}, 500)

    async def _download(self, runtime: Runtime, request: Request, request_id: str) -> Response:
        user = await resolve_caller(runtime, request.headers.get("authorization"))
        data, errors = await self._graphql.execute(
            Context(runtime, caller=user), self._document, None, None, request_id
        )
        if data is None:  # the export itself failed: answer as the first error says
            return _refusal(errors[0])
        body = dict(data["export"])
        if errors:
            body["errors"] = [{**e, "path": e.get("path", [])[1:]} for e in errors]
        return Response(
            readable_json(body),
            media_type="application/json",
            headers={
                "Content-Disposition": f'attachment; filename="{filename(user.id)}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )


def _refusal(error: dict[str, Any]) -> Response:
    entry = {key: value for key, value in error.items() if key not in ("path", "locations")}
    code = entry.get("extensions", {}).get("code")
    if code == "UNAUTHENTICATED":
        return _unauthenticated(entry)
    if code == "RATE_LIMITED":
        return _too_many(entry, int(entry["extensions"].get("retryAfter", 1)))
    if code == INTERNAL and entry["extensions"].get("retryable"):
        return _busy(entry)
    return JSONResponse({"errors": [entry]}, 500)


def _unauthenticated(entry: dict[str, Any]) -> Response:
    return JSONResponse({"errors": [entry]}, 401, headers={"WWW-Authenticate": "Bearer"})


def _too_many(entry: dict[str, Any], retry_after: int) -> Response:
    return JSONResponse({"errors": [entry]}, 429, headers={"Retry-After": str(retry_after)})


def _busy(entry: dict[str, Any]) -> Response:
    return JSONResponse({"errors": [entry]}, 503, headers={"Retry-After": "1"})
