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
