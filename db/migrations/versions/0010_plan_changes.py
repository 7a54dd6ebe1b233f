"""What in-app subscription management keeps between requests.

- `sent_changes`: a subscription change sent to Stripe whose answer is not known yet (the
  connection failed, the process died), sent again with its idempotency key; at most one a
  subscription, forgotten after a day.
- `plan_change_previews`: the plan-change previews a user may confirm (an hour), with the
  state they were computed on.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE sent_changes (
            user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            subscription_id text NOT NULL,
            action          text NOT NULL,
            params          text NOT NULL,
            idempotency_key text NOT NULL,
            sent_at         timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, subscription_id)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE plan_change_previews (
            user_id            text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            subscription_id    text NOT NULL,
            from_price_id      text,
            to_price_id        text NOT NULL,
            current_period_end timestamptz,
            proration_date     bigint NOT NULL,
            amount_due         bigint NOT NULL,
            currency           text NOT NULL,
            created_at         timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, to_price_id, proration_date)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE plan_change_previews")
    op.execute("DROP TABLE sent_changes")
