"""Conversions between the contract's `postgresql://` URL and what each client expects."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def for_sqlalchemy(url: str) -> str:
    """Alembic runs through SQLAlchemy's asyncpg dialect, so no second driver is needed."""
    scheme, rest = url.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        scheme = "postgresql+asyncpg"
    return f"{scheme}://{rest}"


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database (tests clone a template per test)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"
