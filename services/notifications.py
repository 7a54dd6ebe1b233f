"""Notifications that Stripe's events cause: a trial about to end, a payment that failed.

Each is written in the transaction that applies the event's re-read state, keyed by the
event, so it is added once however often the event is processed, and only while the state
re-read still calls for it (a late `payment_failed` for an invoice paid since, or a
`trial_will_end` for a trial already converted or canceled, adds nothing). Amounts are shown
in the currency's major unit (Stripe gives the smallest: cents, yen for a zero-decimal
currency, fils for a three-decimal one).
"""

from __future__ import annotations

from datetime import UTC, datetime

from db import invoices as db_invoices
from db import notifications as db_notifications
from db import subscriptions as db_subscriptions
from db.connection import Pg
from services.plans import PlanCatalog

TRIAL_WILL_END = "trial_will_end"
PAYMENT_FAILED = "payment_failed"

# Stripe's zero-decimal currencies: the smallest unit is the unit.
ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)

# Stripe's three-decimal currencies: the smallest unit is a thousandth.
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


def money(amount: int, currency: str) -> str:
    """`1500, "usd"` → `"15.00 USD"`; `500, "jpy"` → `"500 JPY"`; `5250, "kwd"` →
    `"5.250 KWD"` (`amount` in the currency's smallest unit, as Stripe gives it)."""
    code = currency.upper()
    if currency.lower() in ZERO_DECIMAL:
        return f"{amount} {code}"
    if currency.lower() in THREE_DECIMAL:
        return f"{amount / 1000:.3f} {code}"
    return f"{amount / 100:.2f} {code}"


async def for_event(
    pg: Pg, plans: PlanCatalog, user_id: str, event_id: str, event_type: str, object_id: str
) -> None:
    """The notification `event_type` causes, if any, from the state just re-read (inside the
    user's transaction)."""
    if event_type == "customer.subscription.trial_will_end":
        rows = await db_subscriptions.of_user(pg, user_id)
        row = next((r for r in rows if r.stripe_subscription_id == object_id), None)
        if (
            row is None
            or row.status != "trialing"
            or row.trial_end is None
            or row.trial_end <= datetime.now(UTC)
        ):
            return
        plan = plans.get(row.plan_id)
        name = plan.name if plan else "paid"
        await db_notifications.add(
            pg,
            user_id,
            TRIAL_WILL_END,
            f"Your {name} trial ends on {row.trial_end:%B %-d, %Y}. Add a payment method "
            "to keep your plan.",
            event_id=event_id,
        )
    elif event_type == "invoice.payment_failed":
        invoice = await db_invoices.get(pg, object_id)
        if invoice is None or invoice.user_id != user_id or invoice.status != "open":
            return
        where = (
            "Pay the invoice to keep your plan."  # its page is the notification's url
            if invoice.hosted_invoice_url
            else "Update your payment method in the billing portal."
        )
        await db_notifications.add(
            pg,
            user_id,
            PAYMENT_FAILED,
            f"Your payment of {money(invoice.amount_due, invoice.currency)} failed. {where}",
            url=invoice.hosted_invoice_url,
            event_id=event_id,
        )
