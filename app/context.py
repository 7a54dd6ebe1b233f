"""What the lifespan owns (`Runtime`) and what each GraphQL request carries (`Context`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from strawberry.dataloader import DataLoader

from app.logging import user_id_var
from db.connection import PoolExhausted
from services import identity, listings, subscriptions
from services.errors import busy

if TYPE_CHECKING:
    from app.auth import Authenticator
    from app.settings import Settings
    from app.worker import Worker
    from db.connection import Pool
    from db.customers import CustomerRecord
    from db.subscriptions import SubscriptionRecord
    from db.users import UserRecord
    from services.metrics import Metrics
    from services.plans import PlanCatalog
    from services.single_flight import SingleFlight
    from services.stripe_gateway import StripeGateway


@dataclass(frozen=True, slots=True)
class Runtime:
    """Process-wide dependencies, created in the lifespan and handed to every request."""

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


class Loaders:
    """Fresh per request, so batching never leaks one user's rows into another's request."""

    def __init__(self, pool: Pool) -> None:
        async def customers(user_ids: list[str]) -> list[CustomerRecord | None]:
            return await listings.customers(pool, user_ids)

        async def subscriptions_of(user_ids: list[str]) -> list[list[SubscriptionRecord]]:
            return await subscriptions.of_users(pool, user_ids)

        self.customer: DataLoader[str, CustomerRecord | None] = DataLoader(customers)
        self.subscriptions: DataLoader[str, list[SubscriptionRecord]] = DataLoader(subscriptions_of)


class Context:
    """One GraphQL request: its dependencies and its caller, resolved before execution.

    `user` is the caller's row; reading it raises what resolving the caller raised
    (`UNAUTHENTICATED` for a missing or bad token, `RATE_LIMITED`, busy, or an unexpected
    failure, masked at the edge), so a public field of the same operation still answers.
    """

    def __init__(
        self,
        runtime: Runtime,
        request: Request,
        *,
        caller: UserRecord | None = None,
        refusal: Exception | None = None,
    ) -> None:
        self.runtime = runtime
        self.request = request
        self._caller = caller
        self._refusal = refusal
        self._loaders: Loaders | None = None

    @property
    def loaders(self) -> Loaders:
        """Made on first use: most requests (`me`, `plans`) never batch anything."""
        if self._loaders is None:
            self._loaders = Loaders(self.runtime.pool)
        return self._loaders

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def user(self) -> UserRecord:
        if self._caller is None:
            raise self._refusal or busy()
        return self._caller

    def close(self) -> None:
        """Drop what the request made (its loaders refer back to nothing, but their caches
        hold rows)."""
        self._loaders = None


async def resolve_caller(runtime: Runtime, authorization: str | None) -> UserRecord:
    """The bearer's user row, this request counted against their request limit.
    Raises `Unauthenticated`, `RateLimited`, or `ServiceBusy` when no connection is free."""
    who = await runtime.authenticator.identify(authorization)
    try:
        user = await identity.caller(runtime.pool, who, runtime.settings.rate_limits.requests)
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
