"""An embedded PostgreSQL (pgserver) for machines where `DATABASE_URL` is unset."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def start(data_dir: Path, *, throwaway: bool = False) -> Any:
    """Start (or reuse) a server whose data lives in `data_dir`; returns the pgserver handle.

    The server stops when this process exits; with `throwaway` its data is deleted too.
    """
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (CI, root shells).
        warnings.simplefilter("ignore")
        import pgserver

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(  # type: ignore[attr-defined]
        data_dir, cleanup_mode="delete" if throwaway else "stop"
    )
