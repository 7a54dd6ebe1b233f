"""The schema: root types, and the limits every document is validated against.

Fields that call Stripe while they run carry `metadata=STRIPE_BACKED`: the query cost weighs
them and counts them (`app.graphql.cost`, declared with `schema.costs`).
"""

from __future__ import annotations

import strawberry
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter

from resolvers import account, billing, profile, query
from schema.costs import STRIPE_BACKED
from schema.export import DeleteAccountResult, Export
from schema.types import CheckoutSession, Plan, PlanChangePreview, PortalSession, Subscription
from schema.user import User

MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 2000


@strawberry.type
class Query:
    me: User = strawberry.field(resolver=query.me)
    plans: list[Plan] = strawberry.field(resolver=query.plans, description="Public: no token")
    export: Export = strawberry.field(
        resolver=account.export_account,
        description="Everything we hold about the caller; also GET /account/export",
    )
    preview_plan_change: PlanChangePreview = strawberry.field(
        resolver=billing.preview_plan_change,
        description="What changing the live subscription to a plan would charge now (the "
        "prorations, invoiced at once by changePlan), from Stripe's invoice preview; "
        "changes nothing",
        metadata=STRIPE_BACKED,
    )


@strawberry.type
class Mutation:
    create_checkout_session: CheckoutSession = strawberry.field(
        resolver=billing.create_checkout_session,
        description="Starts Stripe Checkout for a plan (PRO by default); follow the url",
        metadata=STRIPE_BACKED,
    )
    create_portal_session: PortalSession = strawberry.field(
        resolver=billing.create_portal_session,
        description="Opens the Stripe Billing Portal for the caller's customer",
        metadata=STRIPE_BACKED,
    )
    delete_account: DeleteAccountResult = strawberry.field(
        resolver=account.delete_account,
        description="Cancels the caller's subscriptions at once, then deletes the account "
        "and all its data",
        metadata=STRIPE_BACKED,
    )
    update_profile: User = strawberry.field(
        resolver=profile.update_profile,
        description="Saved at once; synced to the Stripe customer in the background",
    )
    cancel_subscription: Subscription = strawberry.field(
        resolver=billing.cancel_subscription,
        description="Cancels the live subscription at the end of its period (the default) or "
        "at once; returns it as Stripe now holds it",
        metadata=STRIPE_BACKED,
    )
    resume_subscription: Subscription = strawberry.field(
        resolver=billing.resume_subscription,
        description="Undoes a scheduled cancellation (however it was scheduled: here, in "
        "the Billing Portal, or in the Dashboard)",
        metadata=STRIPE_BACKED,
    )
    change_plan: Subscription = strawberry.field(
        resolver=billing.change_plan,
        description="Moves the live subscription to another plan's price; the prorations "
        "are invoiced and paid at once, or nothing changes (a declined card says so)",
        metadata=STRIPE_BACKED,
    )
    sync_subscription: Subscription | None = strawberry.field(
        resolver=billing.sync_subscription,
        description="Re-reads the caller's subscription from Stripe now. The SPA calls it on "
        "returning from Checkout, so the new plan shows before the webhook arrives. "
        "Null without a customer.",
        metadata=STRIPE_BACKED,
    )


def build_schema() -> strawberry.Schema:
    return strawberry.Schema(query=Query, mutation=Mutation)


def validation_rules(*, production: bool) -> list[type[ASTValidationRule]]:
    """The limits, on top of the specification's rules; production also refuses introspection.

    Built once per app: validation results are cached by query text, limits included.
    """
    rules = [
        *QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
        *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
    ]
    if production:
        rules.append(NoSchemaIntrospectionCustomRule)
    return rules
