"""Billing features for the SPA: invoices, Stripe's own entitlements, notifications once.

- `invoices`: each invoice of a user's customer as last read from Stripe (amounts in the
  currency's smallest unit), served to the SPA also while Stripe is down.
- `customers.entitlements`: the customer's active Stripe Entitlements (feature lookup keys),
  with its read fence `entitlements_read_at`; `invoices_read_at` is the invoices' fence.
- `notifications.event_id`: a notification a Stripe event caused is written once however
  often the event is processed; `notifications.url`: where the user acts on it (the hosted
  page of an invoice whose payment failed).
- `subscriptions.item_id`: the subscription item whose price a plan change swaps.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE invoices (
            id                     text PRIMARY KEY,
            user_id                text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            stripe_customer_id     text NOT NULL,
            stripe_subscription_id text,
            number                 text,
            status                 text NOT NULL CHECK (status IN (
                                       'draft', 'open', 'paid', 'uncollectible', 'void')),
            currency               text NOT NULL,
            amount_due             bigint NOT NULL,
            amount_paid            bigint NOT NULL,
            created_at             timestamptz NOT NULL,
            period_start           timestamptz,
            period_end             timestamptz,
            hosted_invoice_url     text,
            invoice_pdf            text,
            updated_at             timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX invoices_user_newest ON invoices "
        "(user_id, created_at DESC, number DESC NULLS FIRST, id DESC)"
    )
    op.execute(
        """
        ALTER TABLE customers
            ADD COLUMN entitlements text[] NOT NULL DEFAULT '{}',
            ADD COLUMN entitlements_read_at timestamptz,
            ADD COLUMN invoices_read_at timestamptz
        """
    )
    op.execute("ALTER TABLE subscriptions ADD COLUMN item_id text")
    op.execute("ALTER TABLE notifications ADD COLUMN event_id text, ADD COLUMN url text")
    op.execute(
        "CREATE UNIQUE INDEX notifications_event ON notifications (event_id, kind) "
        "WHERE event_id IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX notifications_event")
    op.execute("ALTER TABLE notifications DROP COLUMN event_id, DROP COLUMN url")
    op.execute("ALTER TABLE subscriptions DROP COLUMN item_id")
    op.execute(
        "ALTER TABLE customers DROP COLUMN entitlements, DROP COLUMN entitlements_read_at, "
        "DROP COLUMN invoices_read_at"
    )
    op.execute("DROP TABLE IF EXISTS invoices")
