"""In-app subscription management: cancel, resume, change plan, and preview a change.

Each acts on the user's live subscription — the one that matters (`services.subscriptions`)
unless it has ended — in the user's turn (`services.single_flight`), counts against the
user's Stripe bucket, and decides on Stripe's state, not ours: the customer's subscriptions
are re-read from Stripe first (a change made in the Billing Portal whose webhook has not
arrived counts), and again after the change, so `me` shows Stripe's state before any webhook
(after a plan change the customer's invoices are re-read too).

Retries never act twice, and never replay a refusal. A change is kept (`db.plan_changes`)
with its idempotency key before it is sent, and forgotten only once Stripe refused it or the
state after it is stored. Until then (the connection failed, the deadline passed, Stripe
answered 5xx or 409, the re-read after it failed, the process died) the user is told a retry
finishes it (`UNCONFIRMED`). The same action asked again sends the kept change again with its
key first: Stripe acts at most once (it replays its answer, or acts now if the first never
reached it); then the subscription is re-read and the action goes on from what Stripe holds
(nothing more to do, or — the state moved on meanwhile, e.g. a resume in the portal — a new
change). Another action drops the kept change unsent; whatever Stripe did with it shows in
the re-read. Once a change is settled, the next one gets a new key: Stripe keeps a key's
answer for 24 hours, errors included, so reusing it would replay a decline after the card
was fixed.

Plan changes are charged at once: the price swap is prorated and the proration invoiced and
paid in the same request (`proration_behavior=always_invoice`,
`payment_behavior=error_if_incomplete`), so a declined card refuses the change and nothing
changes. `preview_plan_change` shows that charge, from Stripe's invoice preview, and keeps
what it computed on: confirming it (`proration_date`) prorates for the preview's instant, so
the amount shown is charged, and is refused when the subscription, its price or its period
changed since (a change of quantity, discount or customer balance is not detected).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from db import plan_changes
from db.connection import Pool
from db.locks import user_transaction
from db.plan_changes import SentChange
from db.subscriptions import SubscriptionRecord
from db.users import UserRecord
from services import invoices, rate_limits, subscriptions
from services.customers import SOURCE
from services.errors import BadUserInput, NotFound, PaymentProviderError
from services.plans import PlanCatalog
from services.single_flight import SingleFlight
from services.stripe_gateway import StripeGateway, StripeSubscription, outcome_unknown
from services.subscriptions import ENDED

log = logging.getLogger(__name__)

NO_SUBSCRIPTION = "You have no subscription to change: subscribe to a plan first."
PREVIEW_AGAIN = "Your subscription changed since the preview: preview the change again."
# Sent, and whether Stripe acted is not known (or not yet stored): a retry of the same
# request finishes it without acting twice.
UNCONFIRMED = (
    "We could not confirm this change with our payment provider. Try again: it will not be "
    "made twice."
)
# How long a preview may be confirmed with `change_plan` (seconds), and how far ahead of our
# clock a client's proration date may be (clock skew).
PREVIEW_VALID_SECONDS = 3600
CLOCK_SKEW_SECONDS = 60
# A change whose answer never came is sent again for this long (seconds): Stripe keeps an
# idempotency key's answer for at least 24 hours.
UNANSWERED_SECONDS = 23 * 3600

CANCEL_AT_PERIOD_END = "cancel-at-period-end"
CANCEL_NOW = "cancel-now"
RESUME = "resume"


@dataclass(frozen=True, slots=True)
class PlanChangePreview:
    plan_id: str
    amount_due: int  # what the change would charge now, in the currency's smallest unit
    currency: str
    proration_date: datetime


def _change_plan_action(price_id: str, proration_date: int | None) -> str:
    return f"change-plan:{price_id}:{proration_date or 'now'}"


# --- Reading the subscription ---------------------------------------------------------------


async def _live(pool: Pool, user: UserRecord) -> SubscriptionRecord:
    """The live subscription as we hold it; `NotFound` without one."""
    current = subscriptions.the_subscription(await subscriptions.of_user(pool, user.id))
    if current is None or current.stripe_subscription_id is None or current.status in ENDED:
        raise NotFound(NO_SUBSCRIPTION)
    return current


async def _reread(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    user: UserRecord,
    customer_id: str,
    *,
    settled: str | None = None,
) -> list[StripeSubscription]:
    """Every subscription of the customer re-read from Stripe and stored (behind the read
    fence); as Stripe gave them. `settled`: the subscription whose sent change this read
    follows, forgotten in the same transaction (only once its outcome is stored)."""
    started_at = await subscriptions.read_clock(pool)
    found = await stripe.list_subscriptions(customer_id)
    async with user_transaction(pool, user.id) as pg:
        await subscriptions.apply(pg, plans, user.id, customer_id, found, started_at)
        if settled is not None:
            await plan_changes.answered(pg, user.id, settled)
    return found


async def _fresh(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    user: UserRecord,
    found: list[StripeSubscription] | None = None,
) -> tuple[SubscriptionRecord, StripeSubscription]:
    """The live subscription as we now hold it and as Stripe gave it, from `found` (the
    customer's subscriptions read from Stripe and stored just now, after a retried change)
    or else from a re-read. `NotFound` when none is live."""
    if found is None:
        row = await _live(pool, user)
        assert row.stripe_customer_id is not None
        found = await _reread(pool, stripe, plans, user, row.stripe_customer_id)
    row = await _live(pool, user)
    current = next((s for s in found if s.id == row.stripe_subscription_id), None)
    if current is None:
        raise NotFound(NO_SUBSCRIPTION)
    return row, current


async def _find(pool: Pool, user: UserRecord, subscription_id: str) -> SubscriptionRecord | None:
    for found in await subscriptions.of_user(pool, user.id):
        if found.stripe_subscription_id == subscription_id:
            return found
    return None


async def _row(pool: Pool, user: UserRecord, subscription_id: str) -> SubscriptionRecord:
    found = await _find(pool, user, subscription_id)
    if found is None:  # pragma: no cover - a subscription written just now
        raise NotFound(NO_SUBSCRIPTION)
    return found


# --- Sending a change once ------------------------------------------------------------------


async def _send(
    pool: Pool, stripe: StripeGateway, user: UserRecord, subscription_id: str, change: SentChange
) -> None:
    """Send a kept change with its key. A refusal is an answer: the change is forgotten and
    the error raised. Without an answer it stays kept, and the user is told a retry finishes
    it. After success it stays kept until the state after it is stored (`_reread`)."""
    try:
        if change.action == CANCEL_NOW:
            await stripe.cancel_subscription(
                subscription_id, change.params, idempotency_key=change.idempotency_key
            )
        else:
            await stripe.update_subscription(
                subscription_id, change.params, idempotency_key=change.idempotency_key
            )
    except PaymentProviderError as exc:
        if outcome_unknown(exc):
            raise PaymentProviderError(UNCONFIRMED, retryable=True) from exc
        async with user_transaction(pool, user.id) as pg:
            await plan_changes.answered(pg, user.id, subscription_id)
        raise


async def _start(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    user: UserRecord,
    row: SubscriptionRecord,
    action: str,
    params: Mapping[str, Any],
) -> SubscriptionRecord:
    """A new change: kept with a new key, sent, then the customer's subscriptions re-read
    (the whole customer, so the read fence never holds back another subscription's news).
    Should that re-read fail, the change stays kept and the user is told a retry finishes
    it: the retry replays it (Stripe acts once) and reads again."""
    subscription_id, customer_id = row.stripe_subscription_id, row.stripe_customer_id
    assert subscription_id is not None
    assert customer_id is not None
    change = SentChange(
        action=action,
        params=dict(params),
        idempotency_key=f"{SOURCE}:{action}:{subscription_id}:{uuid.uuid4().hex}",
    )
    async with user_transaction(pool, user.id) as pg:
        await plan_changes.sending(pg, user.id, subscription_id, change)
    await _send(pool, stripe, user, subscription_id, change)
    await _after_change(pool, stripe, plans, user, customer_id, subscription_id)
    return await _row(pool, user, subscription_id)


async def _after_change(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    user: UserRecord,
    customer_id: str,
    subscription_id: str,
) -> list[StripeSubscription]:
    """Store Stripe's state after a change made, and return it as read. Whatever fails here
    (Stripe, or the database going away), the change stays kept and the user is told a
    retry finishes it."""
    try:
        return await _reread(pool, stripe, plans, user, customer_id, settled=subscription_id)
    except PaymentProviderError as exc:
        raise PaymentProviderError(UNCONFIRMED, retryable=True) from exc
    except Exception as exc:
        log.exception("the state after a change made at Stripe was not stored")
        raise PaymentProviderError(UNCONFIRMED, retryable=True) from exc


@dataclass(frozen=True, slots=True)
class _Retried:
    """A change sent again and its outcome stored: its subscription as we now hold it, and
    the customer's subscriptions as Stripe gave them just after."""

    row: SubscriptionRecord
    found: list[StripeSubscription]


async def _retry_unanswered(
    pool: Pool, stripe: StripeGateway, plans: PlanCatalog, user: UserRecord, action: str
) -> _Retried | None:
    """Settle the user's changes sent earlier whose outcome is not stored (see the module):
    a retry of the same action sends its change again with its key, then stores the state
    after it; changes of other actions are dropped unsent. None when there was nothing to
    retry. Raises the resend's error."""
    async with user_transaction(pool, user.id) as pg:
        kept = await plan_changes.unanswered(pg, user.id, UNANSWERED_SECONDS)
        retry = next(((sub, c) for sub, c in kept if c.action == action), None)
        for subscription_id, change in kept:
            if change.action != action:
                await plan_changes.answered(pg, user.id, subscription_id)
    if retry is None:
        return None
    subscription_id, change = retry
    row = await _find(pool, user, subscription_id)
    if row is None or row.stripe_customer_id is None:  # no longer the user's: nothing to finish
        async with user_transaction(pool, user.id) as pg:
            await plan_changes.answered(pg, user.id, subscription_id)
        return None
    await _send(pool, stripe, user, subscription_id, change)
    found = await _after_change(pool, stripe, plans, user, row.stripe_customer_id, subscription_id)
    return _Retried(await _row(pool, user, subscription_id), found)


# --- Cancel and resume ----------------------------------------------------------------------


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
    """Cancel the live subscription at the end of its period (it stays entitled until then;
    already scheduled so, nothing is sent) or at once. Raises `RATE_LIMITED`,
    `STRIPE_NOT_CONFIGURED`, `NOT_FOUND` (no live subscription), `PAYMENT_PROVIDER_ERROR`."""
    await rate_limits.check(pool, user.id, rate_limit)
    stripe.require()
    action = CANCEL_AT_PERIOD_END if at_period_end else CANCEL_NOW
    async with single_flight.turn(user.id):
        retried = await _retry_unanswered(pool, stripe, plans, user, action)
        if retried is not None and retried.row.status in ENDED:
            return retried.row  # a cancellation is final: the retried one is done
        row, _ = await _fresh(pool, stripe, plans, user, retried.found if retried else None)
        if at_period_end and row.cancel_at_period_end:
            return row
        params = {"cancel_at_period_end": True} if at_period_end else {}
        return await _start(pool, stripe, plans, user, row, action, params)


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
        retried = await _retry_unanswered(pool, stripe, plans, user, RESUME)
        row, current = await _fresh(pool, stripe, plans, user, retried.found if retried else None)
        if current.cancel_at_period_end:
            params: dict[str, Any] = {"cancel_at_period_end": False}
        elif current.cancel_at is not None:
            params = {"cancel_at": ""}
        else:
            return row
        return await _start(pool, stripe, plans, user, row, RESUME, params)


# --- Change plan, and its preview -----------------------------------------------------------


def _price_of(plans: PlanCatalog, plan_id: str) -> str:
    plan = plans.get(plan_id)
    if plan is None:
        raise BadUserInput(f"Unknown plan {plan_id!r}.", field="planId")
    if plan.price_id is None:
        raise BadUserInput(
            f"The {plan.name} plan has no price: cancel your subscription instead.",
            field="planId",
        )
    return plan.price_id


def _check_target(plans: PlanCatalog, row: SubscriptionRecord, plan_id: str) -> str:
    """The plan's price, when the live subscription may move to it."""
    price_id = _price_of(plans, plan_id)
    if price_id == row.price_id:
        plan = plans.get(plan_id)
        assert plan is not None
        raise BadUserInput(f"You are on the {plan.name} plan already.", field="planId")
    if row.item_id is None:
        raise NotFound(NO_SUBSCRIPTION)  # pragma: no cover - Stripe subscriptions have items
    return price_id


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


async def _check_preview(
    pool: Pool, user: UserRecord, row: SubscriptionRecord, price_id: str, when: int
) -> None:
    """The confirmed preview was computed on the subscription as it is now."""
    async with pool.connection() as pg:
        shown = await plan_changes.preview(pg, user.id, price_id, when)
    if (
        shown is None
        or shown.subscription_id != row.stripe_subscription_id
        or shown.from_price_id != row.price_id
        or shown.current_period_end != row.current_period_end
    ):
        raise BadUserInput(PREVIEW_AGAIN, field="prorationDate")


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
    """Move the live subscription to `plan_id`'s price, prorated and charged at once; with
    `proration_date` (a preview's, at most `PREVIEW_VALID_SECONDS` old) exactly the amount
    that preview showed, else computed now. Raises `BAD_USER_INPUT` (unknown plan, the
    current one, one without a price, an expired preview or one computed on a subscription
    that changed since), `PAYMENT_PROVIDER_ERROR` (Stripe refused: a declined card says so;
    nothing changed), and as `cancel`."""
    when = _proration_time(proration_date)
    price_id = _price_of(plans, plan_id)
    await rate_limits.check(pool, user.id, rate_limit)
    stripe.require()
    action = _change_plan_action(price_id, when)
    async with single_flight.turn(user.id):
        retried = await _retry_unanswered(pool, stripe, plans, user, action)
        row, _ = await _fresh(pool, stripe, plans, user, retried.found if retried else None)
        if retried is not None and row.price_id == price_id:
            changed = row  # the retried change is made
        else:
            _check_target(plans, row, plan_id)
            if when is not None:
                await _check_preview(pool, user, row, price_id, when)
            params: dict[str, Any] = {
                "items": [{"id": row.item_id, "price": price_id}],
                "proration_behavior": "always_invoice",
                "payment_behavior": "error_if_incomplete",
            }
            if when is not None:
                params["proration_date"] = when
            changed = await _start(pool, stripe, plans, user, row, action, params)
        assert changed.stripe_customer_id is not None
        try:  # the proration's invoice, paid just now, is listed at once too
            await invoices.refresh(pool, stripe, user.id, changed.stripe_customer_id)
        except PaymentProviderError:
            log.warning("invoices not re-read after a plan change; the webhooks will bring them")
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
    """What `change_plan` would charge now, from Stripe's invoice preview on the
    subscription as Stripe holds it; changes nothing at Stripe, and keeps the preview so
    that confirming it charges this amount. Raises as `change_plan`."""
    await rate_limits.check(pool, user.id, rate_limit)
    stripe.require()
    row, _ = await _fresh(pool, stripe, plans, user)
    price_id = _check_target(plans, row, plan_id)
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
    async with pool.connection() as pg:
        await plan_changes.save_preview(
            pg,
            user.id,
            subscription_id=row.stripe_subscription_id,
            from_price_id=row.price_id,
            to_price_id=price_id,
            current_period_end=row.current_period_end,
            proration_date=proration_date,
            amount_due=preview.amount_due,
            currency=preview.currency,
            max_age_seconds=PREVIEW_VALID_SECONDS,
        )
    return PlanChangePreview(
        plan_id=plan_id,
        amount_due=preview.amount_due,
        currency=preview.currency,
        proration_date=datetime.fromtimestamp(proration_date, UTC),
    )
