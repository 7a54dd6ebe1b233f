"""In-app subscription management: cancel, resume, change plan, and preview a change.

Each acts on the user's live subscription — the one that matters (`services.subscriptions`)
unless it has ended — in the user's turn (`services.single_flight`), counts against the
user's Stripe bucket, and decides on Stripe's state, not ours: the customer's subscriptions
are re-read from Stripe first (a change made in the Billing Portal whose webhook has not
arrived counts), and again after the change, so `me` shows Stripe's state before any webhook
(after a plan change the customer's invoices are re-read too).

Retries never act twice, and never replay a refusal. A change is kept (`db.plan_changes`)
with its idempotency key before it is sent. When Stripe's answer does not arrive (the
connection failed, the deadline passed, the key was still in use, the process died), the
change stays kept. Asked again for the same action, the change is sent again with the same
key first: Stripe acts at most once (it replays its answer, or acts now if the first never
reached it); then the subscription is re-read and the action goes on from what Stripe holds
(nothing more to do, or — the state moved on meanwhile, e.g. a resume in the portal — a new
change). Asked for another action instead, the kept change is dropped, never sent: the user
was told it failed and has moved on; whatever Stripe did with it shows in the re-read. Once
Stripe has answered — success, a declined card, an error — the change is forgotten and the
next one gets a new key: Stripe keeps a key's answer for 24 hours, errors included, so
reusing it would replay a decline after the card was fixed.

Plan changes are charged at once: the price swap is prorated and the proration invoiced and
paid in the same request (`proration_behavior=always_invoice`,
`payment_behavior=error_if_incomplete`), so a declined card refuses the change and nothing
changes. `preview_plan_change` shows exactly that charge, from Stripe's invoice preview, and
keeps what it computed on: confirming it (`proration_date`) charges the amount shown, or is
refused when the subscription changed since.
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
# How long a preview may be confirmed with `change_plan` (seconds), and how far ahead of our
# clock a client's proration date may be (clock skew).
PREVIEW_VALID_SECONDS = 3600
CLOCK_SKEW_SECONDS = 60
# A change whose answer never came is sent again for this long (seconds): Stripe keeps an
# idempotency key's answer for at least 24 hours.
UNANSWERED_SECONDS = 23 * 3600
# Every change reads back what it needs of the subscription (`paid` comes from its latest
# invoice).
EXPAND = ["latest_invoice"]

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
    pool: Pool, stripe: StripeGateway, plans: PlanCatalog, user: UserRecord, customer_id: str
) -> list[StripeSubscription]:
    """Every subscription of the customer re-read from Stripe and stored (behind the read
    fence); as Stripe gave them."""
    started_at = await subscriptions.read_clock(pool)
    found = await stripe.list_subscriptions(customer_id)
    async with user_transaction(pool, user.id) as pg:
        await subscriptions.apply(pg, plans, user.id, customer_id, found, started_at)
    return found


async def _fresh(
    pool: Pool, stripe: StripeGateway, plans: PlanCatalog, user: UserRecord, customer_id: str
) -> tuple[SubscriptionRecord, StripeSubscription]:
    """The live subscription after a re-read from Stripe, as we now hold it and as Stripe
    gave it. `NotFound` when none is live."""
    found = await _reread(pool, stripe, plans, user, customer_id)
    row = await _live(pool, user)
    current = next((s for s in found if s.id == row.stripe_subscription_id), None)
    if current is None:
        raise NotFound(NO_SUBSCRIPTION)
    return row, current


async def _row(pool: Pool, user: UserRecord, subscription_id: str) -> SubscriptionRecord:
    for found in await subscriptions.of_user(pool, user.id):
        if found.stripe_subscription_id == subscription_id:
            return found
    raise NotFound(NO_SUBSCRIPTION)  # pragma: no cover - a subscription written just now


# --- Sending a change once ------------------------------------------------------------------


async def _send(
    pool: Pool, stripe: StripeGateway, user: UserRecord, subscription_id: str, change: SentChange
) -> StripeSubscription | None:
    """Send a kept change with its key; forget it once Stripe's answer is known (see the
    module), and return that answer (None: Stripe had canceled the subscription already)."""
    try:
        if change.action == CANCEL_NOW:
            result = await stripe.cancel_subscription(
                subscription_id, change.params, idempotency_key=change.idempotency_key
            )
        else:
            result = await stripe.update_subscription(
                subscription_id, change.params, idempotency_key=change.idempotency_key
            )
    except PaymentProviderError as exc:
        if not outcome_unknown(exc):
            async with user_transaction(pool, user.id) as pg:
                await plan_changes.answered(pg, user.id, subscription_id)
        raise
    async with user_transaction(pool, user.id) as pg:
        await plan_changes.answered(pg, user.id, subscription_id)
    return result


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
    If that re-read fails, Stripe's answer to the change is stored instead: the change was
    made, and the user is told so."""
    subscription_id, customer_id = row.stripe_subscription_id, row.stripe_customer_id
    assert subscription_id is not None
    assert customer_id is not None
    change = SentChange(
        action=action,
        params={**params, "expand": EXPAND},
        idempotency_key=f"{SOURCE}:{action}:{subscription_id}:{uuid.uuid4().hex}",
    )
    async with user_transaction(pool, user.id) as pg:
        await plan_changes.sending(pg, user.id, subscription_id, change)
    sent_at = await subscriptions.read_clock(pool)
    result = await _send(pool, stripe, user, subscription_id, change)
    try:
        await _reread(pool, stripe, plans, user, customer_id)
    except PaymentProviderError:
        log.warning("subscriptions not re-read after a change; storing Stripe's answer to it")
        if result is not None:
            async with user_transaction(pool, user.id) as pg:
                await subscriptions.apply(pg, plans, user.id, customer_id, [result], sent_at)
    return await _row(pool, user, subscription_id)


