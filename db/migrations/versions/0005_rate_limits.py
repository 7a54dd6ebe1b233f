"""Per-user rate limits, shared by every server process through the database.

One row per (user, bucket) holds the bucket's GCRA state: `tat`, the "theoretical arrival
time" at which the user's allowance is whole again. A row whose `tat` has passed means the
same as no row, which is what lets the worker purge such rows at any time.

No foreign key to `users`, on purpose: deleting an account must not reset its limits
(otherwise delete-and-come-back would undo the deletion limit). The row holds nothing but
the user id, which the deletion's tombstone keeps anyway, and a time; it is purged once that
time has passed. `allowed` records whether the latest attempt was let through: the
check is one `INSERT … ON CONFLICT DO UPDATE`, whose RETURNING sees only the new row.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No index on `tat`: every allowed attempt moves it, and an index would make those
    # updates non-HOT; the periodic purge can afford a scan of this small table.
    op.execute(
        """
        CREATE TABLE rate_limits (
            user_id text NOT NULL,
            bucket  text NOT NULL,
            tat     timestamptz NOT NULL,
            allowed boolean NOT NULL,
            PRIMARY KEY (user_id, bucket)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS rate_limits")
