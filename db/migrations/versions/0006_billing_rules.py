"""Billing that follows Stripe: every subscription of a customer, checkout sessions, claims.

- `subscriptions` holds one row per Stripe subscription (a customer can hold several), plus
  one `free` row per linked user (`stripe_subscription_id IS NULL`) standing for "no paid
  plan". Each existing row is kept: a Stripe subscription stays as it is and gains the
  user's free row; a free row stays the free row. `paid`: its latest invoice had money
  paid; `duplicate_refunded_at`: a duplicate this service canceled and refunded.
- `customers.tagged`: false while a customer found in Stripe is claimed by a user but
  Stripe's `metadata.userId` does not name them yet; `*_read_at` are the read fences: the
  database clock at the start of the newest Stripe read applied, so an older read that
  finishes later never overwrites a newer one.
- `checkout_sessions`: the Checkout sessions this service created, the evidence it links
  customers on, and the "one open session per user" rule's memory.
- `sync_jobs` carry which profile fields changed and the login email Stripe may still hold;
  `subject` lets a user have several jobs of one kind (one per duplicate subscription).
- `user_leases`: one billing operation at a time per user across processes, held without a
  database connection or transaction (UNLOGGED: a crash simply frees them).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_pkey")
    op.execute(
        """
        ALTER TABLE subscriptions
            ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            ADD COLUMN stripe_customer_id text,
            ADD COLUMN cancel_at timestamptz,
            ADD COLUMN trial_end timestamptz,
            ADD COLUMN created_at timestamptz NOT NULL DEFAULT now(),
            ADD COLUMN metadata_user_id text,
            ADD COLUMN paid boolean NOT NULL DEFAULT false,
            ADD COLUMN duplicate_refunded_at timestamptz
        """
    )
    op.execute("UPDATE subscriptions SET created_at = updated_at")
    op.execute(
        """
        ALTER TABLE subscriptions
            ADD CONSTRAINT subscriptions_stripe_id UNIQUE (stripe_subscription_id)
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX subscriptions_free ON subscriptions (user_id) "
        "WHERE stripe_subscription_id IS NULL"
    )
    op.execute("CREATE INDEX subscriptions_user ON subscriptions (user_id)")
    op.execute(
        """
        INSERT INTO subscriptions (user_id, plan_id, status)
        SELECT DISTINCT user_id, 'free', 'active' FROM subscriptions
        WHERE stripe_subscription_id IS NOT NULL
        ON CONFLICT DO NOTHING
        """
    )
    op.execute(
        """
        UPDATE subscriptions s SET stripe_customer_id = c.stripe_customer_id
        FROM customers c WHERE c.user_id = s.user_id AND s.stripe_subscription_id IS NOT NULL
        """
    )

    op.execute(
        """
        ALTER TABLE customers
            ADD COLUMN tagged boolean NOT NULL DEFAULT true,
            ADD COLUMN subscriptions_read_at timestamptz,
            ADD COLUMN customer_read_at timestamptz
        """
    )

    op.execute(
        """
        CREATE TABLE checkout_sessions (
            id                 text PRIMARY KEY,
            user_id            text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            stripe_customer_id text NOT NULL,
            plan_id            text NOT NULL,
            price_id           text NOT NULL,
            url                text,
            status             text NOT NULL DEFAULT 'open'
                               CHECK (status IN ('open', 'complete', 'expired')),
            expires_at         timestamptz NOT NULL,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX checkout_sessions_open ON checkout_sessions (user_id) WHERE status = 'open'"
    )
    op.execute("CREATE INDEX checkout_sessions_customer ON checkout_sessions (stripe_customer_id)")

    op.execute(
        """
        ALTER TABLE sync_jobs
            ADD COLUMN subject text NOT NULL DEFAULT '',
            ADD COLUMN fields text[] NOT NULL DEFAULT '{}',
            ADD COLUMN previous_email text
        """
    )
    # Jobs queued before this revision pushed the whole profile: keep doing so for them.
    op.execute(
        "UPDATE sync_jobs SET fields = '{first_name,last_name,phone,email}' "
        "WHERE kind = 'profile_sync'"
    )
    op.execute("ALTER TABLE sync_jobs DROP CONSTRAINT sync_jobs_user_id_kind_key")
    op.execute(
        "ALTER TABLE sync_jobs ADD CONSTRAINT sync_jobs_user_kind_subject "
        "UNIQUE (user_id, kind, subject)"
    )

    op.execute(
        """
        CREATE UNLOGGED TABLE user_leases (
            user_id    text NOT NULL,
            name       text NOT NULL,
            holder     text NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (user_id, name)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS user_leases")
    op.execute("ALTER TABLE sync_jobs DROP CONSTRAINT sync_jobs_user_kind_subject")
    op.execute("DELETE FROM sync_jobs WHERE subject <> ''")
    op.execute(
        "ALTER TABLE sync_jobs ADD CONSTRAINT sync_jobs_user_id_kind_key UNIQUE (user_id, kind)"
    )
    op.execute(
        "ALTER TABLE sync_jobs DROP COLUMN subject, DROP COLUMN fields, DROP COLUMN previous_email"
    )
    op.execute("DROP TABLE IF EXISTS checkout_sessions")
    op.execute(
        "ALTER TABLE customers DROP COLUMN tagged, DROP COLUMN subscriptions_read_at, "
        "DROP COLUMN customer_read_at"
    )
    # Keep each user's one subscription that matters, as the old single row did.
    op.execute(
        """
        DELETE FROM subscriptions s USING (
            SELECT id, row_number() OVER (
                PARTITION BY user_id
                ORDER BY (stripe_subscription_id IS NULL),
                         CASE WHEN status IN ('active', 'trialing', 'past_due') THEN 0
                              WHEN status IN ('incomplete', 'unpaid', 'paused') THEN 1
                              ELSE 2 END,
                         created_at DESC, id DESC) AS rank
            FROM subscriptions) ranked
        WHERE s.id = ranked.id AND ranked.rank > 1
        """
    )
    op.execute("DROP INDEX subscriptions_user")
    op.execute("DROP INDEX subscriptions_free")
    op.execute("ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_stripe_id")
    op.execute(
        "ALTER TABLE subscriptions DROP COLUMN id, DROP COLUMN stripe_customer_id, "
        "DROP COLUMN cancel_at, DROP COLUMN trial_end, DROP COLUMN created_at, "
        "DROP COLUMN metadata_user_id, DROP COLUMN paid, DROP COLUMN duplicate_refunded_at"
    )
    op.execute("ALTER TABLE subscriptions ADD PRIMARY KEY (user_id)")
