"""`python -m app <command>`: serve, migrate, mint a development token, export the schema."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from app import logging as log_setup
from app.settings import ConfigError, Settings
from db.connection import Database, Pool
from services.plans import PlanCatalog

if TYPE_CHECKING:
    from services.stripe_gateway import StripeGateway


def _database_url(settings: Settings) -> str:
    """`DATABASE_URL`, or an embedded PostgreSQL whose data survives under `.data/`."""
    if settings.database_url:
        return settings.database_url
    from db import embedded

    server = embedded.start(settings.data_dir / "postgres")
    print(f"Embedded PostgreSQL running, data in {settings.data_dir / 'postgres'}", flush=True)
    return str(server.get_uri())


def serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.process.serving import prepare_serving
    from app.process.slow_clients import HTTP_PROTOCOL

    settings.check()
    log_setup.configure(json_format=settings.json_logs)
    # Here, so that worker processes inherit the raised limit; each worker does it again.
    prepare_serving(settings)
    url = _database_url(settings)
    # In a child process, so the server never loads Alembic and SQLAlchemy's engine.
    subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        env={**os.environ, "DATABASE_URL": url},
        check=True,
    )
    settings = settings.model_copy(update={"database_url": url})
    workers = args.workers or settings.web_concurrency
    # One worker is served in this process; several are separate processes, each building
    # its own app (pool, worker loop, logging) through the `production_app` factory.
    if workers == 1:
        from app.main import create_app

        app: Any = create_app(settings)
    else:
        app = "app.process.serving:production_app"
    os.environ["DATABASE_URL"] = url
    base = f"http://{settings.host}:{settings.port}"
    print(f"Serving on {base}", flush=True)
    if not settings.is_production:
        print(f"GraphiQL:  {base}/graphql", flush=True)
        print(
            "Token:     .venv/bin/python -m app token --sub dev-user --email dev@example.com\n"
            '           then set the header {"Authorization": "Bearer <token>"} in GraphiQL',
            flush=True,
        )
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete; a clean shutdown
    # should end with status 0 for supervisors.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        app,
        factory=workers > 1,
        workers=workers,
        host=settings.host,
        port=settings.port,
        # uvicorn's httptools protocol, plus the timeout that drops slow clients; see the
        # README ("Slow clients") for why no limit_concurrency and the default backlog.
        http=HTTP_PROTOCOL,
        log_level="info",
        log_config=None,  # ours (app.logging), set above
        access_log=False,  # app.middleware writes one line per request, with its ID
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
    )
    return 0


def migrate(settings: Settings, args: argparse.Namespace) -> int:
    from db.migrate import upgrade

    upgrade(_database_url(settings))
    print("Migrations applied", flush=True)
    return 0


def token(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth import development_secret, mint_token

    if settings.is_production:
        print("Refused: development tokens are not minted with APP_ENV=production", file=sys.stderr)
        return 2
    if settings.auth_jwt_secret is not None:
        secret = settings.auth_jwt_secret.get_secret_value()
    elif settings.auth_jwks_url is not None:
        print(
            "AUTH_JWKS_URL is set and AUTH_JWT_SECRET is not: get tokens from your identity "
            "provider",
            file=sys.stderr,
        )
        return 2
    else:
        secret = development_secret(settings.data_dir)
    print(
        mint_token(
            secret,
            subject=args.sub,
            email=args.email,
            email_verified=not args.unverified,
            name=args.name,
            ttl=timedelta(hours=args.hours),
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
        )
    )
    return 0


def portal_config(settings: Settings, args: argparse.Namespace) -> int:
    """Create the Billing Portal configuration in Stripe; prints its ID for the environment."""

    from app.main import stripe_gateway
    from services.billing import create_portal_configuration
    from services.errors import DomainError

    plans = PlanCatalog.load(pro_price_id=settings.stripe_price_pro, plans_file=settings.plans_file)

    async def create() -> str:
        gateway = stripe_gateway(settings)
        try:
            return await create_portal_configuration(gateway, plans, settings.app_url)
        finally:
            await gateway.aclose()

    try:
        configuration_id = asyncio.run(create())
    except DomainError as exc:
        print(f"Could not create the portal configuration: {exc.message}", file=sys.stderr)
        return 1
    print(configuration_id)
    print(f"Set STRIPE_PORTAL_CONFIGURATION_ID={configuration_id} to use it.", file=sys.stderr)
    return 0


@asynccontextmanager
async def _runtime(
    settings: Settings,
) -> AsyncIterator[tuple[Pool, StripeGateway, PlanCatalog]]:
    """The database, Stripe and plans, as the server would have them, for one command."""
    from app.main import stripe_gateway

    pool = Pool(
        Database(_database_url(settings), min_size=1, max_size=2),
        acquire_timeout=30.0,
        max_size=2,
    )
    await pool.connect()
    gateway = stripe_gateway(settings)
    try:
        yield (
            pool,
            gateway,
            PlanCatalog.load(
                pro_price_id=settings.stripe_price_pro, plans_file=settings.plans_file
            ),
        )
    finally:
        await gateway.aclose()
        await pool.disconnect()


def events(settings: Settings, args: argparse.Namespace) -> int:
    """List stored Stripe events, or put failed ones back in line and process them now."""
    from app.worker import Worker
    from db import events as db_events

    async def run() -> int:
        async with _runtime(settings) as (pool, gateway, plans):
            if args.replay or args.replay_failed:
                async with pool.connection() as pg:
                    requeued = await db_events.requeue(pg, args.replay or None)
                handled = await Worker(pool, gateway, plans).drain()
                print(f"Requeued {requeued} event(s); processed {handled} item(s).")
            async with pool.connection() as pg:
                found = await db_events.listing(pg, args.status, args.limit)
        for event in found:
            print(
                f"{event.id}  {event.type:32} {event.status:9} attempts={event.attempts:<3}"
                f" received={event.received_at:%Y-%m-%d %H:%M:%S}"
                + (f"  last_error={event.last_error}" if event.last_error else "")
            )
        if not found:
            print("No events.")
        return 0

    return asyncio.run(run())


def resync(settings: Settings, args: argparse.Namespace) -> int:
    """Re-read every linked customer and its subscriptions from Stripe; report changes."""
    from services.errors import DomainError
    from services.recovery import resync_all

    async def run() -> int:
        async with _runtime(settings) as (pool, gateway, plans):
            results = await resync_all(pool, gateway, plans)
        for result in results:
            if result.changed:
                what = (
                    (["customer deleted in Stripe: unlinked"] if result.customer_gone else [])
                    + (["customer updated"] if result.customer_changed else [])
                    + (["subscription updated"] if result.subscription_changed else [])
                    + (["invoices updated"] if result.invoices_changed else [])
                    + (["entitlements updated"] if result.entitlements_changed else [])
                )
                print(f"{result.user_id} ({result.customer_id}): {', '.join(what)}")
        changed = sum(1 for r in results if r.changed)
        print(f"Checked {len(results)} customer(s); {changed} changed.")
        return 0

    try:
        return asyncio.run(run())
    except DomainError as exc:
        print(f"Resync failed: {exc.message}", file=sys.stderr)
        return 1


def export_schema(settings: Settings, args: argparse.Namespace) -> int:
    from schema.root import build_schema

    print(build_schema().as_str())
    return 0


def spa(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the example SPA (examples/spa/) on its own origin, beside `make run`."""
    import uvicorn

    from app.browser.spa import Spa

    listens_everywhere = settings.host in ("0.0.0.0", "::", "")  # noqa: S104 (compares)
    api_host = "127.0.0.1" if listens_everywhere else settings.host
    api_url = args.api or f"http://{api_host}:{settings.port}"
    try:
        app = Spa(api_url)
    except ValueError as exc:
        print(f"--api: {exc}", file=sys.stderr)
        return 2
    here = f"http://localhost:{args.port}"
    print(f"Example SPA: {here}  (API {app.api_url})", flush=True)
    if settings.app_url.rstrip("/") != here:
        print(
            f"Note: the API's APP_URL is {settings.app_url}: its CORS and the Checkout/portal "
            f"return URLs point there. Start the API with APP_URL={here} to use this SPA.",
            flush=True,
        )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="apply migrations and serve HTTP")
    serve_parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default WEB_CONCURRENCY, 1)"
    )
    serve_parser.set_defaults(run=serve)
    commands.add_parser("migrate", help="apply database migrations").set_defaults(run=migrate)
    token_parser = commands.add_parser("token", help="mint a development bearer token")
    token_parser.add_argument("--sub", default="dev-user", help="the user ID (default dev-user)")
    token_parser.add_argument("--email", default="dev@example.com")
    token_parser.add_argument("--name", default=None, help='full name, e.g. "Ada Lovelace"')
    token_parser.add_argument("--unverified", action="store_true", help="email_verified=false")
    token_parser.add_argument("--hours", type=float, default=12.0, help="lifetime (default 12)")
    token_parser.set_defaults(run=token)
    commands.add_parser(
        "portal-config", help="create the Stripe Billing Portal configuration, print its ID"
    ).set_defaults(run=portal_config)
    events_parser = commands.add_parser("events", help="list or replay stored Stripe events")
    events_parser.add_argument(
        "--status", choices=["pending", "processed", "ignored", "failed"], default=None
    )
    events_parser.add_argument("--limit", type=int, default=50)
    events_parser.add_argument("--replay", nargs="+", metavar="EVENT_ID", help="replay these")
    events_parser.add_argument("--replay-failed", action="store_true", help="replay all failed")
    events_parser.set_defaults(run=events)
    commands.add_parser(
        "resync", help="re-read every linked customer and subscription from Stripe"
    ).set_defaults(run=resync)
    commands.add_parser("export-schema", help="print the GraphQL SDL").set_defaults(
        run=export_schema
    )
    spa_parser = commands.add_parser("spa", help="serve the example SPA (examples/spa/)")
    spa_parser.add_argument("--port", type=int, default=3000, help="default 3000 (APP_URL)")
    spa_parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    spa_parser.add_argument(
        "--api", default=None, help="the API's URL (default http://HOST:PORT of `make run`)"
    )
    spa_parser.set_defaults(run=spa)
    args = parser.parse_args(argv)
    log_setup.configure(json_format=False)
    try:
        result: int = args.run(Settings(), args)
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    return result
