"""The app factory. The lifespan owns the pool, the Stripe gateway and the worker; requests
borrow them."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import ASGIApp

from app.auth import Authenticator, JwksCache, development_secret
from app.browser.graphiql import GraphiQL
from app.edge import Edge
from app.export_route import Download
from app.graphql.endpoint import GraphQLEndpoint
from app.graphql.schema import executable_schema
from app.health import healthz, readyz
from app.metrics_route import metrics_endpoint
from app.middleware import LimitBody
from app.process.memory import trim_now, trim_when_idle
from app.runtime import Runtime
from app.settings import ConfigError, Settings
from app.webhooks import MAX_BODY_BYTES as WEBHOOK_MAX_BODY_BYTES
from app.webhooks import stripe_webhook
from app.worker import Worker, WorkerSettings
from db.connection import Database, Pool
from db.wakeups import listen
from schema.root import MAX_TOKENS, build_schema, validation_rules
from services.metrics import Metrics
from services.plans import PlanCatalog, PlansFileError
from services.single_flight import SingleFlight
from services.stripe_budget import PgStripeBudget
from services.stripe_gateway import StripeGateway

log = logging.getLogger(__name__)

GC_YOUNG_THRESHOLD = 20_000


def create_app(settings: Settings | None = None) -> Edge:
    """Build the ASGI app; raises `ConfigError` naming what is wrong with the configuration."""
    settings = settings or Settings()
    settings.check()
    database_url = settings.database_url
    if database_url is None:
        raise ConfigError(
            "DATABASE_URL is not set; `make run` (python -m app serve) starts an embedded "
            "PostgreSQL when it is unset"
        )
    try:
        plans = PlanCatalog.load(
            pro_price_id=settings.stripe_price_pro, plans_file=settings.plans_file
        )
    except PlansFileError as exc:
        raise ConfigError(str(exc)) from exc
    hs_secret = _hs_secret(settings)

    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Runtime]]:
        pool = Pool(
            Database(
                database_url,
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
            ),
            acquire_timeout=settings.db_acquire_timeout_seconds,
            max_size=settings.db_pool_max_size,
        )
        await pool.connect()
        # Only JWKS fetching needs an HTTP client of ours (and its TLS context, 2 to 3 MB).
        http = jwks = None
        if settings.auth_jwks_url:
            http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
            jwks = JwksCache(
                settings.auth_jwks_url,
                http,
                min_refresh_interval=settings.auth_jwks_cooldown_seconds,
            )
        stripe = stripe_gateway(settings, metrics, pool)
        worker = Worker(
            pool,
            stripe,
            plans,
            WorkerSettings(
                poll_interval=settings.worker_poll_seconds,
                concurrency=settings.worker_concurrency,
            ),
            metrics=metrics,
        )
        runtime = Runtime(
            settings=settings,
            pool=pool,
            plans=plans,
            authenticator=Authenticator(
                hs_secret=hs_secret,
                jwks=jwks,
                issuer=settings.auth_issuer,
                audience=settings.auth_audience,
            ),
            stripe=stripe,
            single_flight=SingleFlight(
                pool,
                lease_seconds=4 * stripe.deadline,
                wait_seconds=stripe.deadline,
            ),
            worker=worker,
            metrics=metrics,
            export_slots=asyncio.Semaphore(settings.export_concurrency),
            limits=settings.rate_limits,
            app_url=settings.app_url,
            portal_configuration_id=settings.stripe_portal_configuration_id,
        )
        listener = None
        if settings.run_worker:
            worker.start()
            listener = asyncio.create_task(listen(database_url, worker.wake), name="listen")
        # Start-up objects live as long as the process: keep the collector off them, and
        # collect the young generation less often (a request allocates many small objects).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
        trim_now()
        trimmer = asyncio.create_task(trim_when_idle(lambda: edge.requests_seen))
        try:
            yield {"runtime": runtime}
        finally:
            trimmer.cancel()
            if listener is not None:
                listener.cancel()
                with suppress(asyncio.CancelledError):
                    await listener
            await worker.stop()
            await runtime.stripe.aclose()
            if http is not None:
                await http.aclose()
            await pool.disconnect()

    graphql = GraphQLEndpoint(
        executable_schema(build_schema()),
        validation_rules(production=settings.is_production),
        max_tokens=MAX_TOKENS,
        hide_suggestions=settings.is_production,
    )
    graphql_endpoint: ASGIApp = graphql  # it bounds its own body (64 KiB)
    graphiql_routes: list[BaseRoute] = []
    if not settings.is_production:  # a browser's GET /graphql: app/graphiql.py; else 404
        ide = GraphiQL()
        ide.log_mode()
        graphql_endpoint = ide.wrap(graphql_endpoint)
        graphiql_routes = ide.routes()
    app = Starlette(
        routes=[
            *graphiql_routes,
            Route(
                "/webhooks/stripe",
                LimitBody(request_response(stripe_webhook), WEBHOOK_MAX_BODY_BYTES),
                methods=["POST"],
            ),
            Route("/account/export", Download(graphql).handle, methods=["GET"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
        ],
        lifespan=lifespan,
    )
    app.state.graphql = graphql  # its caches' byte totals, for operators and tests
    edge = Edge(
        app,
        routes={"/graphql": graphql_endpoint},
        metrics=metrics,
        access_log=settings.access_log,
        cors_origins=settings.allowed_origins,
    )
    return edge


def stripe_gateway(
    settings: Settings, metrics: Metrics | None = None, pool: Pool | None = None
) -> StripeGateway:
    """The gateway; with a pool, its calls keep to the budget every process shares."""
    key = settings.stripe_secret_key
    deadline = settings.stripe_timeout_seconds * (settings.stripe_max_network_retries + 1)
    rate = settings.stripe_max_requests_per_second
    return StripeGateway(
        key.get_secret_value() if key else None,
        api_base=settings.stripe_api_base,
        timeout_seconds=settings.stripe_timeout_seconds,
        max_network_retries=settings.stripe_max_network_retries,
        metrics=metrics,
        budget=PgStripeBudget(pool, rate=rate, max_wait=deadline) if pool and rate else None,
    )


def _hs_secret(settings: Settings) -> str | None:
    if settings.auth_jwt_secret is not None:
        return settings.auth_jwt_secret.get_secret_value()
    if settings.is_production or settings.auth_jwks_url is not None:
        return None
    log.info("no AUTH_JWT_SECRET: accepting development tokens signed with .data/dev-jwt-secret")
    return development_secret(settings.data_dir)
