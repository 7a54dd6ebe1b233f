"""The link between a user and their Stripe customer, with the customer's mirrored fields.

A link is `tagged` once Stripe's `metadata.userId` names the user: a customer found in
Stripe is claimed here first (`claim`, untagged), then tagged in Stripe, then marked tagged,
so two users can never both take one customer. The `*_read_at` columns are read fences:
the database clock at the start of the newest Stripe read that was applied (see
`services.subscriptions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from db.connection import Pg

COLUMNS = (
    "user_id, stripe_customer_id, email, name, phone, created_at, updated_at, tagged, entitlements"
)


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    user_id: str
    stripe_customer_id: str
    email: str | None
    name: str | None
    phone: str | None
    created_at: datetime
    updated_at: datetime
    tagged: bool = True
    entitlements: tuple[str, ...] = ()  # the customer's active Stripe Entitlements

    @classmethod
    def from_row(cls, row: Any) -> CustomerRecord:
        values = list(row)
        values[8] = tuple(values[8])
        return cls(*values)  # the columns in the fields' order (COLUMNS)


async def for_users(pg: Pg, user_ids: Sequence[str]) -> dict[str, CustomerRecord]:
    rows = await pg.fetch(
        f"SELECT {COLUMNS} FROM customers WHERE user_id = ANY($1::text[])",  # noqa: S608
        list(user_ids),
    )
    return {row["user_id"]: CustomerRecord.from_row(row) for row in rows}


async def get(pg: Pg, user_id: str) -> CustomerRecord | None:
    row = await pg.fetchrow(
        f"SELECT {COLUMNS} FROM customers WHERE user_id = $1",  # noqa: S608
        user_id,
    )
    return None if row is None else CustomerRecord.from_row(row)


async def by_stripe_id(pg: Pg, stripe_customer_id: str) -> CustomerRecord | None:
    row = await pg.fetchrow(
        f"SELECT {COLUMNS} FROM customers WHERE stripe_customer_id = $1",  # noqa: S608
        stripe_customer_id,
    )
    return None if row is None else CustomerRecord.from_row(row)


async def link(
    pg: Pg,
    *,
    user_id: str,
    stripe_customer_id: str,
    email: str | None,
    name: str | None,
    phone: str | None,
    created_at: datetime,
    tagged: bool = True,
) -> CustomerRecord | None:
    """Link the user to the customer; None when the user already has a customer or the
    customer already belongs to someone (the caller reads which)."""
    row = await pg.fetchrow(
        f"""
        INSERT INTO customers (user_id, stripe_customer_id, email, name, phone, created_at,
            tagged)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT DO NOTHING
        RETURNING {COLUMNS}
        """,  # noqa: S608
        user_id,
        stripe_customer_id,
        email,
        name,
        phone,
        created_at,
        tagged,
    )
    return None if row is None else CustomerRecord.from_row(row)


async def mark_tagged(pg: Pg, user_id: str, stripe_customer_id: str) -> bool:
    done = await pg.fetchval(
        """
        UPDATE customers SET tagged = true, updated_at = now()
        WHERE user_id = $1 AND stripe_customer_id = $2
        RETURNING true
        """,
        user_id,
        stripe_customer_id,
    )
    return done is True


async def unlink(pg: Pg, user_id: str, stripe_customer_id: str) -> bool:
    """Remove the link only if it still points at that customer, which the user keeps as
    their previous customer (`previous`)."""
    removed = await pg.fetchval(
        """
        WITH gone AS (
            DELETE FROM customers WHERE user_id = $1 AND stripe_customer_id = $2 RETURNING 1
        )
        UPDATE users SET previous_customer_id = $2
        WHERE id = $1 AND EXISTS (SELECT 1 FROM gone)
        RETURNING 1
        """,
        user_id,
        stripe_customer_id,
    )
    return removed is not None


async def previous(pg: Pg, user_id: str) -> str | None:
    """The last customer the user was linked to that Stripe no longer has, if any."""
    found: str | None = await pg.fetchval(
        "SELECT previous_customer_id FROM users WHERE id = $1", user_id
    )
    return found


async def all_links(pg: Pg) -> list[CustomerRecord]:
    rows = await pg.fetch(f"SELECT {COLUMNS} FROM customers ORDER BY user_id")  # noqa: S608
    return [CustomerRecord.from_row(row) for row in rows]


async def mirror(
    pg: Pg,
    stripe_customer_id: str,
    *,
    email: str | None,
    name: str | None,
    phone: str | None,
) -> bool:
    """Copy what Stripe holds; True when something changed."""
    changed = await pg.fetchval(
        """
        UPDATE customers SET email = $2, name = $3, phone = $4, updated_at = now()
        WHERE stripe_customer_id = $1
          AND (email, name, phone) IS DISTINCT FROM ($2, $3, $4)
        RETURNING true
        """,
        stripe_customer_id,
        email,
        name,
        phone,
    )
    return changed is True


Read = Literal["subscriptions", "customer", "invoices", "entitlements"]


async def advance_fence(pg: Pg, stripe_customer_id: str, read: Read, started_at: datetime) -> bool:
    """Record that a Stripe read of `read` started at `started_at` (the database's clock) is
    being applied; False when a read that started later was applied already (then this one
    is older and must not be written) or the customer is no longer linked."""
    column = {
        "subscriptions": "subscriptions_read_at",
        "customer": "customer_read_at",
        "invoices": "invoices_read_at",
        "entitlements": "entitlements_read_at",
    }[read]
    advanced = await pg.fetchval(
        f"""
        UPDATE customers SET {column} = $2
        WHERE stripe_customer_id = $1 AND ({column} IS NULL OR {column} < $2)
        RETURNING true
        """,  # noqa: S608
        stripe_customer_id,
        started_at,
    )
    return advanced is True


async def now(pg: Pg) -> datetime:
    """The database's clock: where every read fence's time comes from."""
    value: datetime = await pg.fetchval("SELECT clock_timestamp()")
    return value


async def set_entitlements(pg: Pg, stripe_customer_id: str, lookup_keys: list[str]) -> bool:
    """The customer's active Stripe Entitlements; True when they changed."""
    changed = await pg.fetchval(
        """
        UPDATE customers SET entitlements = $2::text[], updated_at = now()
        WHERE stripe_customer_id = $1 AND entitlements IS DISTINCT FROM $2::text[]
        RETURNING true
        """,
        stripe_customer_id,
        sorted(set(lookup_keys)),
    )
    return changed is True


async def entitlements_of(pg: Pg, user_ids: Sequence[str]) -> dict[str, list[str]]:
    rows = await pg.fetch(
        "SELECT user_id, entitlements FROM customers WHERE user_id = ANY($1::text[])",
        list(user_ids),
    )
    return {row["user_id"]: list(row["entitlements"]) for row in rows}
