"""The user's Stripe customer: found in our database, else in Stripe by email, else created.

Creation is serialised per user by a PostgreSQL advisory lock held for one transaction on
the request's single connection, so concurrent requests for one new user make exactly one
Stripe customer and one link. The Stripe create carries an idempotency key derived from the
user (and from the customer it replaces, if any), so a retry after a lost response returns
the same customer instead of a second one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime

from db import customers as db_customers
from db import notifications as db_notifications
from db import subscriptions as db_subscriptions
from db import users as db_users
from db.connection import Connection
from db.customers import CustomerRecord
from db.users import UserRecord
from services.errors import Unauthenticated
from services.stripe_gateway import StripeCustomer, StripeGateway

log = logging.getLogger(__name__)

SOURCE = "billing-api"


def display_name(user: UserRecord) -> str | None:
    return " ".join(part for part in (user.first_name, user.last_name) if part) or None


def _creation_key(user: UserRecord, params: dict[str, object], replacing: str | None) -> str:
    """Same user, same parameters, same replaced customer → same key (and one customer).

    The parameters' digest is part of the key because Stripe refuses a key reused with
    other parameters; a changed email must not wedge customer creation for 24 hours.
    """
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return f"{SOURCE}:customer:{user.id}:{replacing or 'first'}:{digest}"


CUSTOMER_DELETED_MESSAGE = (
    "Your billing account was deleted, so your subscription has ended. "
    "Subscribe again at any time to restore paid features."
)


async def forget_gone(conn: Connection, user_id: str, customer_id: str) -> bool:
    """Stripe no longer has the user's customer (deleted in the Dashboard, say): unlink it,
    end the subscription it carried and tell the user, once. False when it was not linked."""
    if not await db_customers.unlink(conn, user_id, customer_id):
        return False
    await db_subscriptions.mark_canceled(conn, user_id)
    await db_notifications.add(conn, user_id, "customer_deleted", CUSTOMER_DELETED_MESSAGE)
    return True


async def get_or_create(
    conn: Connection, stripe: StripeGateway, user: UserRecord, *, replacing: str | None = None
) -> CustomerRecord:
    existing = await db_customers.get(conn, user.id)
    if existing is not None and existing.stripe_customer_id != replacing:
        return existing
    stripe.require()
    async with conn.transaction():
        await db_customers.lock_for_user(conn, user.id)
        if await db_users.get(conn, user.id) is None:
            raise Unauthenticated("This account no longer exists")  # deleted while we waited
        existing = await db_customers.get(conn, user.id)
        if existing is not None:
            if existing.stripe_customer_id != replacing:
                return existing  # another request linked one while we waited
            await db_customers.unlink(conn, user.id, existing.stripe_customer_id)
            log.info("user %s: customer %s is gone from Stripe, replacing it", user.id, replacing)
        customer = await _adoptable(conn, stripe, user, exclude=replacing)
        if customer is None:
            metadata = {"userId": user.id, "source": SOURCE}
            params: dict[str, object] = {
                "email": user.email,
                "name": display_name(user),
                "phone": user.phone,
                "metadata": metadata,
            }
            customer = await stripe.create_customer(
                email=user.email,
                name=display_name(user),
                phone=user.phone,
                metadata=metadata,
                idempotency_key=_creation_key(user, params, replacing),
            )
        return await link(conn, user.id, customer)


async def link(conn: Connection, user_id: str, customer: StripeCustomer) -> CustomerRecord:
    """Link the user to the Stripe customer; from now on they have a (free) subscription row."""
    record = await db_customers.link(
        conn,
        user_id=user_id,
        stripe_customer_id=customer.id,
        email=customer.email,
        name=customer.name,
        phone=customer.phone,
        created_at=datetime.fromtimestamp(customer.created, UTC),
    )
    await db_subscriptions.ensure_free(conn, user_id)
    return record


async def _adoptable(
    conn: Connection, stripe: StripeGateway, user: UserRecord, *, exclude: str | None
) -> StripeCustomer | None:
    """A customer Stripe already has for this verified email that is not someone else's."""
    if not user.email or not user.email_verified:
        return None
    for candidate in await stripe.find_customers_by_email(user.email):
        owner = candidate.metadata.get("userId")
        if candidate.id == exclude or owner not in (None, "", user.id):
            continue
        if await db_customers.owner_of(conn, candidate.id) not in (None, user.id):
            continue
        if owner != user.id:
            candidate = await stripe.update_customer(
                candidate.id,
                {"metadata": {"userId": user.id}},
                idempotency_key=f"{SOURCE}:adopt:{user.id}:{candidate.id}",
            )
        log.info("user %s: adopted existing Stripe customer %s", user.id, candidate.id)
        return candidate
    return None
