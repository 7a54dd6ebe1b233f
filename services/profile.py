"""Profile edits: saved at once, pushed to the Stripe customer by a durable job.

A push carries only what changed since the last one (the job's `fields`; queued edits merge
theirs). The login email belongs to the identity provider, the customer's billing email to
the customer, who may change it in the Portal (contract: "Emails"): a changed login email
is pushed only while Stripe's billing email still equals the login email Stripe was last
given (compared case-insensitively), or is empty.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from db import customers as db_customers
from db import jobs as db_jobs
from db import users as db_users
from db.connection import Pool
from db.locks import user_transaction
from db.users import UserRecord
from services.customers import SOURCE, display_name
from services.emails import same_email
from services.errors import Unauthenticated
from services.stripe_gateway import CustomerGone, StripeGateway
from services.subscriptions import read_clock
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
    pool: Pool, user: UserRecord, changes: Mapping[str, str | None]
) -> UserRecord:
    """Validate everything first (`BadUserInput`, nothing saved), then save and queue the
    Stripe push of the changed fields atomically.

    `changes` holds only the fields the caller sent (`firstName`, `lastName`, `phone`); a
    None value clears that field.
    """
    values = _validated(changes)
    if not values:
        return user
    async with user_transaction(pool, user.id) as pg:
        updated = await db_users.update_profile(pg, user.id, values)
        if updated is None:
            raise Unauthenticated("This account no longer exists")
        await db_jobs.enqueue(pg, user.id, db_jobs.PROFILE_SYNC, fields=values)
    return updated


async def push_to_stripe(pool: Pool, stripe: StripeGateway, job: db_jobs.JobRecord) -> str | None:
    """Send the changed fields as the profile holds them now; returns the login email it
    pushed, if it pushed one. Stripe failures raise (the worker retries)."""
    if not stripe.configured:
        return None
    async with pool.connection() as pg:
        user = await db_users.get(pg, job.user_id)
        customer = await db_customers.get(pg, job.user_id)
    if user is None or customer is None:
        return None
    changed = set(job.fields)
    params: dict[str, object] = {}
    if changed & {"first_name", "last_name"}:
        params["name"] = display_name(user) or ""
    if "phone" in changed:
        params["phone"] = user.phone or ""
    pushed_email = None
    if "email" in changed and user.email:
        try:
            billing = (await stripe.retrieve_customer(customer.stripe_customer_id)).email
        except CustomerGone:
            return None
        if not billing or job.previous_email is None or same_email(billing, job.previous_email):
            params["email"] = pushed_email = user.email
    if not params:
        return None
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    started_at = await read_clock(pool)
    try:
        updated = await stripe.update_customer(
            customer.stripe_customer_id,
            params,
            idempotency_key=f"{SOURCE}:profile:{job.id}:{job.version}:{digest}",
        )
    except CustomerGone:
        return None
    async with user_transaction(pool, job.user_id) as pg:
        if await db_customers.advance_fence(pg, updated.id, "customer", started_at):
            await db_customers.mirror(
                pg, updated.id, email=updated.email, name=updated.name, phone=updated.phone
            )
    return pushed_email
