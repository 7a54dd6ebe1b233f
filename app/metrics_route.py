"""`GET /metrics`: Prometheus text format. Serve it to your scraper only, not the public."""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from db import health
from db.connection import PoolExhausted

log = logging.getLogger(__name__)


async def metrics_endpoint(request: Request) -> Response:
    runtime = request.state.runtime
    metrics = runtime.metrics
    for state, count in runtime.pool.stats().items():
        metrics.pool.labels(state).set(count)
    try:
        async with runtime.pool.connection(1.0) as pg:
            depths = await health.queue_depths(pg)
    except (PoolExhausted, OSError) as exc:
        log.warning("metrics: queue depths unavailable (%s)", type(exc).__name__)
    else:
        for queue, depth in depths.items():
            metrics.queue_depth.labels(queue).set(depth)
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
