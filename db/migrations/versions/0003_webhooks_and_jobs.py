"""Stripe events as received, and durable jobs that push profile changes to Stripe.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE stripe_events (
            id              text PRIMARY KEY,
            type            text NOT NULL,
            created_at      timestamptz NOT NULL,
            payload         jsonb NOT NULL,
            received_at     timestamptz NOT NULL DEFAULT now(),
            status          text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'processed', 'ignored', 'failed')),
            attempts        integer NOT NULL DEFAULT 0,
            last_error      text,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            locked_until    timestamptz,
            processed_at    timestamptz
        )
        """
    )
    op.execute(
        "CREATE INDEX stripe_events_due ON stripe_events (next_attempt_at) WHERE status = 'pending'"
    )
    op.execute(
        "CREATE INDEX stripe_events_failed ON stripe_events (received_at) WHERE status = 'failed'"
    )
    op.execute(
        """
        CREATE TABLE sync_jobs (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            kind            text NOT NULL,
            version         integer NOT NULL DEFAULT 1,
            attempts        integer NOT NULL DEFAULT 0,
            last_error      text,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            locked_until    timestamptz,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now(),
            UNIQUE (user_id, kind)
        )
        """
    )
    op.execute("CREATE INDEX sync_jobs_due ON sync_jobs (next_attempt_at)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS sync_jobs")
    op.execute("DROP TABLE IF EXISTS stripe_events")
