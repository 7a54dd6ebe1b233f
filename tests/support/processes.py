"""Server processes as production runs them, on a throwaway PostgreSQL, for tests and benchmarks.

`ServerProcess` is one `python -m app serve` on a free loopback port (migrations, the HTTP
server and its worker, exactly as in production), its output kept for the test to read.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO

import asyncpg
import httpx

from db import embedded, migrate
from db.urls import with_database
from tests.support.tokens import TEST_JWT_SECRET

ROOT = Path(__file__).resolve().parent.parent.parent


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


@asynccontextmanager
async def cloned_database(server_url: str, template: str) -> AsyncIterator[str]:
    """A fresh database cloned from the migrated template; dropped afterwards."""
    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        yield with_database(server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One `python -m app serve` subprocess on a free loopback port, its output in a temp file.

    `start()` spawns it without waiting; `wait_ready()` polls `/readyz` until 200. Tests use
    the handle to signal the process (`terminate`, `kill`) and read its log.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = dict(env)
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.port = 0
        self.base = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "AUTH_JWT_SECRET": TEST_JWT_SECRET,
            "APP_ENV": "development",
            "ACCESS_LOG": "false",
            **self._env,
            "PORT": str(self.port),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace")
        self._log.seek(0, os.SEEK_END)
        return text

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll `/readyz` until 200; restarts once on a port taken meanwhile by someone else."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        retried = False
        while True:
            if self.process.poll() is not None:
                log = self.log()
                if not retried and "address already in use" in log.lower():
                    retried = True
                    self.start()
                    continue
                raise RuntimeError(f"server exited: {log[-2000:]}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not become ready: {self.log()[-2000:]}")
            time.sleep(0.1)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def terminate(self) -> None:
        """SIGTERM: a graceful shutdown (in-flight requests finish, the worker stops)."""
        self.signal(signal.SIGTERM)

    def kill(self) -> int:
        """SIGKILL, as a crash or an OOM kill would; returns the exit status."""
        self.signal(signal.SIGKILL)
        assert self.process is not None
        return self.process.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it has not exited within `timeout` seconds."""
        if self.process is None:
            return None
        self.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def close(self) -> None:
        self.stop()
        self._log.close()


@contextmanager
def server_processes(
    *envs: Mapping[str, str], ready_timeout: float = 60.0
) -> Iterator[list[ServerProcess]]:
    """Several servers started side by side; yields them once each answers `/readyz`.

    On exit each is stopped (SIGTERM, SIGKILL after 20 s) unless it already exited.
    """
    with ExitStack() as stack:
        servers = []
        for env in envs:
            server = ServerProcess(env)
            stack.callback(server.close)
            servers.append(server.start())
        for server in servers:
            server.wait_ready(ready_timeout)
        yield servers


@contextmanager
def server_process(env: Mapping[str, str]) -> Iterator[str]:
    """`python -m app serve` on a free port; yields its base URL once `/readyz` answers."""
    with server_processes(env) as [server]:
        yield server.base


def pin(pid: int) -> None:
    """Keep a process (all its threads) on core 0; the load generator takes core 1."""
    if shutil.which("taskset"):
        subprocess.run(["taskset", "-apc", "0", str(pid)], capture_output=True, check=False)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pid_of(base: str) -> int:
    """The process listening on the base URL's port."""
    port = base.rsplit(":", 1)[1]
    out = subprocess.run(
        ["ss", "-ltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    found = re.search(r"pid=(\d+)", out)
    assert found is not None, out
    return int(found.group(1))
