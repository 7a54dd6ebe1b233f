"""Who the caller is: the user row behind a verified token, provisioned on first sight."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from db import jobs as db_jobs
from db import tombstones as db_tombstones
from db import users as db_users
from db.connection import Connection, Database
from db.users import UserRecord
from services.errors import BadUserInput, Unauthenticated
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


async def _refuse_if_deleted(conn: Connection, identity: Identity) -> datetime | None:
    """A token from before the account's deletion must not provision it again.

    Checked only when the user row is missing, so it costs nothing on ordinary requests.
    A token without `iat` cannot prove it is newer, so it is refused too.
    """
    tombstone = await db_tombstones.get(conn, identity.subject)
    if tombstone is not None and (
        identity.issued_at is None or identity.issued_at <= tombstone.deleted_at
    ):
        raise Unauthenticated("This account was deleted")
    return None if tombstone is None else tombstone.deleted_at


async def known_user(database: Database, identity: Identity, within: float) -> UserRecord | None:
    """The caller's row when it exists and the token brings nothing new: nearly every request,
    answered by one pooled read. None sends the caller through `current_user`."""
    user = await db_users.get_pooled(database, identity.subject, within)
    if user is None or _token_brings_news(user, identity):
        return None
    _refuse_older_tokens(user, identity)
    return user


def _token_brings_news(user: UserRecord, identity: Identity) -> bool:
    """The provider's email or its verification changed: ours must follow."""
    return user.email != identity.email or user.email_verified != identity.email_verified


def _refuse_older_tokens(user: UserRecord, identity: Identity) -> None:
    if user.tokens_not_before is not None and (
        identity.issued_at is None or identity.issued_at <= user.tokens_not_before
    ):
        raise Unauthenticated("This account was deleted")


async def current_user(conn: Connection, identity: Identity) -> UserRecord:
    """The caller's row. Email follows the latest token; the profile is filled only once."""
    user = await db_users.get(conn, identity.subject)
    if user is None:
        deleted_at = await _refuse_if_deleted(conn, identity)
        first, last, phone = _initial_profile(identity)
        user = await db_users.insert_if_absent(
            conn,
            user_id=identity.subject,
            email=identity.email,
            email_verified=identity.email_verified,
            first_name=first,
            last_name=last,
            phone=phone,
            tokens_not_before=deleted_at,
        )
        if user is None:  # a concurrent first request inserted it
            user = await db_users.get(conn, identity.subject)
            assert user is not None
    _refuse_older_tokens(user, identity)
    if _token_brings_news(user, identity):
        email_changed = user.email != identity.email
        async with conn.transaction():
            updated = await db_users.update_identity(
                conn, user.id, email=identity.email, email_verified=identity.email_verified
            )
            assert updated is not None
            if email_changed and identity.email:
                # The Stripe customer follows the provider's email like a profile edit.
                await db_jobs.enqueue(conn, user.id, db_jobs.PROFILE_SYNC)
        user = updated
    return user
