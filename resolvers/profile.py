"""The profile mutation."""

from __future__ import annotations

import strawberry

from resolvers.context import Context
from schema.types import UpdateProfileInput
from schema.user import User, to_user
from services import profile


async def update_profile(info: strawberry.Info[Context, None], input: UpdateProfileInput) -> User:
    sent = {
        "firstName": input.first_name,
        "lastName": input.last_name,
        "phone": input.phone,
    }
    changes = {field: value for field, value in sent.items() if value is not strawberry.UNSET}
    user = await profile.update_profile(info.context.deps.pool, info.context.user, changes)
    return to_user(user)
