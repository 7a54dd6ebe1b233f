"""Who the caller is: the user row behind a verified token, provisioned on first sight, with
the request counted against the user's request limit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from db import jobs as db_jobs
from db import tombstones as db_tombstones
from db import users as db_users
from db.connection import Pool
from db.locks import user_transaction
from db.users import UserRecord
from services.emails import same_email
from services.errors import BadUserInput, Unauthenticated
from services.rate_limits import Bucket
from services.validation import clean_name, normalize_phone, split_full_name


@dataclass(frozen=True, slots=True)
class Identity:
    """What a verified token says about its bearer."""

    subject: str
    email: str | None = None
    email_verified: bool = False
    given_name: str | None = None
    family_name: str | None = None
    name: str | None = None
    phone_number: str | None = None
    issued_at: datetime | None = None


async def caller(pool: Pool, identity: Identity, requests: Bucket) -> UserRecord:
    """The caller's row, this request counted against `requests` (`RateLimited` when over),
    `Unauthenticated` for a deleted account or a token older than its deletion.

    Nearly every request is one round trip: the row and the count in one statement. The
    first request of a user, or one whose token brings a new email or verification, goes on
    to `current_user`.
    """
    if requests.limit > 0:
        async with pool.connection() as pg:
            user, wait = await db_users.get_counting_request(
                pg,
                identity.subject,
                requests.name,
                emission=requests.emission,
                tolerance=requests.tolerance,
            )
        if wait is not None:
            raise requests.refusal(wait)
    else:
        async with pool.connection() as pg:
            user = await db_users.get(pg, identity.subject)
    if user is None or _identity_changed(user, identity):
        return await current_user(pool, identity)
    _refuse_older_tokens(user, identity)
    return user


def _initial_profile(identity: Identity) -> tuple[str | None, str | None, str | None]:
    """Profile fields from the claims; a claim that breaks our rules is dropped, not fatal."""
    first, last = identity.given_name, identity.family_name
    if first is None and last is None:
        first, last = split_full_name(identity.name)
    try:
        first = clean_name("firstName", first)
    except BadUserInput:
        first = None
    try:
        last = clean_name("lastName", last)
    except BadUserInput:
        last = None
    try:
        phone = normalize_phone("phone", identity.phone_number)
    except BadUserInput:
        phone = None
    return first, last, phone


def _identity_changed(user: UserRecord, identity: Identity) -> bool:
    """The provider's email (its spelling included) or its verification changed: ours
    follows."""
    return user.email != identity.email or user.email_verified != identity.email_verified


def _refuse_older_tokens(user: UserRecord, identity: Identity) -> None:
    if user.tokens_not_before is not None and (
        identity.issued_at is None or identity.issued_at <= user.tokens_not_before
    ):
        raise Unauthenticated("This account was deleted")


async def current_user(pool: Pool, identity: Identity) -> UserRecord:
    """The caller's row. Email follows the latest token; the profile is filled only once.

    A token from before the account's deletion must not provision it again (checked only
    when the row is missing); a token without `iat` cannot prove it is newer, so it is
    refused too. A changed login email is queued for the Stripe customer, with the old one
    (see `services.profile.push_to_stripe` for when it is pushed).
    """
    async with pool.connection() as pg:
        user = await db_users.get(pg, identity.subject)
        if user is None:
            tombstone = await db_tombstones.get(pg, identity.subject)
            if tombstone is not None and (
                identity.issued_at is None or identity.issued_at <= tombstone.deleted_at
            ):
                raise Unauthenticated("This account was deleted")
            first, last, phone = _initial_profile(identity)
            user = await db_users.insert_if_absent(
                pg,
                user_id=identity.subject,
                email=identity.email,
                email_verified=identity.email_verified,
                first_name=first,
                last_name=last,
                phone=phone,
                tokens_not_before=None if tombstone is None else tombstone.deleted_at,
            )
            if user is None:  # a concurrent first request inserted it
                user = await db_users.get(pg, identity.subject)
                assert user is not None
    _refuse_older_tokens(user, identity)
    if not _identity_changed(user, identity):
        return user
    async with user_transaction(pool, user.id) as pg:
        updated = await db_users.update_identity(
            pg, user.id, email=identity.email, email_verified=identity.email_verified
        )
        if updated is None:
            raise Unauthenticated("This account no longer exists")
        if identity.email and not same_email(user.email, identity.email):
            await db_jobs.enqueue(
                pg,
                user.id,
                db_jobs.PROFILE_SYNC,
                fields=["email"],
                previous_email=user.email,
            )
    return updated
