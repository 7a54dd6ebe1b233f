"""What a serving process does before it imports the app: leave out the modules it never uses.

Two libraries import optional dependencies only because they are installed:

- the Stripe SDK imports `requests` to offer it as the default synchronous HTTP client; our
  gateway always hands the SDK an httpx client, so `requests` is never used (5.5 MB);
- PyJWT imports `cryptography` for RSA and EC keys; without `AUTH_JWKS_URL` every token is
  HS256, which needs only `hmac` (9.4 MB);
- httpx imports its command-line tool's `pygments` wherever the development tools have
  installed it (1.3 MB).

Marking a module absent in `sys.modules` makes importing it fail as if it were not
installed, which both libraries expect. Together that is a sixth of a worker's memory.

It also raises its limit of open files, and sets how long a client has to send a request
(`app.process.slow_clients`).
"""

from __future__ import annotations

import logging
import resource
import sys

from starlette.types import ASGIApp

from app import logging as log_setup
from app.process import slow_clients
from app.settings import Settings

log = logging.getLogger(__name__)


def leave_out_unused_modules(settings: Settings) -> list[str]:
    """Call before anything imports `stripe` or `jwt`; returns the modules left out."""
    unused = ["requests", "pygments"]
    if settings.auth_jwks_url is None:
        unused.append("cryptography")
    left_out = [name for name in unused if name not in sys.modules]
    for name in left_out:
        sys.modules[name] = None  # type: ignore[assignment]
    return left_out


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit of open files to the hard one; returns (before, now).

    Every connection is a file descriptor: at a soft limit of 1,024 (a common default) a
    thousand idle or slow connections leave none for new clients, `/healthz` included,
    nor for the database pool. The hard limit is what the administrator allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # an unlimited hard limit is above the kernel's nr_open
        log.warning("could not raise the open files limit from %d to %d", soft, hard)
        return soft, soft
    return soft, hard


def prepare_serving(settings: Settings) -> None:
    """What every serving process does before it accepts connections."""
    before, now = raise_open_files_limit()
    if now != before:
        log.info("open files limit: %d (raised from %d)", now, before)
    else:
        log.info("open files limit: %d", now)
    slow_clients.configure(settings.request_read_timeout_seconds)


def production_app() -> ASGIApp:
    """The factory each worker process calls (`python -m app serve --workers N`, or
    `uvicorn --factory --http app.process.slow_clients:SlowClientsProtocol
    app.process.serving:production_app`): settings from the environment, our logs."""
    settings = Settings()
    log_setup.configure(json_format=settings.json_logs)
    prepare_serving(settings)
    leave_out_unused_modules(settings)
    from app.main import create_app

    return create_app(settings)
