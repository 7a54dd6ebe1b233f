"""Emails compare case-insensitively everywhere (the contract's rule).

Stripe's `email` filter on customer lists is case-sensitive, so a lookup asks for every
spelling that can matter: the one the identity provider gives and its lower case.
"""

from __future__ import annotations


def same_email(a: str | None, b: str | None) -> bool:
    """True when both name the same mailbox, ignoring letter case (or both are absent)."""
    if a is None or b is None:
        return a is b
    return a.strip().lower() == b.strip().lower()


def lookup_spellings(email: str) -> list[str]:
    """What to ask Stripe for: the email as given, then in lower case if that differs."""
    spellings = [email]
    if email.lower() != email:
        spellings.append(email.lower())
    return spellings
