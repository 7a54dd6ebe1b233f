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


def signed_bodies_lua(*, once: bool) -> str:
    """A wrk script POSTing the lines of the file given after `--` ("signature<TAB>body",
    signed Stripe events), in turn: cycling for the run's duration, or each line `once`
    (the thread stops when all were answered; wrk itself lingers until its duration)."""
    stop = (
        """
response = function(status, headers, body)
  answered = answered + 1
  if answered >= #requests then
    wrk.thread:stop()
  end
end
"""
        if once
        else ""
    )
    return (
        """
local requests = {}
local index = 0
local answered = 0
init = function(args)
  for line in io.lines(args[1]) do
    local tab = string.find(line, "\\t")
    local signature = string.sub(line, 1, tab - 1)
    local body = string.sub(line, tab + 1)
    requests[#requests + 1] = wrk.format("POST", nil,
      {["Content-Type"] = "application/json", ["Stripe-Signature"] = signature}, body)
  end
end
request = function()
  index = index % #requests + 1
  return requests[index]
end
"""
        + stop
    )
