"""A user's subscriptions: mirrored from Stripe, and which one is "the" subscription.

**Mirroring.** Every path that learns "something changed" (webhooks, `syncSubscription`,
the recovery command, adoption of a customer) re-reads *all* of the customer's
subscriptions from Stripe and stores each. The read happens outside any transaction; the
write then happens in a short user transaction, and only if no read that started later
was written first (the read fence, `db.customers.advance_fence`). So no connection waits on
Stripe, and whatever order reads finish in, an older one never overwrites a newer one.

**The rule** (contract: "Which subscription is the subscription"): an entitled one
(`active`, `trialing`, `past_due`) before any other live one (`incomplete`, `unpaid`,
`paused`), before an ended one (`canceled`, `incomplete_expired`); newest first within
each rank. Without any Stripe subscription a linked user has the free row.

**Cancellation.** Stripe schedules one with `cancel_at_period_end` or with `cancel_at` (the
Billing Portal on current API versions sets `cancel_at` to the period end): stored as
`cancel_at` (when it takes effect, from either) and `cancel_at_period_end` (true when that
is the end of the current period).

**Duplicates.** Two entitled subscriptions carrying this service's `metadata.userId` whose
latest invoices both had money paid: every one but the oldest is queued to be canceled and
refunded (`services.duplicates`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from db import customers as db_customers
from db import jobs as db_jobs
from db import subscriptions as db_subscriptions
from db.connection import Pg, Pool
from db.locks import user_transaction
from db.subscriptions import StripeState, SubscriptionRecord
from services.plans import CUSTOM_PLAN_ID, PlanCatalog
from services.stripe_gateway import StripeGateway, StripeSubscription

ENTITLED = frozenset({"active", "trialing", "past_due"})
LIVE = frozenset({"incomplete", "unpaid", "paused"})
ENDED = frozenset({"canceled", "incomplete_expired"})


def _rank(record: SubscriptionRecord) -> tuple[int, int, float, int]:
    """Sort key: Stripe subscriptions by the rule, the free row last."""
    if record.stripe_subscription_id is None:
        return (1, 0, 0.0, 0)
    status_rank = 0 if record.status in ENTITLED else 1 if record.status in LIVE else 2
    return (0, status_rank, -record.created_at.timestamp(), -record.id)


def ordered(records: Iterable[SubscriptionRecord]) -> list[SubscriptionRecord]:
    """The user's Stripe subscriptions by the rule (the free row left out)."""
    return sorted((r for r in records if r.stripe_subscription_id is not None), key=_rank)


def the_subscription(records: Iterable[SubscriptionRecord]) -> SubscriptionRecord | None:
    """The one that matters: the first by the rule, else the free row; None without any."""
    return min(records, key=_rank, default=None)


def blocks_checkout(records: Iterable[SubscriptionRecord]) -> bool:
    """`ALREADY_SUBSCRIBED`: the subscription that matters is an entitled Stripe one."""
    current = the_subscription(records)
    return (
        current is not None
        and current.stripe_subscription_id is not None
        and current.status in ENTITLED
    )


def _time(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def state_of(subscription: StripeSubscription, plans: PlanCatalog) -> StripeState:
    """How one Stripe subscription is stored: the plan it is on, its cancellation."""
    plan = plans.for_price(subscription.price_id)
    cancel_at = subscription.cancel_at
    if cancel_at is None and subscription.cancel_at_period_end and subscription.period_ends:
        cancel_at = min(subscription.period_ends)  # as Stripe resolves it
    return StripeState(
        stripe_subscription_id=subscription.id,
        plan_id=plan.id if plan is not None else CUSTOM_PLAN_ID,
        status=subscription.status,
        price_id=subscription.price_id,
        cancel_at_period_end=subscription.cancel_at_period_end
        or (cancel_at is not None and cancel_at in subscription.period_ends),
        cancel_at=_time(cancel_at),
        current_period_end=_time(subscription.current_period_end),
        trial_end=_time(subscription.trial_end),
        created_at=datetime.fromtimestamp(subscription.created, UTC),
        metadata_user_id=subscription.metadata.get("userId") or None,
        paid=subscription.latest_invoice_paid > 0,
    )


async def apply(
    pg: Pg,
    plans: PlanCatalog,
    user_id: str,
    customer_id: str,
    subscriptions: Sequence[StripeSubscription],
    read_started_at: datetime,
) -> bool:
    """Store what a read of the customer's subscriptions found; inside the user's
    transaction. False (nothing written) when a newer read was applied already or the
    customer is no longer the user's; True when something changed."""
    if not await db_customers.advance_fence(pg, customer_id, "subscriptions", read_started_at):
        return False
    changed = False
    for subscription in subscriptions:
        state = state_of(subscription, plans)
        changed |= await db_subscriptions.write_state(pg, user_id, customer_id, state)
    await _queue_duplicates(pg, user_id)
    return changed


async def _queue_duplicates(pg: Pg, user_id: str) -> None:
    paid_by_us = sorted(
        (
            r
            for r in await db_subscriptions.of_user(pg, user_id)
            if r.status in ENTITLED
            and r.paid
            and r.metadata_user_id == user_id
            and r.duplicate_refunded_at is None
        ),
        key=lambda r: (r.created_at, r.stripe_subscription_id or ""),
    )
    for duplicate in paid_by_us[1:]:
        assert duplicate.stripe_subscription_id is not None
        await db_jobs.enqueue(
            pg, user_id, db_jobs.DUPLICATE_SUBSCRIPTION, subject=duplicate.stripe_subscription_id
        )


async def read_clock(pool: Pool) -> datetime:
    """The database's clock now: the start time of a Stripe read about to be made."""
    async with pool.connection() as pg:
        return await db_customers.now(pg)


async def refresh(
    pool: Pool, stripe: StripeGateway, plans: PlanCatalog, user_id: str, customer_id: str
) -> bool:
    """Re-read the customer's subscriptions from Stripe now and store them (see the module's
    docstring); True when something changed."""
    started_at = await read_clock(pool)
    found = await stripe.list_subscriptions(customer_id)
    async with user_transaction(pool, user_id) as pg:
        return await apply(pg, plans, user_id, customer_id, found, started_at)


async def of_users(pool: Pool, user_ids: Sequence[str]) -> list[list[SubscriptionRecord]]:
    """Each user's rows (Stripe subscriptions and the free row), for the DataLoaders."""
    async with pool.connection() as pg:
        found = await db_subscriptions.for_users(pg, user_ids)
    return [found[user_id] for user_id in user_ids]


async def of_user(pool: Pool, user_id: str) -> list[SubscriptionRecord]:
    async with pool.connection() as pg:
        return await db_subscriptions.of_user(pg, user_id)
