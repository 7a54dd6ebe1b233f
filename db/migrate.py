"""Alembic, driven from code so that `make run`, the CLI and the tests share one path.

Alembic is imported only where migrations are applied; a serving process learns the head
revision from the migration files themselves (Alembic costs ~11 MB per process).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations; call it outside a running event loop (Alembic runs its own)."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Undo migrations down to `revision`; outside a running event loop, as `upgrade`."""
    from alembic import command

    command.downgrade(alembic_config(database_url), revision)


@cache
def head_revision() -> str | None:
    """The revision the code expects (`/readyz` compares the database against it)."""
    revisions: dict[str, str | None] = {}
    for path in (MIGRATIONS / "versions").glob("*.py"):
        values: dict[str, str | None] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.AnnAssign | ast.Assign) and node.value is not None:
                target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
                if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant):
                    values[target.id] = str(node.value.value) if node.value.value else None
        if "revision" in values:
            revisions[str(values["revision"])] = values.get("down_revision")
    parents = set(revisions.values())
    heads = [revision for revision in revisions if revision not in parents]
    if len(heads) > 1:
        raise RuntimeError(f"migrations have several heads: {sorted(heads)}")
    return heads[0] if heads else None
