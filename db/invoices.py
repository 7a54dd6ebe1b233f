"""Each invoice of a user's customer, as last read from Stripe."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Pg

COLUMNS = (
    "id, user_id, stripe_customer_id, stripe_subscription_id, number, status, currency, "
    "amount_due, amount_paid, created_at, period_start, period_end, hosted_invoice_url, "
    "invoice_pdf, updated_at"
)
# Newest first; invoices created in the same second by Stripe's per-customer sequence
# (numbers are `PREFIX-0001`, `PREFIX-0002`…), a draft (no number yet) before them.
NEWEST_FIRST = "created_at DESC, number DESC NULLS FIRST, id DESC"
NEWEST_SQL = f"""
    SELECT {COLUMNS} FROM invoices
    WHERE user_id = $1 ORDER BY {NEWEST_FIRST} LIMIT $2
"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    id: str
    user_id: str
    stripe_customer_id: str
    stripe_subscription_id: str | None
    number: str | None
    status: str  # draft, open, paid, uncollectible or void
    currency: str
    amount_due: int  # the currency's smallest unit
    amount_paid: int  # the currency's smallest unit
    created_at: datetime
    period_start: datetime | None
    period_end: datetime | None
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> InvoiceRecord:
        return cls(*row)  # the columns in the fields' order (COLUMNS)


@dataclass(frozen=True, slots=True)
class InvoiceState:
    """One Stripe invoice as it is to be stored."""

    id: str
    stripe_subscription_id: str | None
    number: str | None
    status: str
    currency: str
    amount_due: int
    amount_paid: int
    created_at: datetime
    period_start: datetime | None
    period_end: datetime | None
    hosted_invoice_url: str | None
    invoice_pdf: str | None


async def newest(pg: Pg, user_id: str, limit: int) -> list[InvoiceRecord]:
    rows = await pg.fetch(NEWEST_SQL, user_id, limit)
    return [InvoiceRecord.from_row(row) for row in rows]


async def get(pg: Pg, invoice_id: str) -> InvoiceRecord | None:
    row = await pg.fetchrow(f"SELECT {COLUMNS} FROM invoices WHERE id = $1", invoice_id)  # noqa: S608
    return None if row is None else InvoiceRecord.from_row(row)


async def write_state(pg: Pg, user_id: str, customer_id: str, state: InvoiceState) -> bool:
    """Store one invoice as Stripe holds it now; True when something changed."""
    changed = await pg.fetchval(
        """
        INSERT INTO invoices AS i (id, user_id, stripe_customer_id, stripe_subscription_id,
            number, status, currency, amount_due, amount_paid, created_at, period_start,
            period_end, hosted_invoice_url, invoice_pdf)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (id) DO UPDATE SET
            user_id = EXCLUDED.user_id,
            stripe_customer_id = EXCLUDED.stripe_customer_id,
            stripe_subscription_id = EXCLUDED.stripe_subscription_id,
            number = EXCLUDED.number,
            status = EXCLUDED.status,
            currency = EXCLUDED.currency,
            amount_due = EXCLUDED.amount_due,
            amount_paid = EXCLUDED.amount_paid,
            created_at = EXCLUDED.created_at,
            period_start = EXCLUDED.period_start,
            period_end = EXCLUDED.period_end,
            hosted_invoice_url = EXCLUDED.hosted_invoice_url,
            invoice_pdf = EXCLUDED.invoice_pdf,
            updated_at = now()
        WHERE (i.user_id, i.stripe_subscription_id, i.number, i.status, i.currency,
               i.amount_due, i.amount_paid, i.period_start, i.period_end,
               i.hosted_invoice_url, i.invoice_pdf)
          IS DISTINCT FROM (EXCLUDED.user_id, EXCLUDED.stripe_subscription_id, EXCLUDED.number,
               EXCLUDED.status, EXCLUDED.currency, EXCLUDED.amount_due, EXCLUDED.amount_paid,
               EXCLUDED.period_start, EXCLUDED.period_end, EXCLUDED.hosted_invoice_url,
               EXCLUDED.invoice_pdf)
        RETURNING true
        """,
        state.id,
        user_id,
        customer_id,
        state.stripe_subscription_id,
        state.number,
        state.status,
        state.currency,
        state.amount_due,
        state.amount_paid,
        state.created_at,
        state.period_start,
        state.period_end,
        state.hosted_invoice_url,
        state.invoice_pdf,
    )
    return changed is True


async def delete(
    pg: Pg, customer_id: str, invoice_ids: Sequence[str], *, all_but: bool = False
) -> bool:
    """Forget the customer's invoices named (or, with `all_but`, every one not named) that
    Stripe no longer has: deleted drafts. True when one was forgotten."""
    condition = "NOT (id = ANY($2::text[]))" if all_but else "id = ANY($2::text[])"
    deleted = await pg.fetch(
        f"DELETE FROM invoices WHERE stripe_customer_id = $1 AND {condition} RETURNING id",  # noqa: S608
        customer_id,
        list(invoice_ids),
    )
    return bool(deleted)
