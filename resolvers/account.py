"""The caller's whole account: `export` and `deleteAccount`."""

from __future__ import annotations

import strawberry

from app.context import Context
from resolvers.query import to_user
from resolvers.users import to_subscription, to_usage_record
from schema.export import DeleteAccountInput, DeleteAccountResult, Export
from services import deletion, export


async def export_account(info: strawberry.Info[Context, None]) -> Export:
    context = info.context
    data = await export.our_data(
        context.runtime.pool, context.user, rate_limit=context.settings.rate_limits.export
    )
    # `userProfile { customer subscription subscriptions }` answer from the same snapshot.
    context.loaders.customer.prime(data.user.id, data.customer)
    context.loaders.subscriptions.prime(data.user.id, data.subscription_rows)
    return Export(
        user_profile=to_user(data.user),
        subscription=None if data.subscription is None else to_subscription(data.subscription),
        subscriptions=[to_subscription(r) for r in data.subscriptions],
        usage_records=[to_usage_record(r) for r in data.usage_records],
        export_timestamp=data.exported_at,
        export_version=data.version,
        stripe_customer_id=None if data.customer is None else data.customer.stripe_customer_id,
    )


async def delete_account(
    info: strawberry.Info[Context, None], input: DeleteAccountInput | None = None
) -> DeleteAccountResult:
    context = info.context
    runtime = context.runtime
    message = await deletion.delete_account(
        runtime.pool,
        runtime.stripe,
        runtime.single_flight,
        context.user,
        delete_from_stripe=input is not None and input.delete_from_stripe,
        rate_limit=context.settings.rate_limits.deletion,
    )
    return DeleteAccountResult(success=True, message=message)
