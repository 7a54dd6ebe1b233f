"""What each GraphQL request carries (`Context`): the process's dependencies and the caller.

The caller is resolved before any resolver runs (by the engine, `app.graphql.endpoint`), so
resolvers read `context.user` and never climb back into the HTTP layer. A request holds no
database connection of its own: each service call borrows one for its unit of work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from strawberry.dataloader import DataLoader

from services import entitlements, listings, subscriptions
from services.errors import busy

if TYPE_CHECKING:
    from db.connection import Pool
    from db.customers import CustomerRecord
    from db.subscriptions import SubscriptionRecord
    from db.users import UserRecord
    from services.plans import PlanCatalog
    from services.rate_limits import RateLimits
    from services.single_flight import SingleFlight
    from services.stripe_gateway import StripeGateway


class Dependencies(Protocol):
    """What resolvers use of the process (the lifespan's `app.runtime.Runtime` is one)."""

    @property
    def pool(self) -> Pool: ...

    @property
    def stripe(self) -> StripeGateway: ...

    @property
    def plans(self) -> PlanCatalog: ...

    @property
    def single_flight(self) -> SingleFlight: ...

    @property
    def limits(self) -> RateLimits: ...

    @property
    def app_url(self) -> str:
        """The SPA's origin: Checkout's and the portal's return addresses are built on it."""

    @property
    def portal_configuration_id(self) -> str | None: ...


class Loaders:
    """Fresh per request, so batching never leaks one user's rows into another's request."""

    def __init__(self, pool: Pool) -> None:
        async def customers(user_ids: list[str]) -> list[CustomerRecord | None]:
            return await listings.customers(pool, user_ids)

        async def subscriptions_of(user_ids: list[str]) -> list[list[SubscriptionRecord]]:
            return await subscriptions.of_users(pool, user_ids)

        async def entitlements_of(user_ids: list[str]) -> list[list[str]]:
            return await entitlements.from_stripe(pool, user_ids)

        self.customer: DataLoader[str, CustomerRecord | None] = DataLoader(customers)
        self.subscriptions: DataLoader[str, list[SubscriptionRecord]] = DataLoader(subscriptions_of)
        self.stripe_entitlements: DataLoader[str, list[str]] = DataLoader(entitlements_of)


class Context:
    """One GraphQL request: its dependencies (`deps`) and its caller (`user`).

    Reading `user` raises what resolving the caller raised (`UNAUTHENTICATED` for a missing
    or bad token, `RATE_LIMITED`, busy, or an unexpected failure, masked by the engine), so
    a public field of the same operation still answers.
    """

    def __init__(
        self,
        deps: Dependencies,
        *,
        caller: UserRecord | None = None,
        refusal: Exception | None = None,
    ) -> None:
        self.deps = deps
        self._caller = caller
        self._refusal = refusal
        self._loaders: Loaders | None = None

    @property
    def loaders(self) -> Loaders:
        """Made on first use: most requests (`me`, `plans`) never batch anything."""
        if self._loaders is None:
            self._loaders = Loaders(self.deps.pool)
        return self._loaders

    @property
    def user(self) -> UserRecord:
        if self._caller is None:
            raise self._refusal or busy()
        return self._caller

    def close(self) -> None:
        """Drop what the request made: its loaders' caches hold rows."""
        self._loaders = None
