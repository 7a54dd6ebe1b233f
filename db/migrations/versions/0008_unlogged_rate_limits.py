"""Rate-limit state need not survive a crash: UNLOGGED, so a check never waits on the disk.

Every authenticated request now counts against the user's request limit (one upsert per
request). On an UNLOGGED table that upsert writes no write-ahead log, so its commit does
not wait for a flush to disk; a crash empties the table, which only forgets the limits.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE rate_limits SET UNLOGGED")


def downgrade() -> None:
    op.execute("ALTER TABLE rate_limits SET LOGGED")
