"""Users, their Stripe customer link, subscription, notifications and usage records.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users (
            id                 text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 255),
            email              text,
            email_verified     boolean NOT NULL DEFAULT false,
            first_name         text,
            last_name          text,
            phone              text,
            profile_updated_at timestamptz,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE customers (
            user_id            text PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
            stripe_customer_id text NOT NULL UNIQUE,
            email              text,
            name               text,
            phone              text,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE subscriptions (
            user_id                text PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
            plan_id                text NOT NULL DEFAULT 'free',
            status                 text NOT NULL DEFAULT 'active' CHECK (status IN (
                                       'active', 'trialing', 'past_due', 'canceled', 'incomplete',
                                       'incomplete_expired', 'unpaid', 'paused')),
            stripe_subscription_id text,
            price_id               text,
            cancel_at_period_end   boolean NOT NULL DEFAULT false,
            current_period_end     timestamptz,
            updated_at             timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE notifications (
            id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            kind       text NOT NULL,
            message    text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX notifications_user_newest ON notifications (user_id, created_at DESC, id DESC)"
    )
    op.execute(
        """
        CREATE TABLE usage_records (
            id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            metric     text NOT NULL,
            quantity   integer NOT NULL CHECK (quantity > 0),
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX usage_records_user_newest ON usage_records (user_id, created_at DESC, id DESC)"
    )


def downgrade() -> None:
    for table in ("usage_records", "notifications", "subscriptions", "customers", "users"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
