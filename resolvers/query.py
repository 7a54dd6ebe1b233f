"""Root query fields."""

from __future__ import annotations

import strawberry

from resolvers.context import Context
from schema.types import Plan, to_plan
from schema.user import User, to_user


def me(info: strawberry.Info[Context, None]) -> User:
    return to_user(info.context.user)


def plans(info: strawberry.Info[Context, None]) -> list[Plan]:
    return [to_plan(plan) for plan in info.context.deps.plans.all]
