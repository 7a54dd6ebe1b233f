"""Profile and subscription mutations."""

from __future__ import annotations

import strawberry

from app.context import Context
from resolvers.query import to_user
from resolvers.users import to_subscription
from schema.types import Subscription, UpdateProfileInput
from schema.user import User
from services import profile, subscription_sync


async def update_profile(info: strawberry.Info[Context, None], input: UpdateProfileInput) -> User:
    context = info.context
    sent = {
        "firstName": input.first_name,
        "lastName": input.last_name,
        "phone": input.phone,
    }
    changes = {field: value for field, value in sent.items() if value is not strawberry.UNSET}
    user = await profile.update_profile(await context.connection(), await context.user(), changes)
    context.runtime.worker.wake()
    return to_user(user)


async def sync_subscription(info: strawberry.Info[Context, None]) -> Subscription | None:
    context = info.context
    record = await subscription_sync.sync_for_user(
        await context.connection(),
        context.runtime.stripe,
        context.runtime.plans,
        await context.user(),
        rate_limit=context.settings.rate_limits.stripe,
    )
    return None if record is None else to_subscription(record)
