"""Stripe webhooks: verified and recorded at once, byte for byte; processed afterwards.

**Ingestion** (`parse`, `record`): a body whose signature verifies and that has an event's
shape (an `evt_` ID, a type, a `created` number, a `data.object`) is stored exactly as
received, whatever its values hold (a `\\u0000`, a lone surrogate, a byte-order mark, a
`created` that is no usable time): Stripe gives up on an event after its retries, so one
that cannot be stored is lost. What processing needs (type, customer, time) is taken from
it leniently; the worker decides the rest.

**Processing** (`process`): the worker hands over every due event of one customer at once.
They are answered with one re-read from Stripe (the customer, its subscriptions, or both),
made outside any transaction, then applied in one short transaction of the customer's
user, behind read fences (see `services.subscriptions`): a duplicate changes nothing, and
an older event or an older read never overwrites newer state. Profile changes coming from
Stripe are applied without enqueueing a push back (no echo loop).

**Whose customer** (contract): a linked customer's events go to its user. An unlinked
customer is linked only on evidence this service wrote: a Checkout session it created for
the user, or `metadata.userId` it set on the customer (read back from Stripe, never taken
from the event). A `client_reference_id` proves nothing. Events about customers that are
not ours, or that a deleted account kept, are recorded and ignored at once.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from db import checkout_sessions as db_checkout
from db import customers as db_customers
from db import events as db_events
from db import tombstones as db_tombstones
from db import users as db_users
from db.connection import Pg, Pool
from db.events import EventRecord
from db.locks import user_transaction
from services import customers, entitlements, invoices, notifications, subscriptions
from services.errors import BadUserInput, PaymentProviderError
from services.plans import PlanCatalog
from services.stripe_gateway import (
    CustomerGone,
    InvalidWebhook,
    StripeCustomer,
    StripeGateway,
    StripeSubscription,
    verify_webhook,
)
from services.validation import normalize_phone, split_full_name

log = logging.getLogger(__name__)

# Each kind of event is answered by re-reading one thing from Stripe (`_apply`).
CHECKOUT_EVENTS = frozenset({"checkout.session.completed", "checkout.session.expired"})
SUBSCRIPTION_EVENTS = CHECKOUT_EVENTS | frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.trial_will_end",
        "invoice.paid",  # a paid renewal makes a past-due subscription active again
        "invoice.payment_failed",
    }
)
INVOICE_EVENTS = frozenset(
    {
        "invoice.created",
        "invoice.deleted",  # a one-off draft: forgotten
        "invoice.finalized",
        "invoice.updated",
        "invoice.voided",
        "invoice.marked_uncollectible",
        "invoice.paid",
        "invoice.payment_failed",
    }
)
CUSTOMER_EVENTS = frozenset({"customer.updated", "customer.deleted"})
ENTITLEMENT_EVENTS = frozenset({"entitlements.active_entitlement_summary.updated"})
HANDLED = SUBSCRIPTION_EVENTS | INVOICE_EVENTS | CUSTOMER_EVENTS | ENTITLEMENT_EVENTS
# Failures that retrying is the answer to (Stripe unreachable): logged without a traceback.
EXPECTED_FAILURES: tuple[type[Exception], ...] = (PaymentProviderError,)

_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,250}")
_STRIPE_ID = re.compile(r"[a-z]{2,8}_[A-Za-z0-9_]{1,250}")
_EVENT_TYPE = re.compile(r"[a-z0-9_.]{1,255}")
# Stripe's `created` as Unix seconds: from 2000 to 5138, the range a datetime can hold.
_CREATED_RANGE = range(946_684_800, 99_999_999_999)


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    id: str
    type: str  # "" when the event gives none this service can read
    created_at: datetime | None
    customer_id: str | None
    body: bytes


def _object_of(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    return obj if isinstance(obj, Mapping) else {}


def _customer_id(event_type: str, obj: Mapping[str, Any]) -> str | None:
    value = obj.get("id") if event_type in CUSTOMER_EVENTS else obj.get("customer")
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and _STRIPE_ID.fullmatch(value) else None


def _load(payload: bytes) -> Any:
    """The body as JSON (a UTF-8 byte-order mark allowed); `ValueError` if it is not."""
    try:
        return json.loads(payload.decode("utf-8-sig"))
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError("not JSON") from exc


def parse(payload: bytes, signature_header: str | None, secrets: Sequence[str]) -> IncomingEvent:
    """Verify Stripe's signature, then check the body is an event; `InvalidWebhook` if not."""
    verify_webhook(payload, signature_header, secrets)
    try:
        event = _load(payload)
    except ValueError as exc:
        raise InvalidWebhook("body is not JSON") from exc
    if not isinstance(event, dict):
        raise InvalidWebhook("body is not an event")
    event_id, event_type, created = event.get("id"), event.get("type"), event.get("created")
    data = event.get("data")
    if (
        not isinstance(event_id, str)
        or not _EVENT_ID.fullmatch(event_id)
        or not isinstance(event_type, str)
        or isinstance(created, bool)
        or not isinstance(created, int | float)
        or not isinstance(data, dict)
        or not isinstance(data.get("object"), dict)
    ):
        raise InvalidWebhook("body is not an event")
    if not _EVENT_TYPE.fullmatch(event_type):
        event_type = ""  # stored, and ignored by the worker
    created_at = (
        datetime.fromtimestamp(created, UTC)
        if isinstance(created, int) and created in _CREATED_RANGE
        else None
    )
    return IncomingEvent(
        id=event_id,
        type=event_type,
        created_at=created_at,
        customer_id=_customer_id(event_type, _object_of(event)),
        body=payload,
    )


