"""Deleting an account (GDPR erasure): stop billing in Stripe first, then erase our rows.

The order matters. Stripe comes first, so a Stripe failure leaves the account whole and the
user can simply retry; our rows go only once no subscription can bill them again and no
open Checkout session can start one. Every Stripe step is safe to repeat: already-ended
subscriptions are skipped, and the gateway treats cancelling or deleting something Stripe
no longer has as done.

A customer kept in Stripe (without `deleteFromStripe`) is released: its `metadata.userId`
is removed and `accountDeleted` set, and the tombstone remembers it, so it is never
adopted or linked again by anyone, the same `sub` signing in afresh included.

The deletion runs in the user's turn (`services.single_flight`), so it is serialised with
their other billing operations (customer creation, checkout) across processes; of two
concurrent deletions the second finds the account gone.
"""

from __future__ import annotations

import logging

from db import customers as db_customers
from db import tombstones as db_tombstones
from db.connection import Pool
from db.locks import user_transaction
from db.users import UserRecord
from services import billing, customers, rate_limits
from services.errors import PaymentProviderError, Unauthenticated
from services.single_flight import SingleFlight
from services.stripe_gateway import CustomerGone, StripeGateway
from services.subscriptions import ENDED

log = logging.getLogger(__name__)


DELETED = "Your account and all its data have been deleted."
SUBSCRIPTIONS_CANCELED = " Any subscription was canceled at once; you will not be billed again."
CUSTOMER_KEPT = " Your billing history stays with our payment provider."
CUSTOMER_DELETED = " Your billing record was deleted from our payment provider."


async def delete_account(
    pool: Pool,
    stripe: StripeGateway,
    single_flight: SingleFlight,
    user: UserRecord,
    *,
    delete_from_stripe: bool,
    rate_limit: rate_limits.Bucket,
) -> str:
    """Erase the user; returns what to tell them. Raises before erasing anything when Stripe
    is not configured or fails (`STRIPE_NOT_CONFIGURED`, `PAYMENT_PROVIDER_ERROR`),
    `UNAUTHENTICATED` when a concurrent deletion won, `RATE_LIMITED`.

    The rate limit is counted first, outside any transaction, so an attempt that fails
    still counts; its state outlives the account, so coming back does not reset it."""
    await rate_limits.check(pool, user.id, rate_limit)
    async with single_flight.turn(user.id):
        customer = await customers.current(pool, user.id)
        customer_id = None if customer is None else customer.stripe_customer_id
        await billing.expire_open_sessions(pool, stripe, user.id)
        message = DELETED
        if customer_id is not None:
            message += await _stop_billing(
                stripe, user.id, customer_id, delete_from_stripe=delete_from_stripe
            )
        async with user_transaction(pool, user.id) as pg:
            linked = await db_customers.get(pg, user.id)
            if linked is not None and linked.stripe_customer_id != customer_id:
                raise PaymentProviderError(  # linked by a webhook a moment ago
                    "Your billing account changed while we were deleting; please try again.",
                    retryable=True,
                )
            if not await db_tombstones.delete_user(pg, user.id):
                raise Unauthenticated("This account was deleted")  # by a concurrent request
            await db_tombstones.record(pg, user.id, customer_id)
    log.info("user %s: account deleted (from Stripe too: %s)", user.id, delete_from_stripe)
    return message


async def _stop_billing(
    stripe: StripeGateway, user_id: str, customer_id: str, *, delete_from_stripe: bool
) -> str:
    """Cancel every live subscription at once; then delete the customer, or release it.

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
    try:
        await stripe.update_customer(
            customer_id,
            {"metadata": {"userId": "", customers.RELEASED: "true"}},
            idempotency_key=f"{customers.SOURCE}:release:{user_id}:{customer_id}",
        )
    except CustomerGone:
        return SUBSCRIPTIONS_CANCELED + CUSTOMER_DELETED
    return SUBSCRIPTIONS_CANCELED + CUSTOMER_KEPT
