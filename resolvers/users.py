"""The nested fields of `User`."""

from __future__ import annotations

import strawberry

from app.context import Context
from db.customers import CustomerRecord
from db.subscriptions import SubscriptionRecord
from db.usage import UsageRecordRow
from schema.types import Customer, Notification, Subscription, SubscriptionStatus, UsageRecord
from services import listings, subscriptions


def to_customer(record: CustomerRecord) -> Customer:
    return Customer(
        id=strawberry.ID(record.stripe_customer_id),
        email=record.email,
        name=record.name,
        phone=record.phone,
        created_at=record.created_at,
    )


def to_subscription(record: SubscriptionRecord) -> Subscription:
    return Subscription(
        plan_id=strawberry.ID(record.plan_id),
        status=SubscriptionStatus(record.status),
        stripe_subscription_id=record.stripe_subscription_id,
        price_id=record.price_id,
        cancel_at_period_end=record.cancel_at_period_end,
        cancel_at=record.cancel_at,
        current_period_end=record.current_period_end,
        trial_end=record.trial_end,
        updated_at=record.updated_at,
    )


def to_usage_record(record: UsageRecordRow) -> UsageRecord:
    return UsageRecord(
        id=strawberry.ID(str(record.id)),
        metric=record.metric,
        quantity=record.quantity,
        created_at=record.created_at,
    )


async def customer(info: strawberry.Info[Context, None], user_id: str) -> Customer | None:
    record = await info.context.loaders.customer.load(user_id)
    return None if record is None else to_customer(record)


async def subscription(info: strawberry.Info[Context, None], user_id: str) -> Subscription | None:
    records = await info.context.loaders.subscriptions.load(user_id)
    current = subscriptions.the_subscription(records)
    return None if current is None else to_subscription(current)


async def all_subscriptions(
    info: strawberry.Info[Context, None], user_id: str
) -> list[Subscription]:
    records = await info.context.loaders.subscriptions.load(user_id)
    return [to_subscription(r) for r in subscriptions.ordered(records)]


async def notifications(
    info: strawberry.Info[Context, None], user_id: str, first: int
) -> list[Notification]:
    records = await listings.notifications(info.context.runtime.pool, user_id, first)
    return [
        Notification(
            id=strawberry.ID(str(r.id)), kind=r.kind, message=r.message, created_at=r.created_at
        )
        for r in records
    ]


async def usage_records(
    info: strawberry.Info[Context, None], user_id: str, first: int
) -> list[UsageRecord]:
    records = await listings.usage_records(info.context.runtime.pool, user_id, first)
    return [to_usage_record(r) for r in records]
