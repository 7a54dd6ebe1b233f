"""The schema: root types, limits, caches, and what production turns off."""

from __future__ import annotations

from functools import partial
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from resolvers import account, mutation, profile, query
from schema.export import DeleteAccountResult, Export
from schema.types import CheckoutSession, Plan, PortalSession, Subscription
from schema.user import User

MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 2000
CACHE_SIZE = 512


@strawberry.type
class Query:
    me: User = strawberry.field(resolver=query.me)
    plans: list[Plan] = strawberry.field(resolver=query.plans, description="Public: no token")
    export: Export = strawberry.field(
        resolver=account.export_account,
        description="Everything we hold about the caller; also GET /account/export",
    )


@strawberry.type
class Mutation:
    create_checkout_session: CheckoutSession = strawberry.field(
        resolver=mutation.create_checkout_session,
        description="Starts Stripe Checkout for a plan (PRO by default); follow the url",
    )
    create_portal_session: PortalSession = strawberry.field(
        resolver=mutation.create_portal_session,
        description="Opens the Stripe Billing Portal for the caller's customer",
    )
    delete_account: DeleteAccountResult = strawberry.field(
        resolver=account.delete_account,
        description="Cancels the caller's subscriptions at once, then deletes the account "
        "and all its data",
    )
    update_profile: User = strawberry.field(
        resolver=profile.update_profile,
        description="Saved at once; synced to the Stripe customer in the background",
    )
    sync_subscription: Subscription | None = strawberry.field(
        resolver=profile.sync_subscription,
        description="Re-reads the caller's subscription from Stripe now. The SPA calls it on "
        "returning from Checkout, so the new plan shows before the webhook arrives. "
        "Null without a customer.",
    )


class BillingSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Silent here: the edge logs unexpected errors once, with the request ID."""


def build_schema(*, production: bool) -> strawberry.Schema:
    # Factories, not instances: each request gets its own extension objects.
    extensions: list[Any] = [
        partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        partial(QueryDepthLimiter, max_depth=MAX_DEPTH),
        partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
        partial(ParserCache, maxsize=CACHE_SIZE),
        partial(ValidationCache, maxsize=CACHE_SIZE),
    ]
    if production:
        extensions.append(DisableIntrospection)
    return BillingSchema(
        query=Query,
        mutation=Mutation,
        extensions=extensions,
        config=StrawberryConfig(disable_field_suggestions=production),
    )
