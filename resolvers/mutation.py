"""Root mutation fields of checkout and the portal."""

from __future__ import annotations

import strawberry

from app.context import Context
from schema.types import CheckoutSession, CreateCheckoutSessionInput, PortalSession
from services import billing
from services.plans import PRO_PLAN_ID


async def create_checkout_session(
    info: strawberry.Info[Context, None], input: CreateCheckoutSessionInput | None = None
) -> CheckoutSession:
    context = info.context
    runtime = context.runtime
    plan_id = str(input.plan_id) if input is not None else PRO_PLAN_ID
    session = await billing.create_checkout_session(
        runtime.pool,
        runtime.stripe,
        runtime.plans,
        runtime.single_flight,
        context.settings.app_url,
        context.user,
        plan_id,
        rate_limit=context.settings.rate_limits.stripe,
    )
    assert session.url is not None
    return CheckoutSession(id=strawberry.ID(session.id), url=session.url)


async def create_portal_session(info: strawberry.Info[Context, None]) -> PortalSession:
    context = info.context
    url = await billing.create_portal_session(
        context.runtime.pool,
        context.runtime.stripe,
        context.settings.app_url,
        context.settings.stripe_portal_configuration_id,
        context.user,
        rate_limit=context.settings.rate_limits.stripe,
    )
    return PortalSession(url=url)
