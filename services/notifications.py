"""Notifications that Stripe's events cause: a trial about to end, a payment that failed.

Each is written in the transaction that applies the event's re-read state, keyed by the
event, so it is added once however often the event is processed. Amounts are shown in the
currency's major unit (Stripe gives the smallest: cents, or yen for a zero-decimal currency).
"""

from __future__ import annotations

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


def money(amount: int, currency: str) -> str:
    """`1500, "usd"` → `"15.00 USD"`; `500, "jpy"` → `"500 JPY"`."""
    code = currency.upper()
    if currency.lower() in ZERO_DECIMAL:
        return f"{amount} {code}"
    return f"{amount / 100:.2f} {code}"


async def for_event(
    pg: Pg, plans: PlanCatalog, user_id: str, event_id: str, event_type: str, object_id: str
) -> None:
    """The notification `event_type` causes, if any, from the state just re-read (inside the
    user's transaction)."""
    if event_type == "customer.subscription.trial_will_end":
        rows = await db_subscriptions.of_user(pg, user_id)
        row = next((r for r in rows if r.stripe_subscription_id == object_id), None)
        if row is None or row.trial_end is None:
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
        if invoice is None or invoice.user_id != user_id:
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
