"""Profile and subscription mutations."""

from __future__ import annotations

import strawberry

from app.context import Context
from resolvers.query import to_user
from resolvers.users import to_subscription
from schema.types import Subscription, UpdateProfileInput
from schema.user import User
from services import billing, profile


async def update_profile(info: strawberry.Info[Context, None], input: UpdateProfileInput) -> User:
    context = info.context
    sent = {
        "firstName": input.first_name,
        "lastName": input.last_name,
        "phone": input.phone,
    }
    changes = {field: value for field, value in sent.items() if value is not strawberry.UNSET}
    user = await profile.update_profile(context.runtime.pool, context.user, changes)
    context.runtime.worker.wake()
    return to_user(user)


async def sync_subscription(info: strawberry.Info[Context, None]) -> Subscription | None:
    context = info.context
    runtime = context.runtime
    record = await billing.sync_subscription(
        runtime.pool,
        runtime.stripe,
        runtime.plans,
        runtime.single_flight,
        context.user,
        rate_limit=context.settings.rate_limits.stripe,
    )
    return None if record is None else to_subscription(record)
