"""In-app subscription management: cancel, resume, change plan, and preview a change.

Each acts on the user's live subscription — the one that matters (`services.subscriptions`)
unless it has ended — in the user's turn (`services.single_flight`), counts against the
user's Stripe bucket, and is reflected at once: the customer's subscriptions (and, after a
plan change, its invoices) are re-read from Stripe afterwards, as `syncSubscription` does.

Retries are safe: each Stripe change carries an idempotency key derived from the action,
the subscription and its state as we last read it, so a retry after a lost response (the
state not re-read since) replays Stripe's stored answer instead of acting twice, while the
same action asked again after the state moved on (cancel, resume, cancel) is a new change.

Plan changes are charged at once: the price swap is prorated and the proration invoiced and
paid in the same request (`proration_behavior=always_invoice`,
`payment_behavior=error_if_incomplete`), so a declined card refuses the change and nothing
changes. `preview_plan_change` shows exactly that charge, from Stripe's invoice preview.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from db.connection import Pool
from db.subscriptions import SubscriptionRecord
from db.users import UserRecord
from services import invoices, rate_limits, subscriptions
from services.customers import SOURCE
from services.errors import BadUserInput, NotFound
from services.plans import PlanCatalog
from services.single_flight import SingleFlight
from services.stripe_gateway import StripeGateway
from services.subscriptions import ENDED

NO_SUBSCRIPTION = "You have no subscription to change: subscribe to a plan first."
# How long a preview's proration date may be confirmed with `change_plan` (seconds), and how
# far ahead of our clock a client's may be (clock skew).
PREVIEW_VALID_SECONDS = 3600
CLOCK_SKEW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class PlanChangePreview:
    plan_id: str
    amount_due: int  # what the change would charge now, in the currency's smallest unit
    currency: str
    proration_date: datetime


async def _live(pool: Pool, user: UserRecord) -> SubscriptionRecord:
    current = subscriptions.the_subscription(await subscriptions.of_user(pool, user.id))
    if current is None or current.stripe_subscription_id is None or current.status in ENDED:
        raise NotFound(NO_SUBSCRIPTION)
    return current


async def _live_with_item(
    pool: Pool, stripe: StripeGateway, plans: PlanCatalog, user: UserRecord
) -> SubscriptionRecord:
    """The live subscription, re-read first if we never stored its item (a row older than
    the item column)."""
    row = await _live(pool, user)
    if row.item_id is None:
        row = await _reread(pool, stripe, plans, user, row)
        if row.item_id is None or row.status in ENDED:
            raise NotFound(NO_SUBSCRIPTION)
    return row


def _key(action: str, row: SubscriptionRecord, *more: str) -> str:
    """Same action on the same state as we last read it → same key (see the module)."""
    state = "|".join(
        str(part)
        for part in (
            row.status,
            row.price_id,
            row.cancel_at,
            row.cancel_at_period_end,
            row.updated_at.isoformat(),
            *more,
        )
    )
    digest = hashlib.sha256(state.encode()).hexdigest()[:16]
    return f"{SOURCE}:{action}:{row.stripe_subscription_id}:{digest}"


async def _reread(
    pool: Pool, stripe: StripeGateway, plans: PlanCatalog, user: UserRecord, row: SubscriptionRecord
) -> SubscriptionRecord:
    assert row.stripe_customer_id is not None
    await subscriptions.refresh(pool, stripe, plans, user.id, row.stripe_customer_id)
    for found in await subscriptions.of_user(pool, user.id):
        if found.stripe_subscription_id == row.stripe_subscription_id:
            return found
    return row  # pragma: no cover - Stripe never forgets a subscription


async def cancel(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    single_flight: SingleFlight,
    user: UserRecord,
    *,
    at_period_end: bool,
    rate_limit: rate_limits.Bucket,
) -> SubscriptionRecord:
    """Cancel the live subscription at the end of its period (it stays entitled until then)
    or at once. Raises `RATE_LIMITED`, `STRIPE_NOT_CONFIGURED`, `NOT_FOUND` (no live
    subscription), `PAYMENT_PROVIDER_ERROR`."""
    await rate_limits.check(pool, user.id, rate_limit)
    stripe.require()
    async with single_flight.turn(user.id):
        row = await _live(pool, user)
        assert row.stripe_subscription_id is not None
        if at_period_end:
            await stripe.update_subscription(
                row.stripe_subscription_id,
                {"cancel_at_period_end": True},
                idempotency_key=_key("cancel-at-period-end", row),
            )
        else:
            await stripe.cancel_subscription(
                row.stripe_subscription_id, idempotency_key=_key("cancel-now", row)
            )
        return await _reread(pool, stripe, plans, user, row)


async def resume(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    single_flight: SingleFlight,
    user: UserRecord,
    *,
    rate_limit: rate_limits.Bucket,
) -> SubscriptionRecord:
    """Undo a scheduled cancellation, whichever way Stripe holds it (`cancel_at_period_end`,
    or `cancel_at` as the Billing Portal sets it); with none scheduled, the subscription is
    returned as it is. Raises as `cancel`."""
    await rate_limits.check(pool, user.id, rate_limit)
    stripe.require()
    async with single_flight.turn(user.id):
        row = await _live(pool, user)
        assert row.stripe_subscription_id is not None
        assert row.stripe_customer_id is not None
        fresh = next(
            (
                s
                for s in await stripe.list_subscriptions(row.stripe_customer_id)
                if s.id == row.stripe_subscription_id
            ),
            None,
        )
        params: dict[str, Any] = {}
        if fresh is not None and fresh.cancel_at_period_end:
            params = {"cancel_at_period_end": False}
        elif fresh is not None and fresh.cancel_at is not None:
            params = {"cancel_at": ""}
        if params:
            await stripe.update_subscription(
                row.stripe_subscription_id, params, idempotency_key=_key("resume", row)
            )
        return await _reread(pool, stripe, plans, user, row)


def _target_price(plans: PlanCatalog, row: SubscriptionRecord, plan_id: str) -> str:
    plan = plans.get(plan_id)
    if plan is None:
        raise BadUserInput(f"Unknown plan {plan_id!r}.", field="planId")
    if plan.price_id is None:
        raise BadUserInput(
            f"The {plan.name} plan has no price: cancel your subscription instead.",
            field="planId",
        )
    if plan.price_id == row.price_id:
        raise BadUserInput(f"You are on the {plan.name} plan already.", field="planId")
    return plan.price_id


def _proration_time(proration_date: datetime | None) -> int | None:
    """A confirmed preview's proration date in Unix seconds, if it is recent enough."""
    if proration_date is None:
        return None
    when = int(proration_date.timestamp())
    now = time.time()
    if not now - PREVIEW_VALID_SECONDS <= when <= now + CLOCK_SKEW_SECONDS:
        raise BadUserInput(
            "The preview has expired: preview the change again.", field="prorationDate"
        )
    return when


