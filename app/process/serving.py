"""What a serving process does before it accepts connections: raise its limit of open
files, and set how long a client has to send a request (`app.process.slow_clients`)."""

from __future__ import annotations

import logging
import resource

from starlette.types import ASGIApp

from app import logging as log_setup
from app.process import slow_clients
from app.settings import Settings

log = logging.getLogger(__name__)


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
    from app.main import create_app

    return create_app(settings)
