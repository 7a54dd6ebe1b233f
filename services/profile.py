"""Profile edits: saved at once, pushed to the Stripe customer by a durable job."""

from __future__ import annotations

from collections.abc import Mapping

from db import customers as db_customers
from db import jobs as db_jobs
from db import users as db_users
from db.connection import Connection
from db.users import UserRecord
from services.customers import SOURCE, display_name
from services.errors import Unauthenticated
from services.stripe_gateway import CustomerGone, StripeGateway
from services.validation import clean_name, normalize_phone

FIELDS = {"firstName": "first_name", "lastName": "last_name", "phone": "phone"}


def _validated(changes: Mapping[str, str | None]) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for field, value in changes.items():
        column = FIELDS[field]
        values[column] = (
            normalize_phone(field, value) if column == "phone" else clean_name(field, value)
        )
    return values


async def update_profile(
    conn: Connection, user: UserRecord, changes: Mapping[str, str | None]
) -> UserRecord:
    """Validate everything first, then save and enqueue the Stripe push atomically.

    `changes` holds only the fields the caller sent; a None value clears that field.
    """
    values = _validated(changes)
    if not values:
        return user
    async with conn.transaction():
        updated = await db_users.update_profile(conn, user.id, values)
        if updated is None:
            raise Unauthenticated("This account no longer exists")
        await db_jobs.enqueue(conn, user.id, db_jobs.PROFILE_SYNC)
    return updated


async def push_to_stripe(conn: Connection, stripe: StripeGateway, job: db_jobs.JobRecord) -> None:
    """Send the profile as it is now (so queued edits coalesce into one push)."""
    if not stripe.configured:
        return
    user = await db_users.get(conn, job.user_id)
    customer = await db_customers.get(conn, job.user_id)
    if user is None or customer is None:
        return
    params: dict[str, object] = {"name": display_name(user) or "", "phone": user.phone or ""}
    if user.email:
        params["email"] = user.email
    try:
        updated = await stripe.update_customer(
            customer.stripe_customer_id,
            params,
            idempotency_key=f"{SOURCE}:profile:{job.id}:{job.version}",
        )
    except CustomerGone:
        return
    # Under the user's lock, like the webhook handlers' writes, so theirs and ours are ordered.
    await db_customers.lock_for_user(conn, job.user_id)
    await db_customers.mirror(
        conn, updated.id, email=updated.email, name=updated.name, phone=updated.phone
    )
