"""Recording usage: the function the rest of a backend calls when a user consumes something.

    from services.usage import record_usage
    async with database.connection() as conn:     # a `databases` Database
        await record_usage(conn, user_id, "api.requests", 3)

Records show up newest first in `me.usageRecords` and in the user's data export.
"""

from __future__ import annotations

import re

from databases.core import Connection

from db import usage as db_usage
from db.usage import UsageRecordRow
from services.errors import BadUserInput, NotFound

METRIC = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
MAX_QUANTITY = 2**31 - 1  # the column is a PostgreSQL integer


def validate(metric: str, quantity: int) -> None:
    """Metric names are short machine names; quantities are positive and fit the column."""
    if not isinstance(metric, str) or METRIC.fullmatch(metric) is None:
        raise BadUserInput(
            "metric must start with a lowercase letter and have at most 64 of "
            "a-z, 0-9, '_', '.', ':', '-'",
            field="metric",
        )
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise BadUserInput("quantity must be an integer", field="quantity")
    if not 1 <= quantity <= MAX_QUANTITY:
        raise BadUserInput(f"quantity must be between 1 and {MAX_QUANTITY}", field="quantity")


async def record_usage(
    conn: Connection, user_id: str, metric: str, quantity: int
) -> UsageRecordRow:
    """Store one usage record on `conn`, a `databases` connection (inside the caller's
    transaction if it has one); `BadUserInput` for a bad metric or quantity, `NotFound` for
    a user we do not have (never provisioned, or deleted)."""
    validate(metric, quantity)
    record = await db_usage.insert(conn.raw_connection, user_id, metric, quantity)
    if record is None:
        raise NotFound(f"No user {user_id!r} to record usage for.")
    return record
