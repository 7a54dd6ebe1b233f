"""The one mapping from domain errors to the contract's `extensions.code`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError

from db.connection import PoolExhausted
from services import errors

log = logging.getLogger("app.graphql.errors")

INTERNAL = "INTERNAL_SERVER_ERROR"
ERROR_CODES: dict[type[errors.DomainError], str] = {
    errors.Unauthenticated: "UNAUTHENTICATED",
    errors.BadUserInput: "BAD_USER_INPUT",
    errors.EmailNotVerified: "EMAIL_NOT_VERIFIED",
    errors.NotFound: "NOT_FOUND",
    errors.AlreadySubscribed: "ALREADY_SUBSCRIBED",
    errors.StripeNotConfigured: "STRIPE_NOT_CONFIGURED",
    errors.PaymentProviderError: "PAYMENT_PROVIDER_ERROR",
    errors.RateLimited: "RATE_LIMITED",
    errors.QueryTooComplex: "QUERY_TOO_COMPLEX",
    # Not a contract code of its own: unexpected for the caller, but with a message that
    # says what to do and reveals nothing of the internals.
    errors.ServiceBusy: INTERNAL,
}

PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
BAD_USER_INPUT = ERROR_CODES[errors.BadUserInput]


def code_for(error: errors.DomainError) -> str:
    for cls in type(error).__mro__:
        if cls in ERROR_CODES:
            return ERROR_CODES[cls]
    return INTERNAL


def document_entry(error: GraphQLError) -> dict[str, Any]:
    """An error of parsing or validating the document."""
    code = PARSE_FAILED if isinstance(error, GraphQLSyntaxError) else VALIDATION_FAILED
    return request_entry(error, code)


def request_entry(error: GraphQLError, code: str) -> dict[str, Any]:
    """An error about the request itself, found before anything ran: the document's
    (`document_entry`), or a variable that does not coerce to its type (`BAD_USER_INPUT`,
    as in Apollo)."""
    formatted: dict[str, Any] = dict(error.formatted)
    formatted["extensions"] = {**(error.extensions or {}), "code": code}
    return formatted


def format_error(error: GraphQLError, request_id: str) -> dict[str, Any]:
    """An error raised while executing a field, as the SPA sees it: always a code;
    internals never leave the process."""
    original = error.original_error
    formatted: dict[str, Any] = dict(error.formatted)
    if isinstance(original, PoolExhausted):
        original = errors.busy()
    if isinstance(original, errors.DomainError):
        return {**formatted, **domain_entry(original)}
    if isinstance(original, GraphQLError) and original.nodes:
        # graphql-core refused an argument's value, pointing at it in the document: a
        # variable that is null where the argument may not be.
        formatted["extensions"] = {**(error.extensions or {}), "code": BAD_USER_INPUT}
        return formatted
    log.error(
        "unexpected error in %s",
        ".".join(str(p) for p in error.path or ()) or "operation",
        exc_info=original or error,
        extra={"request_id": request_id},
    )
    return masked_entry(request_id, error.path)


def domain_entry(
    error: errors.DomainError, path: Sequence[str | int] | None = None
) -> dict[str, Any]:
    """An expected failure as clients see it (GraphQL errors and the download's alike)."""
    entry: dict[str, Any] = {
        "message": error.message,
        "extensions": {**error.extensions, "code": code_for(error)},
    }
    if path is not None:
        entry["path"] = list(path)
    return entry


def masked_entry(request_id: str, path: Sequence[str | int] | None = None) -> dict[str, Any]:
    """An unexpected failure: a code and the request ID to quote, nothing of the internals."""
    entry: dict[str, Any] = {
        "message": "Internal server error",
        "extensions": {"code": INTERNAL, "requestId": request_id},
    }
    if path is not None:
        entry["path"] = list(path)
    return entry
