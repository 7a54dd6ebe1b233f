"""The customer a user had before their current one.

- `users.previous_customer_id`: the last customer Stripe no longer has (deleted in the
  Dashboard, say) that the user was linked to. A new customer's idempotency key names it,
  so that creating one after a deletion is a new request to Stripe, not a replay of the
  request that created the deleted one.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN previous_customer_id text")


def downgrade() -> None:
    op.execute("ALTER TABLE users DROP COLUMN previous_customer_id")
