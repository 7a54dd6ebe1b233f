"""Deleting an account (GDPR erasure): stop billing in Stripe first, then erase our rows.

The order matters. Stripe comes first, so a Stripe failure leaves the account whole and the
user can simply retry; our rows go only once no subscription can bill them again. Every
Stripe step is safe to repeat: already-ended subscriptions are skipped, and the gateway
treats cancelling or deleting something Stripe no longer has as done.

Deletions of one user are serialised with each other, and with the creation of that user's
Stripe customer, by the advisory lock `services.customers` takes: a customer cannot be
created behind the back of a deletion, and of two concurrent deletions the second finds the
account gone.
"""

from __future__ import annotations

import logging

from db import customers as db_customers
from db import tombstones as db_tombstones
from db.connection import Connection
from db.users import UserRecord
from services import rate_limits
from services.errors import Unauthenticated
from services.stripe_gateway import CustomerGone, StripeGateway
from services.subscription_sync import ENDED

log = logging.getLogger(__name__)


DELETED = "Your account and all its data have been deleted."
SUBSCRIPTIONS_CANCELED = " Any subscription was canceled at once; you will not be billed again."
CUSTOMER_KEPT = " Your billing history stays with our payment provider."
CUSTOMER_DELETED = " Your billing record was deleted from our payment provider."


async def delete_account(
    conn: Connection,
    stripe: StripeGateway,
    user: UserRecord,
    *,
    delete_from_stripe: bool,
    rate_limit: rate_limits.Bucket,
) -> str:
    """Erase the user; returns what to tell them. Raises before erasing anything when Stripe
    is not configured or fails (`STRIPE_NOT_CONFIGURED`, `PAYMENT_PROVIDER_ERROR`).

    The rate limit is counted outside the transaction, so an attempt that fails and rolls
    back still counts; its state outlives the account, so coming back does not reset it."""
    await rate_limits.check(conn, user.id, rate_limit)
    async with conn.transaction():
        await db_customers.lock_for_user(conn, user.id)
        customer = await db_customers.get(conn, user.id)
        message = DELETED
        if customer is not None:
            message += await _stop_billing(
                stripe, customer.stripe_customer_id, delete_from_stripe=delete_from_stripe
            )
        if not await db_tombstones.delete_user(conn, user.id):
            raise Unauthenticated("This account was deleted")  # by a concurrent request
        await db_tombstones.record(conn, user.id, customer.stripe_customer_id if customer else None)
    log.info("user %s: account deleted (from Stripe too: %s)", user.id, delete_from_stripe)
    return message


async def _stop_billing(
    stripe: StripeGateway, customer_id: str, *, delete_from_stripe: bool
) -> str:
    """Cancel every live subscription at once; with `delete_from_stripe`, delete the customer.

    The customer is retrieved first: one deleted in the Dashboard already had its
    subscriptions canceled by Stripe, and listing them could be refused.
    """
    stripe.require()
    try:
        await stripe.retrieve_customer(customer_id)
    except CustomerGone:
        return SUBSCRIPTIONS_CANCELED + CUSTOMER_DELETED
    for subscription in await stripe.list_subscriptions(customer_id):
        if subscription.status not in ENDED:
            await stripe.cancel_subscription(subscription.id)
    if delete_from_stripe:
        await stripe.delete_customer(customer_id)
        return SUBSCRIPTIONS_CANCELED + CUSTOMER_DELETED
    return SUBSCRIPTIONS_CANCELED + CUSTOMER_KEPT
