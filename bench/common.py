"""Shared pieces of the benchmarks: tokens and statistics. Server processes, the throwaway
PostgreSQL and the fake Stripe are the test harness's (`tests/support`)."""

from __future__ import annotations

import statistics
from pathlib import Path

from tests.support.tokens import make_token

ROOT = Path(__file__).resolve().parent.parent


def token(sub: str, expires_in: int = 3600) -> str:
    """A bearer token for a verified `<sub>@example.com`, as the servers here accept."""
    return make_token(sub, expires_in=expires_in)


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
