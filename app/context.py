"""What the lifespan owns (`Runtime`) and what each GraphQL request carries (`Context`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from strawberry.dataloader import DataLoader

from app.logging import user_id_var
from db.connection import Connection, Database, PoolExhausted, acquire, release
from services import account
from services.errors import ServiceBusy
from services.users import Identity, current_user, known_user

if TYPE_CHECKING:
    from app.auth import Authenticator
    from app.settings import Settings
    from app.worker import Worker
    from db.customers import CustomerRecord
    from db.subscriptions import SubscriptionRecord
    from db.users import UserRecord
    from services.metrics import Metrics
    from services.plans import PlanCatalog
    from services.stripe_gateway import StripeGateway


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Runtime:
    """Process-wide dependencies, created in the lifespan and handed to every request."""

    settings: Settings
    database: Database
    plans: PlanCatalog
    authenticator: Authenticator
    stripe: StripeGateway
    worker: Worker
    metrics: Metrics
    # Exports being built in this process (GraphQL and download alike): each holds its
    # 1,000 rows several times over until answered, so their number bounds the memory.
    export_slots: asyncio.Semaphore


class Loaders:
    """Fresh per request, so batching never leaks one user's rows into another's request."""

    def __init__(self, context: Context) -> None:
        async def customers(user_ids: list[str]) -> list[CustomerRecord | None]:
            return await account.customers(await context.connection(), user_ids)

        async def subscriptions(user_ids: list[str]) -> list[SubscriptionRecord | None]:
            return await account.subscriptions(await context.connection(), user_ids)

        self.customer: DataLoader[str, CustomerRecord | None] = DataLoader(customers)
        self.subscription: DataLoader[str, SubscriptionRecord | None] = DataLoader(subscriptions)


class Context:
    """One GraphQL request: its dependencies, its one pool connection, its caller."""

    def __init__(self, runtime: Runtime, request: Request) -> None:
        self.runtime = runtime
        self.request = request
        self._loaders: Loaders | None = None
        self._connection: Connection | None = None
        self._user: UserRecord | None = None
        self._lock = asyncio.Lock()
        self._user_lock = asyncio.Lock()

    @property
    def loaders(self) -> Loaders:
        """Made on first use: most requests (`me`, `plans`, webhooks) never batch anything."""
        if self._loaders is None:
            self._loaders = Loaders(self)
        return self._loaders

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    async def connection(self) -> Connection:
        """The request's pool connection, taken on first use (`plans` and `me` take none)."""
        if self._connection is None:
            async with self._lock:
                if self._connection is None:
                    try:
                        self._connection = await acquire(
                            self.runtime.database, self.settings.db_acquire_timeout_seconds
                        )
                    except PoolExhausted as exc:
                        raise busy_error() from exc
        return self._connection

    async def user(self) -> UserRecord:
        """The caller, provisioned on first sight; raises `Unauthenticated` for a bad token."""
        if self._user is None:
            async with self._user_lock:
                if self._user is None:
                    identity = await self.runtime.authenticator.identify(
                        self.request.headers.get("authorization")
                    )
                    user = None
                    # Under the connection lock: a request never holds two pool connections.
                    async with self._lock:
                        if self._connection is None:
                            user = await self._known_user(identity)
                    if user is None:
                        user = await current_user(await self.connection(), identity)
                    self._user = user
                    user_id_var.set(self._user.id)
        return self._user

    async def _known_user(self, identity: Identity) -> UserRecord | None:
        within = self.settings.db_acquire_timeout_seconds
        try:
            return await known_user(self.runtime.database, identity, within)
        except PoolExhausted as exc:
            raise busy_error() from exc

    async def close(self) -> None:
        """Give the connection back; a failure to do so must not fail the finished request
        (asyncpg terminates and replaces a connection it cannot reset)."""
        self._loaders = None  # their loaders refer back to this context: no cycle to collect
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                await release(connection)
            except Exception:
                log.warning("could not release a database connection cleanly", exc_info=True)


@asynccontextmanager
async def export_slot(runtime: Runtime) -> AsyncIterator[None]:
    """One of the process's export slots, waited for as long as a pool connection would be:
    a queue that does not move (Stripe slow inside an export) answers busy, not never."""
    try:
        async with asyncio.timeout(runtime.settings.db_acquire_timeout_seconds):
            await runtime.export_slots.acquire()
    except TimeoutError as exc:
        raise busy_error() from exc
    try:
        yield
    finally:
        runtime.export_slots.release()


def busy_error() -> ServiceBusy:
    return ServiceBusy(
        "The service is busy right now; please try again in a moment.", retryable=True
    )
