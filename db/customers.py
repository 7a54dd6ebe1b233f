"""The link between a user and their Stripe customer, with the customer's mirrored fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Connection, as_dict

_COLUMNS = "user_id, stripe_customer_id, email, name, phone, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    user_id: str
    stripe_customer_id: str
    email: str | None
    name: str | None
    phone: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> CustomerRecord:
        return cls(**as_dict(row))


async def for_users(conn: Connection, user_ids: Sequence[str]) -> dict[str, CustomerRecord]:
    rows = await conn.fetch_all(
        f"SELECT {_COLUMNS} FROM customers WHERE user_id = ANY(:ids)",  # noqa: S608
        {"ids": list(user_ids)},
    )
    return {row["user_id"]: CustomerRecord.from_row(row) for row in rows}


async def get(conn: Connection, user_id: str) -> CustomerRecord | None:
    row = await conn.fetch_one(
        f"SELECT {_COLUMNS} FROM customers WHERE user_id = :user_id",  # noqa: S608
        {"user_id": user_id},
    )
    return None if row is None else CustomerRecord.from_row(row)


async def owner_of(conn: Connection, stripe_customer_id: str) -> str | None:
    owner: str | None = await conn.fetch_val(
        "SELECT user_id FROM customers WHERE stripe_customer_id = :id", {"id": stripe_customer_id}
    )
    return owner


async def lock_for_user(conn: Connection, user_id: str) -> None:
    """Serialise customer creation per user until the surrounding transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('customer:' || :user_id, 0))",
        {"user_id": user_id},
    )


async def link(
    conn: Connection,
    *,
    user_id: str,
    stripe_customer_id: str,
    email: str | None,
    name: str | None,
    phone: str | None,
    created_at: datetime,
) -> CustomerRecord:
    row = await conn.fetch_one(
        f"""
        INSERT INTO customers (user_id, stripe_customer_id, email, name, phone, created_at)
        VALUES (:user_id, :stripe_customer_id, :email, :name, :phone, :created_at)
        RETURNING {_COLUMNS}
        """,  # noqa: S608
        {
            "user_id": user_id,
            "stripe_customer_id": stripe_customer_id,
            "email": email,
            "name": name,
            "phone": phone,
            "created_at": created_at,
        },
    )
    assert row is not None
    return CustomerRecord.from_row(row)


async def unlink(conn: Connection, user_id: str, stripe_customer_id: str) -> bool:
    """Remove the link only if it still points at that customer."""
    removed = await conn.fetch_val(
        """
        DELETE FROM customers WHERE user_id = :user_id AND stripe_customer_id = :id
        RETURNING 1
        """,
        {"user_id": user_id, "id": stripe_customer_id},
    )
    return removed is not None


async def all_links(conn: Connection) -> list[CustomerRecord]:
    rows = await conn.fetch_all(f"SELECT {_COLUMNS} FROM customers ORDER BY user_id")  # noqa: S608
    return [CustomerRecord.from_row(row) for row in rows]


async def mirror(
    conn: Connection,
    stripe_customer_id: str,
    *,
    email: str | None,
    name: str | None,
    phone: str | None,
) -> bool:
    """Copy what Stripe holds; True when something changed."""
    changed = await conn.fetch_val(
        """
        UPDATE customers SET email = :email, name = :name, phone = :phone, updated_at = now()
        WHERE stripe_customer_id = :id
          AND (email, name, phone) IS DISTINCT FROM (:email, :name, :phone)
        RETURNING true
        """,
        {"id": stripe_customer_id, "email": email, "name": name, "phone": phone},
    )
    return changed is True