async def record(pool: Pool, event: IncomingEvent) -> bool:
    """Durably store the event (one autocommitted INSERT); False for a duplicate."""
    async with pool.connection() as pg:
        return await db_events.insert(
            pg,
            event_id=event.id,
            event_type=event.type,
            created_at=event.created_at,
            payload=event.body,
            customer_id=event.customer_id,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # processed or ignored
    reason: str | None = None  # why it was ignored


@dataclass(frozen=True, slots=True)
class _Parsed:
    record: EventRecord
    obj: Mapping[str, Any]


async def process(
    pool: Pool, stripe: StripeGateway, plans: PlanCatalog, events: Sequence[EventRecord]
) -> dict[str, Outcome]:
    """Apply the due events of one customer (as `db.events.claim_due` groups them); returns
    each event's outcome. Raises (and the worker retries them all) when Stripe or the
    database fails."""
    outcomes: dict[str, Outcome] = {}
    handled: list[_Parsed] = []
    for event in events:
        if event.type not in HANDLED:
            outcomes[event.id] = Outcome("ignored", "not an event type this service handles")
            continue
        try:
            obj = _object_of(_load(event.payload))
        except ValueError:
            obj = {}
        if not obj or event.customer_id is None:
            outcomes[event.id] = Outcome("ignored", "the event names no customer")
            continue
        handled.append(_Parsed(event, obj))
    groups: dict[str, list[_Parsed]] = {}
    for parsed in handled:
        assert parsed.record.customer_id is not None
        groups.setdefault(parsed.record.customer_id, []).append(parsed)
    for customer_id, batch in groups.items():
        user_id, why_not = await _owner(pool, stripe, customer_id, batch)
        if user_id is not None:
            await _apply(pool, stripe, plans, user_id, customer_id, batch)
        for parsed in batch:
            outcomes[parsed.record.id] = (
                Outcome("processed") if user_id is not None else Outcome("ignored", why_not)
            )
    return outcomes


async def _apply(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    user_id: str,
    customer_id: str,
    batch: Sequence[_Parsed],
) -> None:
    """One re-read from Stripe for the whole batch, then one short transaction."""
    types = {p.record.type for p in batch}
    started_at = await subscriptions.read_clock(pool)
    customer: StripeCustomer | None = None
    found: list[StripeSubscription] | None = None
    found_invoices: invoices.InvoicesRead | None = None
    found_entitlements: list[str] | None = None
    gone = "customer.deleted" in types  # final: Stripe never brings a customer back
    try:
        if not gone and types & CUSTOMER_EVENTS:
            customer = await stripe.retrieve_customer(customer_id)
        if not gone and types & SUBSCRIPTION_EVENTS:
            found = await stripe.list_subscriptions(customer_id)
        if not gone and types & INVOICE_EVENTS:
            named = {_id(p.obj) for p in batch if p.record.type in INVOICE_EVENTS} - {""}
            found_invoices = await invoices.read(stripe, customer_id, sorted(named))
        if not gone and types & ENTITLEMENT_EVENTS:
            found_entitlements = await stripe.active_entitlements(customer_id)
    except CustomerGone:
        gone = True
    async with user_transaction(pool, user_id) as pg:
        if gone:
            await customers.customer_gone(pg, user_id, customer_id)
            return
        for parsed in batch:
            if parsed.record.type in CHECKOUT_EVENTS:
                status = "complete" if parsed.record.type.endswith("completed") else "expired"
                await db_checkout.finish(pg, _id(parsed.obj), status)
        if customer is not None:
            changed_at = max(
                (p.record.created_at or p.record.received_at)
                for p in batch
                if p.record.type in CUSTOMER_EVENTS
            )
            await _mirror_customer(pg, user_id, customer, started_at, changed_at)
        if found is not None:
            await subscriptions.apply(pg, plans, user_id, customer_id, found, started_at)
        if found_invoices is not None:
            await invoices.apply(pg, user_id, customer_id, found_invoices, started_at)
        if found_entitlements is not None:
            await entitlements.apply(pg, customer_id, found_entitlements, started_at)
        for parsed in batch:
            await notifications.for_event(
                pg, plans, user_id, parsed.record.id, parsed.record.type, _id(parsed.obj)
            )


def _id(obj: Mapping[str, Any]) -> str:
    value = obj.get("id")
    return value if isinstance(value, str) else ""


async def _mirror_customer(
    pg: Pg,
    user_id: str,
    customer: StripeCustomer,
    started_at: datetime,
    changed_at: datetime,
) -> None:
    """Stripe's copy of the customer, and its name and phone onto the profile unless the
    user edited theirs after `changed_at` (see `db.users.apply_stripe_profile`)."""
    if not await db_customers.advance_fence(pg, customer.id, "customer", started_at):
        return
    await db_customers.mirror(
        pg, customer.id, email=customer.email, name=customer.name, phone=customer.phone
    )
    first, last = split_full_name(customer.name)
    try:
        phone = normalize_phone("phone", customer.phone)
    except BadUserInput:
        user = await db_users.get(pg, user_id)
        phone = user.phone if user else None  # keep ours rather than store a malformed one
    await db_users.apply_stripe_profile(
        pg, user_id, first_name=first, last_name=last, phone=phone, changed_at=changed_at
    )


async def mirror_customer(
    pool: Pool, user_id: str, customer: StripeCustomer, started_at: datetime
) -> None:
    """`_mirror_customer` in a transaction of its own (the recovery command), with Stripe's
    values as of the read."""
    async with user_transaction(pool, user_id) as pg:
        await _mirror_customer(pg, user_id, customer, started_at, started_at)


async def _owner(
    pool: Pool, stripe: StripeGateway, customer_id: str, batch: Sequence[_Parsed]
) -> tuple[str | None, str]:
    """The user this customer belongs to, linking it on our own evidence; or None and why
    the events are ignored."""
    async with pool.connection() as pg:
        linked = await db_customers.by_stripe_id(pg, customer_id)
        if linked is not None:
            return linked.user_id, ""
        if await db_tombstones.for_customer(pg, customer_id) is not None:
            return None, "the account this customer belonged to was deleted"
        if all(p.record.type in CUSTOMER_EVENTS for p in batch):
            return None, "a customer this service never linked"
        claimed = None
        for parsed in batch:
            session_id = parsed.obj.get("id")
            if parsed.record.type in CHECKOUT_EVENTS and isinstance(session_id, str):
                session = await db_checkout.get(pg, session_id)
                if session is not None:
                    claimed = session.user_id
        if claimed is None:
            claimed = await db_checkout.user_for_customer(pg, customer_id)
    try:
        customer = await stripe.retrieve_customer(customer_id)
    except CustomerGone:
        return None, "the customer no longer exists in Stripe"
    tagged = customer.metadata.get("userId") or None
    if customer.metadata.get(customers.RELEASED):
        return None, "the account this customer belonged to was deleted"
    if claimed is None:
        claimed = tagged
    elif tagged not in (None, claimed):
        log.warning(
            "customer %s: our session names user %s, its metadata %s; ignored",
            customer_id,
            claimed,
            tagged,
        )
        return None, "the customer's metadata names another user"
    if claimed is None:
        return None, "a customer this service did not create or link"
    async with user_transaction(pool, claimed) as pg:
        if await db_users.get(pg, claimed) is None:
            return None, "the customer names a user this service does not have"
        current = await db_customers.get(pg, claimed)
        if current is not None:
            if current.stripe_customer_id == customer_id:
                return claimed, ""
            log.warning(
                "customer %s claims user %s, who is linked to %s; ignored",
                customer_id,
                claimed,
                current.stripe_customer_id,
            )
            return None, "the user is linked to another customer"
        if await customers.link(pg, claimed, customer, tagged=tagged == claimed) is None:
            return None, "the customer is linked to another user"
    log.info("linked customer %s to user %s from its events", customer_id, claimed)
    return claimed, ""
