"""What an operator sees: metrics, JSON logs with request IDs, and fast failure under load."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.runtime import Runtime
from tests.helpers import error_codes, gql
from tests.support.stripe import FakeStripe, sign


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text; 0 when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(part in line for part in wanted.split(",")):
            return float(line.rsplit(" ", 1)[1])
        if not labels and line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class TestMetrics:
    @pytest.fixture
    def settings_overrides(self, stripe_settings: dict[str, Any]) -> dict[str, Any]:
        return {**stripe_settings, "stripe_webhook_secret": "whsec_metrics"}

    async def test_requests_are_counted_by_operation_and_outcome(
        self, client: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        await gql(client, "{ me { id } }", token=token())
        await gql(client, "{ me { id } }")
        await gql(client, "query Named { plans { id } }")
        text = (await client.get("/metrics")).text
        assert (
            metric_value(
                text, "billing_requests_total", route="/graphql", operation="me", outcome="ok"
            )
            == 1
        )
        assert (
            metric_value(text, "billing_requests_total", operation="me", outcome="UNAUTHENTICATED")
            == 1
        )
        assert metric_value(text, "billing_requests_total", operation="plans", outcome="ok") == 1
        assert 'operation="Named"' not in text  # client-chosen names never become labels
        assert (
            metric_value(
                text, "billing_request_duration_seconds_count", route="/graphql", operation="me"
            )
            == 2
        )

    async def test_webhooks_stripe_calls_queues_and_pool_are_reported(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        fake_stripe: FakeStripe,
        runtime: Runtime,
    ) -> None:
        await gql(client, "mutation { createCheckoutSession { id } }", token=token())
        event = fake_stripe.event("customer.updated", {"id": "cus_unknown", "object": "customer"})
        payload = json.dumps(event).encode()
        for _ in range(2):
            await client.post(
                "/webhooks/stripe",
                content=payload,
                headers={"Stripe-Signature": sign(payload, "whsec_metrics")},
            )
        text = (await client.get("/metrics")).text
        assert (
            metric_value(
                text, "billing_webhook_events_total", type="customer.updated", outcome="received"
            )
            == 1
        )
        assert (
            metric_value(
                text, "billing_webhook_events_total", type="customer.updated", outcome="duplicate"
            )
            == 1
        )
        assert metric_value(text, "billing_queue_depth", queue="events_pending") == 1
        assert (
            metric_value(
                text, "billing_stripe_requests_total", operation="customers.create", outcome="ok"
            )
            == 1
        )
        assert (
            metric_value(
                text,
                "billing_stripe_request_duration_seconds_count",
                operation="checkout.sessions.create",
            )
            == 1
        )
        assert metric_value(text, "billing_db_pool_connections", state="max") == 10

        await runtime.worker.drain()
        text = (await client.get("/metrics")).text
        assert (
            metric_value(
                text, "billing_webhook_events_total", type="customer.updated", outcome="ignored"
            )
            == 1
        )
        assert metric_value(text, "billing_queue_depth", queue="events_pending") == 0

    async def test_stripe_errors_are_counted(
        self, client: httpx.AsyncClient, token: Callable[..., str], fake_stripe: FakeStripe
    ) -> None:
        fake_stripe.down = True
        await gql(client, "mutation { createCheckoutSession { id } }", token=token())
        text = (await client.get("/metrics")).text
        assert (
            metric_value(
                text,
                "billing_stripe_requests_total",
                operation="customers.list",
                outcome="APIConnectionError",
            )
            == 1
        )


class TestJsonLogs:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"access_log": True}

    @pytest.mark.usefixtures("json_logs")
    async def test_each_request_logs_a_json_line_with_its_id_operation_and_user(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        bearer = token("logged-user")
        await client.post(
            "/graphql",
            json={"query": "{ me { id } }"},
            headers={"Authorization": f"Bearer {bearer}", "X-Request-ID": "req-log-1"},
        )
        lines = [
            json.loads(line)
            for line in capsys.readouterr().err.splitlines()
            if line.startswith("{")
        ]
        access = [line for line in lines if line["logger"] == "app.access"]
        assert access[-1]["request_id"] == "req-log-1"
        assert access[-1]["message"] == "POST /graphql 200"
        assert access[-1]["status"] == 200
        assert access[-1]["duration_ms"] >= 0
        assert "time" in access[-1]
        assert access[-1]["operation"] == "me"
        assert access[-1]["user_id"] == "logged-user"

    @pytest.mark.usefixtures("json_logs")
    async def test_unexpected_errors_are_logged_with_request_id_and_no_token(
        self,
        client: httpx.AsyncClient,
        token: Callable[..., str],
        pg: Any,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        bearer = token("logged-user")
        await gql(client, "{ me { id } }", token=bearer)
        await pg.execute("DROP TABLE notifications")
        await client.post(
            "/graphql",
            json={"query": "{ me { notifications { id } } }"},
            headers={"Authorization": f"Bearer {bearer}", "X-Request-ID": "req-log-2"},
        )
        err = capsys.readouterr().err
        assert bearer not in err
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        [failure] = [line for line in lines if line["logger"] == "app.graphql.errors"]
        assert failure["level"] == "ERROR"
        assert failure["request_id"] == "req-log-2"
        assert failure["operation"] == "me"
        assert failure["user_id"] == "logged-user"
        assert "exc_info" in failure


class TestSaturatedPool:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"db_pool_min_size": 1, "db_pool_max_size": 1, "db_acquire_timeout_seconds": 0.2}

    async def test_a_saturated_pool_answers_fast_with_a_clear_error(
        self, client: httpx.AsyncClient, token: Callable[..., str], runtime: Runtime
    ) -> None:
        held = asyncio.Event()
        release = asyncio.Event()

        async def hold_the_only_connection() -> None:
            async with runtime.pool.database.connection() as conn:
                await conn.execute("SELECT 1")
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold_the_only_connection())
        await held.wait()
        try:
            started = time.monotonic()
            body = await gql(client, "{ me { id } }", token=token())
            assert time.monotonic() - started < 2
            assert error_codes(body) == ["INTERNAL_SERVER_ERROR"]
            assert "busy" in body["errors"][0]["message"]
            assert body["errors"][0]["extensions"]["retryable"] is True
            ready = await client.get("/readyz")
            assert ready.status_code == 503
        finally:
            release.set()
            await holder
        assert (await gql(client, "{ me { id } }", token=token()))["data"]["me"]["id"] == "user-1"
        assert (await client.get("/readyz")).status_code == 200
