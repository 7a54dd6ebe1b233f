"""Stripe events stored byte for byte, and grouped by customer for processing.

`payload` becomes the raw body Stripe signed (bytea): PostgreSQL's jsonb refuses some
bodies Stripe may sign (a `\\u0000` in a string, a lone surrogate), and an event that cannot
be stored is lost once Stripe stops retrying. The body is parsed by the worker instead.
`customer_id` (taken from the event at ingestion) lets the worker take every pending event
of one customer at once and answer them all with one re-read from Stripe. `created_at` may
be unknown (a signed event whose `created` is not a usable time). `processings` counts
how often an event was finished (processed or ignored): more than once only when an
operator replayed it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE stripe_events
            ALTER COLUMN payload TYPE bytea USING convert_to(payload::text, 'UTF8'),
            ALTER COLUMN created_at DROP NOT NULL,
            ADD COLUMN customer_id text,
            ADD COLUMN processings integer NOT NULL DEFAULT 0
        """
    )
    op.execute(
        "CREATE INDEX stripe_events_customer ON stripe_events (customer_id) "
        "WHERE status = 'pending'"
    )
    op.execute("UPDATE stripe_events SET processings = 1 WHERE status IN ('processed', 'ignored')")


def downgrade() -> None:
    op.execute("DROP INDEX stripe_events_customer")
    op.execute(
        """
        ALTER TABLE stripe_events
            DROP COLUMN customer_id,
            DROP COLUMN processings,
            ALTER COLUMN created_at SET DEFAULT now(),
            ALTER COLUMN payload TYPE jsonb USING convert_from(payload, 'UTF8')::jsonb
        """
    )
    op.execute("UPDATE stripe_events SET created_at = received_at WHERE created_at IS NULL")
    op.execute("ALTER TABLE stripe_events ALTER COLUMN created_at SET NOT NULL")
    op.execute("ALTER TABLE stripe_events ALTER COLUMN created_at DROP DEFAULT")
