"""Billing mutations: Checkout, the Billing Portal, re-reading the subscription."""

from __future__ import annotations

import strawberry

from resolvers.context import Context
from schema.types import (
    CheckoutSession,
    CreateCheckoutSessionInput,
    PortalSession,
    Subscription,
    to_subscription,
)
from services import billing
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