async def change_plan(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    single_flight: SingleFlight,
    user: UserRecord,
    plan_id: str,
    *,
    proration_date: datetime | None = None,
    rate_limit: rate_limits.Bucket,
) -> SubscriptionRecord:
    """Move the live subscription to `plan_id`'s price, prorated and charged at once; the
    prorations are computed for `proration_date` (a preview's, so exactly the previewed
    amount is charged; at most `PREVIEW_VALID_SECONDS` old) or now. Raises `BAD_USER_INPUT`
    (unknown plan, the current one, one without a price, a stale or future proration date),
    `PAYMENT_PROVIDER_ERROR` (Stripe refused: a declined card says so; nothing changed),
    and as `cancel`."""
    when = _proration_time(proration_date)
    await rate_limits.check(pool, user.id, rate_limit)
    stripe.require()
    async with single_flight.turn(user.id):
        row = await _live_with_item(pool, stripe, plans, user)
        price_id = _target_price(plans, row, plan_id)
        assert row.stripe_subscription_id is not None
        params: dict[str, Any] = {
            "items": [{"id": row.item_id, "price": price_id}],
            "proration_behavior": "always_invoice",
            "payment_behavior": "error_if_incomplete",
        }
        if when is not None:
            params["proration_date"] = when
        await stripe.update_subscription(
            row.stripe_subscription_id,
            params,
            idempotency_key=_key("change-plan", row, price_id, str(when)),
        )
        changed = await _reread(pool, stripe, plans, user, row)
        assert row.stripe_customer_id is not None
        # The proration's invoice, paid just now, is listed at once too.
        await invoices.refresh(pool, stripe, user.id, row.stripe_customer_id)
        return changed


async def preview_plan_change(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    user: UserRecord,
    plan_id: str,
    *,
    rate_limit: rate_limits.Bucket,
) -> PlanChangePreview:
    """What `change_plan` would charge now, from Stripe's invoice preview; changes nothing.
    Raises as `change_plan`."""
    await rate_limits.check(pool, user.id, rate_limit)
    stripe.require()
    row = await _live_with_item(pool, stripe, plans, user)
    price_id = _target_price(plans, row, plan_id)
    assert row.stripe_subscription_id is not None
    assert row.stripe_customer_id is not None
    assert row.item_id is not None
    proration_date = int(time.time())
    preview = await stripe.preview_price_change(
        customer_id=row.stripe_customer_id,
        subscription_id=row.stripe_subscription_id,
        item_id=row.item_id,
        price_id=price_id,
        proration_date=proration_date,
    )
    return PlanChangePreview(
        plan_id=plan_id,
        amount_due=preview.amount_due,
        currency=preview.currency,
        proration_date=datetime.fromtimestamp(proration_date, UTC),
    )
