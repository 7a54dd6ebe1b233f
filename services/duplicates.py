"""A duplicate subscription that got paid: canceled at once, refunded in full, user told.

Two tabs can each complete a Checkout session of one user (contract: "One checkout at a
time"). When two entitled subscriptions carrying this service's `metadata.userId` both
had money paid, `services.subscriptions` queues a job for every one but the oldest; this
runs it. Each step is safe to repeat (Stripe calls under deterministic idempotency keys, an
ended subscription and a refunded payment count as done), and the user is told once: the
notification is written in the same transaction that marks the subscription refunded.
"""

from __future__ import annotations

import logging

from db import jobs as db_jobs
from db import notifications as db_notifications
from db import subscriptions as db_subscriptions
from db.connection import Pool
from db.locks import user_transaction
from services import subscriptions
from services.customers import SOURCE
from services.metrics import Metrics
from services.plans import PlanCatalog
from services.stripe_gateway import StripeGateway

log = logging.getLogger(__name__)

KIND = "duplicate_subscription_refunded"
MESSAGE = (
    "You were charged twice for your plan: we canceled the second subscription at once "
    "and refunded its payment in full. Your first subscription continues."
)


async def end_duplicate(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    job: db_jobs.JobRecord,
    metrics: Metrics | None = None,
) -> None:
    """Cancel the job's subscription (its ID is the job's subject), refund what its latest
    invoice took, and notify the user; Stripe failures raise (the worker retries)."""
    subscription_id = job.subject
    async with pool.connection() as pg:
        rows = await db_subscriptions.of_user(pg, job.user_id)
    row = next((r for r in rows if r.stripe_subscription_id == subscription_id), None)
    if row is None or row.duplicate_refunded_at is not None:
        return
    invoice_id = await _latest_invoice(stripe, row.stripe_customer_id, subscription_id)
    await stripe.cancel_subscription(
        subscription_id, idempotency_key=f"{SOURCE}:duplicate-cancel:{subscription_id}"
    )
    if invoice_id is not None:
        for intent in await stripe.invoice_payment_intents(invoice_id):
            await stripe.refund_payment_intent(
                intent,
                idempotency_key=f"{SOURCE}:duplicate-refund:{intent}",
                metadata={"userId": job.user_id, "reason": "duplicate_subscription"},
            )
    async with user_transaction(pool, job.user_id) as pg:
        if await db_subscriptions.mark_duplicate_refunded(pg, subscription_id):
            await db_notifications.add(pg, job.user_id, KIND, MESSAGE)
            log.warning(
                "user %s: duplicate subscription %s canceled and refunded",
                job.user_id,
                subscription_id,
            )
            if metrics is not None:
                metrics.duplicates_refunded.inc()
    if row.stripe_customer_id is not None:
        await subscriptions.refresh(pool, stripe, plans, job.user_id, row.stripe_customer_id)


async def _latest_invoice(
    stripe: StripeGateway, customer_id: str | None, subscription_id: str
) -> str | None:
    if customer_id is None:
        return None
    for found in await stripe.list_subscriptions(customer_id):
        if found.id == subscription_id:
            return found.latest_invoice_id
    return None
