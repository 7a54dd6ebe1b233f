"""A user's invoices: mirrored from Stripe, served from our copy (also while Stripe is down).

Like subscriptions (see `services.subscriptions`), invoices are re-read from Stripe whenever
an `invoice.*` event arrives, rather than taken from the event, and written behind a read
fence, so events in any order leave the newest state. A re-read takes the customer's newest
100 invoices, and any invoice an event names that is older than those; `resync` reads every
page. An invoice Stripe no longer has (a one-off draft deleted: `invoice.deleted`) is
forgotten when an event names it, or when `resync` reads every page without it. Amounts are
in the currency's smallest unit, as Stripe gives them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from db import customers as db_customers
from db import invoices as db_invoices
from db.connection import Pg, Pool
from db.invoices import InvoiceRecord, InvoiceState
from db.locks import user_transaction
from services.listings import page_size
from services.stripe_gateway import StripeGateway, StripeInvoice


def _time(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def state_of(invoice: StripeInvoice) -> InvoiceState:
    return InvoiceState(
        id=invoice.id,
        stripe_subscription_id=invoice.subscription_id,
        number=invoice.number,
        status=invoice.status,
        currency=invoice.currency,
        amount_due=invoice.amount_due,
        amount_paid=invoice.amount_paid,
        created_at=datetime.fromtimestamp(invoice.created, UTC),
        period_start=_time(invoice.period_start),
        period_end=_time(invoice.period_end),
        hosted_invoice_url=invoice.hosted_invoice_url,
        invoice_pdf=invoice.invoice_pdf,
    )


@dataclass(frozen=True, slots=True)
class InvoicesRead:
    """What one read of a customer's invoices found at Stripe."""

    found: list[StripeInvoice]
    deleted: list[str] = field(default_factory=list)  # named, and Stripe has none by that ID
    complete: bool = False  # every invoice the customer has was listed: one not found is gone


async def read(
    stripe: StripeGateway, customer_id: str, named: Iterable[str] = (), *, every_page: bool = False
) -> InvoicesRead:
    """The customer's invoices as Stripe holds them now: the newest 100 (or every page) and
    each of `named` not among them; those of `named` Stripe no longer has are `deleted`."""
    listed, complete = await stripe.list_invoices(customer_id, every_page=every_page)
    found = {i.id: i for i in listed}
    deleted: list[str] = []
    for invoice_id in named:
        if invoice_id not in found:
            invoice = await stripe.retrieve_invoice(invoice_id)
            if invoice is None:
                deleted.append(invoice_id)
            elif invoice.customer_id == customer_id:
                found[invoice.id] = invoice
    return InvoicesRead(list(found.values()), deleted, complete=complete)


async def apply(
    pg: Pg, user_id: str, customer_id: str, read: InvoicesRead, read_started_at: datetime
) -> bool:
    """Store what a read of the customer's invoices found, inside the user's transaction;
    False (nothing written) when a newer read was applied already."""
    if not await db_customers.advance_fence(pg, customer_id, "invoices", read_started_at):
        return False
    changed = False
    for invoice in read.found:
        changed |= await db_invoices.write_state(pg, user_id, customer_id, state_of(invoice))
    if read.complete:
        changed |= await db_invoices.delete(
            pg, customer_id, [i.id for i in read.found], all_but=True
        )
    elif read.deleted:
        changed |= await db_invoices.delete(pg, customer_id, read.deleted)
    return changed


async def refresh(
    pool: Pool,
    stripe: StripeGateway,
    user_id: str,
    customer_id: str,
    *,
    every_page: bool = False,
) -> bool:
    """Re-read the customer's invoices now and store them; True when something changed."""
    async with pool.connection() as pg:
        started_at = await db_customers.now(pg)
    found = await read(stripe, customer_id, every_page=every_page)
    async with user_transaction(pool, user_id) as pg:
        return await apply(pg, user_id, customer_id, found, started_at)


async def newest(pool: Pool, user_id: str, first: int) -> list[InvoiceRecord]:
    """The user's invoices from our copy, newest first; `BadUserInput` for `first` outside
    1 to 100."""
    limit = page_size(first)
    async with pool.connection() as pg:
        return await db_invoices.newest(pg, user_id, limit)
