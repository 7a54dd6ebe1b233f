"""Billing fields: Checkout, the Billing Portal, re-reading the subscription, and managing
it in the app (cancel, resume, change plan, preview a change)."""

from __future__ import annotations

import strawberry

from resolvers.context import Context
from schema.types import (
    CancelSubscriptionInput,
    ChangePlanInput,
    CheckoutSession,
    CreateCheckoutSessionInput,
    PlanChangePreview,
    PortalSession,
    Subscription,
    to_plan_change_preview,
    to_subscription,
)
from services import billing, plan_management
from services.plans import PRO_PLAN_ID


async def create_checkout_session(
    info: strawberry.Info[Context, None], input: CreateCheckoutSessionInput | None = None
) -> CheckoutSession:
    deps = info.context.deps
    session = await billing.create_checkout_session(
        deps.pool,
        deps.stripe,
        deps.plans,
        deps.single_flight,
        deps.app_url,
        info.context.user,
        str(input.plan_id) if input is not None else PRO_PLAN_ID,
        rate_limit=deps.limits.stripe,
    )
    assert session.url is not None
    return CheckoutSession(id=strawberry.ID(session.id), url=session.url)


async def create_portal_session(info: strawberry.Info[Context, None]) -> PortalSession:
    deps = info.context.deps
    url = await billing.create_portal_session(
        deps.pool,
        deps.stripe,
        deps.app_url,
        deps.portal_configuration_id,
        info.context.user,
        rate_limit=deps.limits.stripe,
    )
    return PortalSession(url=url)


async def sync_subscription(info: strawberry.Info[Context, None]) -> Subscription | None:
    deps = info.context.deps
    record = await billing.sync_subscription(
        deps.pool,
        deps.stripe,
        deps.plans,
        deps.single_flight,
        info.context.user,
        rate_limit=deps.limits.stripe,
    )
    return None if record is None else to_subscription(record)


async def cancel_subscription(
    info: strawberry.Info[Context, None], input: CancelSubscriptionInput | None = None
) -> Subscription:
    deps = info.context.deps
    record = await plan_management.cancel(
        deps.pool,
        deps.stripe,
        deps.plans,
        deps.single_flight,
        info.context.user,
        at_period_end=input is None or input.at_period_end,
        rate_limit=deps.limits.stripe,
    )
    return to_subscription(record)


async def resume_subscription(info: strawberry.Info[Context, None]) -> Subscription:
    deps = info.context.deps
    record = await plan_management.resume(
        deps.pool,
        deps.stripe,
        deps.plans,
        deps.single_flight,
        info.context.user,
        rate_limit=deps.limits.stripe,
    )
    return to_subscription(record)


async def change_plan(info: strawberry.Info[Context, None], input: ChangePlanInput) -> Subscription:
    deps = info.context.deps
    record = await plan_management.change_plan(
        deps.pool,
        deps.stripe,
        deps.plans,
        deps.single_flight,
        info.context.user,
        str(input.plan_id),
        proration_date=input.proration_date,
        rate_limit=deps.limits.stripe,
    )
    return to_subscription(record)


async def preview_plan_change(
    info: strawberry.Info[Context, None], plan_id: strawberry.ID
) -> PlanChangePreview:
    deps = info.context.deps
    preview = await plan_management.preview_plan_change(
        deps.pool,
        deps.stripe,
        deps.plans,
        info.context.user,
        str(plan_id),
        rate_limit=deps.limits.stripe,
    )
    return to_plan_change_preview(preview)
