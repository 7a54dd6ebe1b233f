"""The nested fields of `Export`."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from resolvers.context import Context
from services import export


async def stripe_customer(
    info: strawberry.Info[Context, None], stripe_customer_id: str | None
) -> JSON | None:
    """Its own field, so a Stripe failure errors here and the rest of the export returns.
    Each occurrence counts against the caller's Stripe bucket."""
    deps = info.context.deps
    found = await export.stripe_customer(
        deps.pool,
        deps.stripe,
        info.context.user,
        stripe_customer_id,
        rate_limit=deps.limits.stripe,
    )
    return None if found is None else JSON(dict(found))
