"""What the lifespan owns (`Runtime`), and what every authenticated request does first:
resolve its caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from db.connection import PoolExhausted
from services import identity
from services.errors import busy
from services.log_context import user_id_var

if TYPE_CHECKING:
    from app.auth import Authenticator
    from app.settings import Settings
    from app.worker import Worker
    from db.connection import Pool
    from db.users import UserRecord
    from services.metrics import Metrics
    from services.plans import PlanCatalog
    from services.rate_limits import RateLimits
    from services.single_flight import SingleFlight
    from services.stripe_gateway import StripeGateway


@dataclass(frozen=True, slots=True)
class Runtime:
    """Process-wide dependencies, created in the lifespan and handed to every request (it is
    the resolvers' `resolvers.context.Dependencies`)."""

    settings: Settings
    pool: Pool
    plans: PlanCatalog
    authenticator: Authenticator
    stripe: StripeGateway
    single_flight: SingleFlight
    worker: Worker
    metrics: Metrics
    # Exports being built in this process (GraphQL and download alike): each holds its
    # 1,000 rows several times over until answered, so their number bounds the memory.
    export_slots: asyncio.Semaphore
    # From the settings, once: what resolvers read on every request.
    limits: RateLimits
    app_url: str
    portal_configuration_id: str | None


async def resolve_caller(runtime: Runtime, authorization: str | None) -> UserRecord:
    """The bearer's user row, this request counted against their request limit.
    Raises `Unauthenticated`, `RateLimited`, or `ServiceBusy` when no connection is free."""
    who = await runtime.authenticator.identify(authorization)
    try:
        user = await identity.caller(runtime.pool, who, runtime.limits.requests)
    except PoolExhausted as exc:
        raise busy() from exc
    user_id_var.set(user.id)
    return user


@asynccontextmanager
async def export_slot(runtime: Runtime) -> AsyncIterator[None]:
    """One of the process's export slots, waited for as long as a pool connection would be:
    a queue that does not move (Stripe slow inside an export) answers busy, not never."""
    try:
        async with asyncio.timeout(runtime.settings.db_acquire_timeout_seconds):
            await runtime.export_slots.acquire()
    except TimeoutError as exc:
        raise busy() from exc
    try:
        yield
    finally:
        runtime.export_slots.release()
