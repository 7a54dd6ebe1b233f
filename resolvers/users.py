"""The nested fields of `User`."""

from __future__ import annotations

import strawberry

from resolvers.context import Context
from schema.types import (
    Customer,
    Invoice,
    Notification,
    Subscription,
    UsageRecord,
    to_customer,
    to_invoice,
    to_notification,
    to_subscription,
    to_usage_record,
)
from services import entitlements as features
from services import invoices as invoice_copies
from services import listings, subscriptions


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
    records = await listings.notifications(info.context.deps.pool, user_id, first)
    return [to_notification(r) for r in records]


async def usage_records(
    info: strawberry.Info[Context, None], user_id: str, first: int
) -> list[UsageRecord]:
    records = await listings.usage_records(info.context.deps.pool, user_id, first)
    return [to_usage_record(r) for r in records]


async def invoices(info: strawberry.Info[Context, None], user_id: str, first: int) -> list[Invoice]:
    records = await invoice_copies.newest(info.context.deps.pool, user_id, first)
    return [to_invoice(r) for r in records]


async def entitlements(info: strawberry.Info[Context, None], user_id: str) -> list[str]:
    loaders = info.context.loaders
    rows = await loaders.subscriptions.load(user_id)
    from_stripe = await loaders.stripe_entitlements.load(user_id)
    return features.features(info.context.deps.plans, rows, from_stripe)
