"""The signed-in user, and its mapper (`to_user`); nested fields delegate to
`resolvers.users`."""

from __future__ import annotations

import strawberry

from db.users import UserRecord
from resolvers import users
from resolvers.context import Context
from schema.costs import SUBSCRIPTIONS
from schema.types import Customer, Invoice, Notification, Subscription, UsageRecord


@strawberry.type
class User:
    id: strawberry.ID
    email: str | None
    email_verified: bool
    first_name: str | None
    last_name: str | None
    phone: str | None

    @strawberry.field(description="Null while the user has no Stripe customer")
    async def customer(self, info: strawberry.Info[Context, None]) -> Customer | None:
        return await users.customer(info, str(self.id))

    @strawberry.field(
        description="The one that matters (see `subscriptions`), else the free plan; null "
        "until the user first gets a Stripe customer; kept (CANCELED) after it is deleted"
    )
    async def subscription(self, info: strawberry.Info[Context, None]) -> Subscription | None:
        return await users.subscription(info, str(self.id))

    @strawberry.field(
        description="Every Stripe subscription of the user's customer: entitled (active, "
        "trialing, past due) first, then other live ones, then ended ones; newest first "
        "within each. `subscription` is the first of them, else the free plan",
        metadata=SUBSCRIPTIONS,
    )
    async def subscriptions(self, info: strawberry.Info[Context, None]) -> list[Subscription]:
        return await users.all_subscriptions(info, str(self.id))

    @strawberry.field(
        description="Newest first, from our copy of Stripe's (served also while Stripe is "
        "down); `first` 1 to 100"
    )
    async def invoices(
        self, info: strawberry.Info[Context, None], first: int = 10
    ) -> list[Invoice]:
        return await users.invoices(info, str(self.id), first)

    @strawberry.field(
        description="The feature keys the user may use now: the free plan's, those of the "
        "plan of an entitled subscription (active, trialing or past due), and the "
        "customer's active Stripe Entitlements; sorted. A backend checks them by calling "
        "`me { entitlements }` with the user's token"
    )
    async def entitlements(self, info: strawberry.Info[Context, None]) -> list[str]:
        return await users.entitlements(info, str(self.id))

    @strawberry.field(description="Newest first")
    async def notifications(
        self, info: strawberry.Info[Context, None], first: int = 20
    ) -> list[Notification]:
        return await users.notifications(info, str(self.id), first)

    @strawberry.field(description="Newest first")
    async def usage_records(
        self, info: strawberry.Info[Context, None], first: int = 50
    ) -> list[UsageRecord]:
        return await users.usage_records(info, str(self.id), first)


def to_user(record: UserRecord) -> User:
    return User(
        id=strawberry.ID(record.id),
        email=record.email,
        email_verified=record.email_verified,
        first_name=record.first_name,
        last_name=record.last_name,
        phone=record.phone,
    )
