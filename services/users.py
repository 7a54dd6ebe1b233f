"""Who the caller is: the user row behind a verified token, provisioned on first sight."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from db import users as db_users
from db.connection import Connection
from db.users import UserRecord
from services.errors import BadUserInput
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


async def current_user(conn: Connection, identity: Identity) -> UserRecord:
    """The caller's row. Email follows the latest token; the profile is filled only once."""
    user = await db_users.get(conn, identity.subject)
    if user is None:
        first, last, phone = _initial_profile(identity)
        user = await db_users.insert_if_absent(
            conn,
            user_id=identity.subject,
            email=identity.email,
            email_verified=identity.email_verified,
            first_name=first,
            last_name=last,
            phone=phone,
        )
        if user is None:  # a concurrent first request inserted it
            user = await db_users.get(conn, identity.subject)
            assert user is not None
    if user.email != identity.email or user.email_verified != identity.email_verified:
        updated = await db_users.update_identity(
            conn, user.id, email=identity.email, email_verified=identity.email_verified
        )
        assert updated is not None
        user = updated
    return user
