"""What the query cost needs to know of a field, declared where the field is.

A field that calls Stripe while it runs carries `metadata=STRIPE_BACKED`; a list that never
holds more than some number of items (or holds a handful by nature) carries
`metadata=fixed_size(n)`. The engine's cost analysis (`app.graphql.cost`) reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STRIPE_KEY = "stripe_backed"
SIZE_KEY = "list_size"

STRIPE_BACKED: Mapping[str, Any] = {STRIPE_KEY: True}


def fixed_size(rows: int) -> Mapping[str, Any]:
    """The metadata of a list the cost counts at `rows` items: one that never holds more
    (`Export.usageRecords`), or one that holds a handful by nature (`SUBSCRIPTIONS`)."""
    return {SIZE_KEY: rows}


# A customer holds a handful of subscriptions (one checkout at a time; a duplicate paid
# subscription is canceled at once), so their lists count 10, not a full page of 100.
SUBSCRIPTIONS = fixed_size(10)