async def _retry_unanswered(
    pool: Pool, stripe: StripeGateway, user: UserRecord, row: SubscriptionRecord, action: str
) -> bool:
    """Settle the change sent earlier for the subscription whose answer never came (see the
    module): a retry of the same action sends it again with its key (True: Stripe has acted
    on it once, now); another action drops it (False). Raises the resend's error."""
    subscription_id = row.stripe_subscription_id
    assert subscription_id is not None
    async with user_transaction(pool, user.id) as pg:
        sent = await plan_changes.unanswered(pg, user.id, subscription_id, UNANSWERED_SECONDS)
        if sent is not None and sent.action != action:
            await plan_changes.answered(pg, user.id, subscription_id)
            return False
    if sent is None:
        return False
    await _send(pool, stripe, user, subscription_id, sent)
    return True


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
        row = await _live(pool, user)
        assert row.stripe_customer_id is not None
        assert row.stripe_subscription_id is not None
        retried = await _retry_unanswered(pool, stripe, user, row, action)
        if retried and not at_period_end:  # a cancellation is final: it is done
            await _reread(pool, stripe, plans, user, row.stripe_customer_id)
            done = await _row(pool, user, row.stripe_subscription_id)
            if done.status in ENDED:
                return done
        row, _ = await _fresh(pool, stripe, plans, user, row.stripe_customer_id)
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
        row = await _live(pool, user)
        assert row.stripe_customer_id is not None
        await _retry_unanswered(pool, stripe, user, row, RESUME)
        row, current = await _fresh(pool, stripe, plans, user, row.stripe_customer_id)
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
        row = await _live(pool, user)
        assert row.stripe_customer_id is not None
        retried = await _retry_unanswered(pool, stripe, user, row, action)
        row, _ = await _fresh(pool, stripe, plans, user, row.stripe_customer_id)
        if retried and row.price_id == price_id:
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
    row = await _live(pool, user)
    assert row.stripe_customer_id is not None
    row, _ = await _fresh(pool, stripe, plans, user, row.stripe_customer_id)
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
