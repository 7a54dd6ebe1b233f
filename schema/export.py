"""The data export and account deletion types."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from resolvers import export
from resolvers.context import Context
from schema.costs import STRIPE_BACKED, SUBSCRIPTIONS, fixed_size
from schema.types import Invoice, Subscription, UsageRecord
from schema.user import User
from services.export import MAX_USAGE_RECORDS


@strawberry.type(description="Everything we hold about the caller, for download (GDPR)")
class Export:
    user_profile: User
    subscription: Subscription | None = strawberry.field(
        description="The one that matters (see `User.subscriptions`)"
    )
    subscriptions: list[Subscription] = strawberry.field(
        description="Every Stripe subscription, by the rule of `User.subscriptions`",
        metadata=SUBSCRIPTIONS,
    )
    usage_records: list[UsageRecord] = strawberry.field(
        description="Newest first, at most 1000", metadata=fixed_size(MAX_USAGE_RECORDS)
    )
    invoices: list[Invoice] = strawberry.field(
        description="Every invoice, newest first",
        # The cost counts two years of monthly invoices: an estimate, not a cap.
        metadata=fixed_size(24),
    )
    export_timestamp: datetime = strawberry.field(
        description="The instant our rows were read at, in one consistent snapshot"
    )
    export_version: str
    stripe_customer_id: strawberry.Private[str | None]

    @strawberry.field(
        description="The customer as Stripe holds it now, null without one; "
        "errors alone when Stripe cannot be asked",
        metadata=STRIPE_BACKED,
    )
    async def stripe_customer(self, info: strawberry.Info[Context, None]) -> JSON | None:
        return await export.stripe_customer(info, self.stripe_customer_id)


@strawberry.input
class DeleteAccountInput:
    delete_from_stripe: bool = strawberry.field(
        default=False,
        description="Also delete the Stripe customer; subscriptions are canceled either way",
    )


@strawberry.type
class DeleteAccountResult:
    success: bool
    message: str
