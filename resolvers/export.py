"""The nested fields of `Export`."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from app.context import Context
from services import export


async def stripe_customer(
    info: strawberry.Info[Context, None], stripe_customer_id: str | None
) -> JSON | None:
    """Its own field, so a Stripe failure errors here and the rest of the export returns."""
    found = await export.stripe_customer(info.context.runtime.stripe, stripe_customer_id)
    return None if found is None else JSON(dict(found))
