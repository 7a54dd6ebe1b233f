"""`POST /webhooks/stripe`: verify, record durably, answer; processing happens afterwards.

2xx only once the event is committed; 400 for anything not provably from Stripe (nothing
recorded); 503 when it cannot be recorded or webhooks are not configured (Stripe retries).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from services import webhooks
from services.stripe_gateway import InvalidWebhook

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 512 * 1024


async def stripe_webhook(request: Request) -> JSONResponse:
    runtime = request.state.runtime
    secrets = runtime.settings.webhook_secrets
    if not secrets:
        return JSONResponse({"error": "Stripe webhooks are not configured"}, 503)
    payload = await request.body()
    try:
        event = webhooks.parse(payload, request.headers.get("stripe-signature"), secrets)
    except InvalidWebhook as exc:
        log.warning("rejected a webhook: %s", exc)
        runtime.metrics.webhook_events.labels("unknown", "invalid").inc()
        return JSONResponse({"error": f"invalid webhook: {exc}"}, 400)
    try:
        new = await webhooks.record(runtime.pool, event)
    except Exception:
        log.exception("could not record Stripe event %s", event.id)
        return JSONResponse({"error": "could not record the event; retry later"}, 503)
    label = event.type if event.type in webhooks.HANDLED else "other"
    runtime.metrics.webhook_events.labels(label, "received" if new else "duplicate").inc()
    if new:
        runtime.worker.wake()
    return JSONResponse({"received": True, "duplicate": not new})
