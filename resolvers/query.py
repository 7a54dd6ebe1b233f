"""Root query fields."""

from __future__ import annotations

import strawberry

from app.context import Context
from db.users import UserRecord
from schema.types import Plan
from schema.user import User


def to_user(record: UserRecord) -> User:
    return User(
        id=strawberry.ID(record.id),
        email=record.email,
        email_verified=record.email_verified,
        first_name=record.first_name,
        last_name=record.last_name,
        phone=record.phone,
    )


def me(info: strawberry.Info[Context, None]) -> User:
    return to_user(info.context.user)


def plans(info: strawberry.Info[Context, None]) -> list[Plan]:
    return [
        Plan(
            id=strawberry.ID(plan.id),
            name=plan.name,
            price_id=plan.price_id,
            amount=plan.amount,
            currency=plan.currency,
            interval=plan.interval,
        )
        for plan in info.context.runtime.plans.all
    ]
