"""One error type per contract code; the edge turns each into `extensions.code`."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """An expected failure with a message the user can act on."""

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = extensions


class Unauthenticated(DomainError):
    pass


class BadUserInput(DomainError):
    pass


class EmailNotVerified(DomainError):
    pass


class NotFound(DomainError):
    pass


class AlreadySubscribed(DomainError):
    pass


class StripeNotConfigured(DomainError):
    pass


class PaymentProviderError(DomainError):
    pass


class RateLimited(DomainError):
    @property
    def retry_after(self) -> int:
        """Whole seconds until the attempt would be allowed, for a `Retry-After` header."""
        return int(self.extensions["retryAfter"])


class QueryTooComplex(DomainError):
    """The operation would cost more than the limit; nothing of it was executed."""


class ServiceBusy(DomainError):
    """Overloaded for a moment (e.g. no database connection free); safe to retry."""


def busy() -> ServiceBusy:
    """No database connection (or export slot) came free in time."""
    return ServiceBusy(
        "The service is busy right now; please try again in a moment.", retryable=True
    )
