"""Shared pieces of the benchmarks: a throwaway PostgreSQL, the server process, statistics."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from db import embedded, migrate

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"


@contextmanager
def throwaway_database() -> Iterator[str]:
    given = os.environ.get("DATABASE_URL")
    if given:
        migrate.upgrade(given)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="billing-bench-pg-") as tmp:
        server = embedded.start(Path(tmp) / "pg", throwaway=True)
        try:
            url = str(server.get_uri())
            migrate.upgrade(url)
            yield url
        finally:
            server.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def server_process(env: Mapping[str, str]) -> Iterator[str]:
    """`python -m app serve` on a free port; yields its base URL once `/readyz` answers."""
    port = free_port()
    full_env = {
        **os.environ,
        "AUTH_JWT_SECRET": JWT_SECRET,
        "APP_ENV": "development",
        "ACCESS_LOG": "false",
        "PORT": str(port),
        **env,
    }
    log = tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server exited: {log.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(samples_seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_seconds]
    return {
        "p50": percentile(ms, 0.50),
        "p99": percentile(ms, 0.99),
        "mean": statistics.fmean(ms),
    }
