"""Stripe webhooks: verified and recorded at once, processed from the table afterwards.

Processing is idempotent and order-safe: handlers re-read the customer or its
subscriptions from Stripe under the user's lock instead of trusting the event's snapshot,
so a duplicate changes nothing and an older event cannot overwrite newer state. Profile
changes coming from Stripe are applied without enqueueing a push back (no echo loop).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from db import customers as db_customers
from db import events as db_events
from db import tombstones
from db import users as db_users
from db.connection import Connection
from db.events import EventRecord
from services import customers
from services.errors import BadUserInput
from services.plans import PlanCatalog
from services.stripe_gateway import CustomerGone, InvalidWebhook, StripeGateway, verify_webhook
from services.subscription_sync import sync_customer
from services.validation import normalize_phone, split_full_name

log = logging.getLogger(__name__)

SUBSCRIPTION_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "invoice.paid",
        "invoice.payment_failed",
    }
)
CUSTOMER_EVENTS = frozenset({"customer.updated", "customer.deleted"})
HANDLED = SUBSCRIPTION_EVENTS | CUSTOMER_EVENTS


class NotYetLinkable(Exception):
    """The event names a customer we cannot tie to a user yet; it is retried later."""


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    id: str
    type: str
    created_at: datetime
    body: str


def parse(payload: bytes, signature_header: str | None, secrets: Sequence[str]) -> IncomingEvent:
    """Verify Stripe's signature, then check the body is an event; `InvalidWebhook` if not."""
    verify_webhook(payload, signature_header, secrets)
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise InvalidWebhook("body is not JSON") from exc
    if not isinstance(event, dict):
        raise InvalidWebhook("body is not an event")
    event_id, event_type, created = event.get("id"), event.get("type"), event.get("created")
    data = event.get("data")
    if (
        not isinstance(event_id, str)
        or not event_id.startswith("evt_")
        or not isinstance(event_type, str)
        or not isinstance(created, int)
        or not isinstance(data, dict)
        or not isinstance(data.get("object"), dict)
    ):
        raise InvalidWebhook("body is not an event")
    return IncomingEvent(
        id=event_id,
        type=event_type,
        created_at=datetime.fromtimestamp(created, UTC),
        body=payload.decode("utf-8"),
    )


async def record(conn: Connection, event: IncomingEvent) -> bool:
    """Durably store the event (one autocommitted INSERT); False for a duplicate."""
    return await db_events.insert(
        conn,
        event_id=event.id,
        event_type=event.type,
        created_at=event.created_at,
        payload=event.body,
    )


def _customer_id(event_type: str, obj: Mapping[str, Any]) -> str | None:
    value = obj.get("id") if event_type in CUSTOMER_EVENTS else obj.get("customer")
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _claimed_user(obj: Mapping[str, Any]) -> str | None:
    """Whose event this says it is: our checkout sets these on the session and subscription."""
    candidates: list[Any] = [
        obj.get("client_reference_id"),
        (obj.get("metadata") or {}).get("userId"),
        (obj.get("subscription_details") or {}).get("metadata", {}).get("userId"),
        ((obj.get("parent") or {}).get("subscription_details") or {})
        .get("metadata", {})
        .get("userId"),
    ]
    return next((c for c in candidates if isinstance(c, str) and c), None)


async def process(
    conn: Connection, stripe: StripeGateway, plans: PlanCatalog, event: EventRecord
) -> str:
    """Apply one stored event; returns 'processed' or 'ignored'. Runs in a transaction."""
    if event.type not in HANDLED:
        return "ignored"
    obj: Mapping[str, Any] = event.payload["data"]["object"]
    customer_id = _customer_id(event.type, obj)
    if customer_id is None:
        return "ignored"
    user_id = await _user_for(conn, stripe, event, customer_id, obj)
    if user_id is None:
        return "ignored"
    if event.type == "customer.deleted":
        return await _customer_deleted(conn, user_id, customer_id)
    if event.type == "customer.updated":
        return await _customer_updated(conn, stripe, event, user_id, customer_id)
    await sync_customer(conn, stripe, plans, user_id, customer_id)
    return "processed"


async def _user_for(
    conn: Connection,
    stripe: StripeGateway,
    event: EventRecord,
    customer_id: str,
    obj: Mapping[str, Any],
) -> str | None:
    """The user this customer belongs to, linking it when our metadata says so.

    None means "acknowledge and change nothing" (a deleted account, someone else's
    customer); `NotYetLinkable` means "try again later".
    """
    owner = await db_customers.owner_of(conn, customer_id)
    if owner is not None:
        await db_customers.lock_for_user(conn, owner)
        # Re-read under the lock: a concurrent deletion or replacement may have won.
        return await db_customers.owner_of(conn, customer_id)
    if await tombstones.for_customer(conn, customer_id) is not None:
        return None  # the account was deleted; late events change nothing
    if event.type in CUSTOMER_EVENTS:
        return None  # a customer we never linked: nothing of ours to mirror
    claimed = _claimed_user(obj)
    if claimed is None:
        raise NotYetLinkable(f"customer {customer_id} is not linked to a user yet")
    tombstone = await tombstones.get(conn, claimed)
    if tombstone is not None and tombstone.deleted_at >= event.created_at:
        return None
    if await db_users.get(conn, claimed) is None:
        raise NotYetLinkable(f"user {claimed} named by customer {customer_id} does not exist")
    await db_customers.lock_for_user(conn, claimed)
    current = await db_customers.get(conn, claimed)
    if current is not None:
        if current.stripe_customer_id != customer_id:
            log.warning(
                "event %s: customer %s claims user %s, who is linked to %s; ignored",
                event.id,
                customer_id,
                claimed,
                current.stripe_customer_id,
            )
            return None
        return claimed
    try:
        customer = await stripe.retrieve_customer(customer_id)
    except CustomerGone:
        return None
    owner = customer.metadata.get("userId")
    if owner not in (None, "", claimed):
        log.warning(
            "event %s: customer %s belongs to %s, not %s", event.id, customer_id, owner, claimed
        )
        return None
    await customers.link(conn, claimed, customer)
    log.info("event %s linked customer %s to user %s", event.id, customer_id, claimed)
    return claimed


async def _customer_deleted(conn: Connection, user_id: str, customer_id: str) -> str:
    return "processed" if await customers.forget_gone(conn, user_id, customer_id) else "ignored"


async def _customer_updated(
    conn: Connection, stripe: StripeGateway, event: EventRecord, user_id: str, customer_id: str
) -> str:
    try:
        customer = await stripe.retrieve_customer(customer_id)
    except CustomerGone:
        return await _customer_deleted(conn, user_id, customer_id)
    await db_customers.mirror(
        conn, customer_id, email=customer.email, name=customer.name, phone=customer.phone
    )
    first, last = split_full_name(customer.name)
    try:
        phone = normalize_phone("phone", customer.phone)
    except BadUserInput:
        user = await db_users.get(conn, user_id)
        phone = user.phone if user else None  # keep ours rather than store a malformed one
    await db_users.apply_stripe_profile(
        conn, user_id, first_name=first, last_name=last, phone=phone, changed_at=event.created_at
    )
    return "processed"
