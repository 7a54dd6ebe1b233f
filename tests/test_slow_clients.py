"""Slow clients are dropped: each request must arrive, headers and body, within the timeout.

Against real `python -m app serve` processes (uvloop and httptools, as in production) with
`REQUEST_READ_TIMEOUT_SECONDS=1`, over raw sockets so that the test controls every byte.
The contract's figure is 30 s; 1 s keeps the tests quick. Timings are asserted only
loosely: "not before the timeout" and "well within 10 s".
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.servers import Farm, farm
from tests.support.processes import ServerProcess, cloned_database

TIMEOUT = 1.0
PATIENCE = 10.0  # what "closed" may take at most, however slow the machine
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"


def env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path),
        "RUN_WORKER": "false",
        "REQUEST_READ_TIMEOUT_SECONDS": str(TIMEOUT),
        **extra,
    }


@pytest.fixture(scope="module")
async def shared_database_url(pg_server_url: str, template_db: str) -> AsyncIterator[str]:
    async with cloned_database(pg_server_url, template_db) as url:
        yield url


@pytest.fixture(scope="module")
async def server(
    shared_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerProcess]:
    """One server for the tests that leave it as they found it (a start takes seconds)."""
    async with farm() as servers:
        [started] = await servers.start(
            env(shared_database_url, tmp_path_factory.mktemp("slow-clients"))
        )
        yield started


class Connection:
    """One raw TCP connection to a server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: ServerProcess) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response on this connection: status, headers, body."""
        async with asyncio.timeout(PATIENCE):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def until_closed(self, dribble: bool = False) -> tuple[bytes, float]:
        """Everything the server sends until it closes, and the seconds that took.

        With `dribble`, one more byte every 0.2 s meanwhile (a body or headers sent
        slowly): a client that keeps sending is dropped all the same.
        """
        started = time.monotonic()
        everything = asyncio.ensure_future(self.reader.read())
        try:
            async with asyncio.timeout(PATIENCE):
                while dribble and not everything.done():
                    await asyncio.wait([everything], timeout=0.2)
                    if not everything.done():
                        await self.send(b"x")
                data = await everything
        except TimeoutError:
            raise AssertionError(f"the server kept the connection open {PATIENCE} s") from None
        finally:
            everything.cancel()
        return data, time.monotonic() - started

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def connections() -> AsyncIterator[list[Connection]]:
    """Connections a test opens, closed at its end."""
    opened: list[Connection] = []
    yield opened
    for connection in opened:
        connection.close()


async def test_half_a_request_line_is_disconnected_after_the_timeout(
    server: ServerProcess, connections: list[Connection]
) -> None:
    connection = await Connection.open(server)
    connections.append(connection)
    await connection.send(b"GET /heal")
    data, seconds = await connection.until_closed()
    assert data == b""  # no request yet, so no answer
    assert seconds >= TIMEOUT * 0.9


async def test_headers_sent_a_byte_at_a_time_are_disconnected_after_the_timeout(
    server: ServerProcess, connections: list[Connection]
) -> None:
    connection = await Connection.open(server)
    connections.append(connection)
    await connection.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
    data, seconds = await connection.until_closed(dribble=True)
    assert data == b""
    assert seconds >= TIMEOUT * 0.9


async def test_a_dribbled_body_is_answered_408_and_disconnected(
    server: ServerProcess, connections: list[Connection]
) -> None:
    connection = await Connection.open(server)
    connections.append(connection)
    started = time.monotonic()
    await connection.send(
        b"POST /graphql HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
        b'{"query": "'
    )
    data, _ = await connection.until_closed(dribble=True)
    assert time.monotonic() - started >= TIMEOUT * 0.9
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), data
    assert b"connection: close" in head.lower()
    assert body.startswith(b"Request Timeout")
    # The application saw a client that went away: no error, no second response.
    await asyncio.sleep(0.2)
    assert "Exception in ASGI application" not in server.log()
    assert "Traceback" not in server.log()


async def test_a_keep_alive_client_has_the_time_for_each_request(
    server: ServerProcess, connections: list[Connection]
) -> None:
    """Counted from the end of the previous response: three requests on one connection
    over more than the timeout, with pauses shorter than it (and than uvicorn's keep-alive,
    5 s), are all served; a fourth cut short is dropped like any other."""
    connection = await Connection.open(server)
    connections.append(connection)
    started = time.monotonic()
    await connection.send(HEALTHZ)
    assert (await connection.response())[0] == 200
    # A request sent in two halves, the second after 60 % of its time.
    await asyncio.sleep(TIMEOUT * 0.3)
    await connection.send(HEALTHZ[:10])
    await asyncio.sleep(TIMEOUT * 0.3)
    await connection.send(HEALTHZ[10:])
    assert (await connection.response())[0] == 200
    await asyncio.sleep(TIMEOUT * 0.6)
    await connection.send(HEALTHZ)
    status, headers, body = await connection.response()
    assert (status, body) == (200, b'{"status":"ok"}')
    assert headers.get("connection") != "close"
    assert time.monotonic() - started > TIMEOUT
    await connection.send(HEALTHZ[:10])
    data, seconds = await connection.until_closed()
    assert data == b""
    assert seconds >= TIMEOUT * 0.9


async def test_a_response_that_takes_longer_than_the_timeout_is_not_cut(
    server: ServerProcess, shared_database_url: str, connections: list[Connection]
) -> None:
    """The time covers the client's sending only: `/metrics` waits here on a table lock
    for twice the timeout, answers, and the connection serves the next request."""
    connection = await Connection.open(server)
    connections.append(connection)
    pg = await asyncpg.connect(shared_database_url)
    try:
        async with pg.transaction():
            await pg.execute("LOCK TABLE sync_jobs IN ACCESS EXCLUSIVE MODE")
            await connection.send(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            answer = asyncio.ensure_future(connection.response())
            await asyncio.sleep(TIMEOUT * 2)
            assert not answer.done()  # neither answered nor closed: waiting on the lock
    finally:
        await pg.close()
    status, _, body = await answer
    assert status == 200
    assert b"billing_queue_depth" in body
    await connection.send(HEALTHZ)
    assert (await connection.response())[0] == 200


async def test_healthz_answers_while_200_slow_connections_are_open_until_they_are_dropped(
    server: ServerProcess, connections: list[Connection]
) -> None:
    for _ in range(200):
        connection = await Connection.open(server)
        connections.append(connection)
        await connection.send(b"GET /healthz HTTP/1.1\r\nHost: te")
    async with httpx.AsyncClient(base_url=server.base, timeout=PATIENCE) as client:
        for _ in range(5):
            started = time.monotonic()
            response = await client.get("/healthz")
            assert response.status_code == 200
            assert time.monotonic() - started < 2.0
    closed = await asyncio.gather(*(connection.until_closed() for connection in connections))
    assert all(data == b"" for data, _ in closed)


async def test_slow_connections_beyond_the_open_files_limit_are_freed_for_healthz(
    servers: Farm, database_url: str, tmp_path: Path, connections: list[Connection]
) -> None:
    """The attacker's case at a smaller scale: more slow connections than the process may
    open files. While they last new connections fail; the timeout gives the descriptors
    back, and `/healthz` answers again without anyone closing the slow ones."""
    [server] = await servers.start(env(database_url, tmp_path))
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (200, 200))
    for _ in range(300):
        connection = await Connection.open(server)
        connections.append(connection)
        await connection.send(b"GET /healthz HTTP/1.1\r\nHost: te")
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.base, timeout=1.0) as client:
        while True:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() - started < PATIENCE, "/healthz did not come back"
            await asyncio.sleep(0.1)


async def test_several_workers_drop_slow_clients_too(
    servers: Farm, database_url: str, tmp_path: Path, connections: list[Connection]
) -> None:
    [server] = await servers.start(env(database_url, tmp_path, WEB_CONCURRENCY="2"))
    for _ in range(4):  # the kernel spreads them over both workers
        connection = await Connection.open(server)
        connections.append(connection)
        await connection.send(b"GET /healthz HTTP/1.1\r\n")
    closed = await asyncio.gather(*(connection.until_closed() for connection in connections))
    assert all(data == b"" and seconds >= TIMEOUT * 0.9 for data, seconds in closed)
    connection = await Connection.open(server)
    connections.append(connection)
    await connection.send(HEALTHZ)
    assert (await connection.response())[0] == 200


async def test_the_open_files_limit_is_raised_to_the_hard_limit(
    servers: Farm, database_url: str, tmp_path: Path
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 512
    if hard <= low:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:  # the server process inherits the low soft limit
        [server] = await servers.start(env(database_url, tmp_path))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert resource.prlimit(server.pid, resource.RLIMIT_NOFILE) == (hard, hard)
    assert f"open files limit: {hard} (raised from {low})" in server.log()
