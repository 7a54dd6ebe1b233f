"""Tombstones of deleted accounts: a token issued before the deletion must not revive one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE deleted_users (
            user_id            text PRIMARY KEY,
            stripe_customer_id text,
            deleted_at         timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX deleted_users_stripe_customer ON deleted_users (stripe_customer_id) "
        "WHERE stripe_customer_id IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS deleted_users")
