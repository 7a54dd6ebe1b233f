"""Prometheus metrics, one registry per app instance (so tests and apps never share counts).

Created by the app factory and handed to whatever records (the GraphQL endpoint, the
webhook route, the worker, the Stripe gateway); `/metrics` renders it.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "billing_requests_total",
            "HTTP requests by route, GraphQL operation and outcome",
            ["route", "operation", "outcome"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "billing_request_duration_seconds",
            "HTTP request latency by route and GraphQL operation",
            ["route", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.webhook_events = Counter(
            "billing_webhook_events_total",
            "Stripe events by type and outcome (received, duplicate, invalid, processed, "
            "ignored, retry, failed)",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.job_failures = Counter(
            "billing_job_failures_total",
            "Failed attempts of background jobs by kind",
            ["kind"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "billing_queue_depth",
            "Work waiting in PostgreSQL: pending and failed events, pending jobs",
            ["queue"],
            registry=self.registry,
        )
        self.stripe_calls = Counter(
            "billing_stripe_requests_total",
            "Calls to Stripe by operation and outcome",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.stripe_seconds = Histogram(
            "billing_stripe_request_duration_seconds",
            "Latency of Stripe calls (the SDK's retries included)",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.duplicates_refunded = Counter(
            "billing_duplicate_subscriptions_refunded_total",
            "Duplicate subscriptions of one user canceled and refunded",
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.pool = Gauge(
            "billing_db_pool_connections",
            "Database pool connections by state",
            ["state"],
            registry=self.registry,
        )

    def observe_request(self, route: str, operation: str, outcome: str, seconds: float) -> None:
        """The hot path's two samples; labelled children are looked up once and kept."""
        key = (route, operation, outcome)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, operation, outcome),
                self.request_seconds.labels(route, operation),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
