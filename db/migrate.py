"""Alembic, driven from code so that `make run`, the CLI and the tests share one path."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations; call it outside a running event loop (Alembic runs its own)."""
    command.upgrade(alembic_config(database_url), revision)


@cache
def head_revision() -> str | None:
    """The revision the code expects; `/readyz` compares the database against it."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()
