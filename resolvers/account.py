"""The caller's whole account: `export` and `deleteAccount`."""

from __future__ import annotations

import strawberry

from resolvers.context import Context
from schema.export import DeleteAccountInput, DeleteAccountResult, Export
from schema.types import to_invoice, to_subscription, to_usage_record
from schema.user import to_user
from services import deletion, export


async def export_account(info: strawberry.Info[Context, None]) -> Export:
    context = info.context
    data = await export.snapshot(
        context.deps.pool, context.user, rate_limit=context.deps.limits.export
    )
    # `userProfile { customer subscription subscriptions }` answer from the same snapshot.
    context.loaders.customer.prime(data.user.id, data.customer)
    context.loaders.subscriptions.prime(data.user.id, data.subscription_rows)
    return Export(
        user_profile=to_user(data.user),
        subscription=None if data.subscription is None else to_subscription(data.subscription),
        subscriptions=[to_subscription(r) for r in data.subscriptions],
        usage_records=[to_usage_record(r) for r in data.usage_records],
        invoices=[to_invoice(r) for r in data.invoices],
        export_timestamp=data.exported_at,
        export_version=data.version,
        stripe_customer_id=None if data.customer is None else data.customer.stripe_customer_id,
    )


async def delete_account(
    info: strawberry.Info[Context, None], input: DeleteAccountInput | None = None
) -> DeleteAccountResult:
    deps = info.context.deps
    message = await deletion.delete_account(
        deps.pool,
        deps.stripe,
        deps.single_flight,
        info.context.user,
        delete_from_stripe=input is not None and input.delete_from_stripe,
        rate_limit=deps.limits.deletion,
    )
    return DeleteAccountResult(success=True, message=message)
