"""Builders for Stripe API objects, shaped like the installed SDK's typed resources.

Every builder returns a plain JSON-able ``dict`` the way the real API serialises the
object for the API version the installed ``stripe`` SDK pins (``stripe.api_version``).
Field lists follow ``stripe/_customer.py``, ``_subscription.py``, ``_subscription_item.py``,
``_price.py``, ``_plan.py``, ``_product.py``, ``checkout/_session.py``,
``billing_portal/_session.py``, ``billing_portal/_configuration.py`` and ``_event.py``.
Expandable-only fields (``customer.subscriptions``, ``checkout.session.line_items`` …) are
left out, as the real API does unless ``expand[]`` asks for them.

Nothing here holds state; :mod:`tests.fakes.stripe` owns the store.
"""

from __future__ import annotations

import calendar
import secrets
import string
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe

JSONDict = dict[str, Any]

API_VERSION: str = stripe.api_version
"""The API version the installed SDK pins (sent as ``Stripe-Version`` on every request)."""

_ALNUM = string.ascii_letters + string.digits


def now() -> int:
    return int(time.time())


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def new_id(prefix: str, length: int = 24) -> str:
    """An id shaped like Stripe's: ``cus_`` + 14 chars, ``sub_`` + 24 chars, etc."""
    return f"{prefix}{random_token(length)}"


def new_request_id() -> str:
    return new_id("req_", 14)


def add_interval(ts: int, interval: str, count: int = 1) -> int:
    """``ts`` advanced by ``count`` billing intervals, calendar-aware like Stripe's periods."""
    dt = datetime.fromtimestamp(ts, UTC)
    if interval == "day":
        dt += timedelta(days=count)
    elif interval == "week":
        dt += timedelta(weeks=count)
    elif interval in ("month", "year"):
        months = count * (12 if interval == "year" else 1)
        total = dt.month - 1 + months
        year, month = dt.year + total // 12, total % 12 + 1
        day = min(dt.day, calendar.monthrange(year, month)[1])
        dt = dt.replace(year=year, month=month, day=day)
    else:
        raise ValueError(f"unknown interval {interval!r}")
    return int(dt.timestamp())


def list_object(data: list[JSONDict], *, url: str, has_more: bool = False) -> JSONDict:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def deleted_object(obj_id: str, object_name: str) -> JSONDict:
    """What a deleted object looks like (returned by DELETE and, for customers, by GET)."""
    return {"id": obj_id, "object": object_name, "deleted": True}


# --- customers -------------------------------------------------------------------------


def customer(cus_id: str, created: int) -> JSONDict:
    return {
        "id": cus_id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "business_name": None,
        "created": created,
        "currency": None,
        "customer_account": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "individual_name": None,
        "invoice_prefix": random_token(8).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


# --- catalogue -------------------------------------------------------------------------


def product(prod_id: str, name: str, created: int) -> JSONDict:
    return {
        "id": prod_id,
        "object": "product",
        "active": True,
        "created": created,
        "default_price": None,
        "description": None,
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": {},
        "name": name,
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "type": "service",
        "unit_label": None,
        "updated": created,
        "url": None,
    }


def price(
    price_id: str,
    *,
    product_id: str,
    unit_amount: int,
    currency: str,
    interval: str | None,
    interval_count: int,
    created: int,
    lookup_key: str | None = None,
    nickname: str | None = None,
) -> JSONDict:
    recurring = (
        {
            "interval": interval,
            "interval_count": interval_count,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        }
        if interval
        else None
    )
    return {
        "id": price_id,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": created,
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": lookup_key,
        "metadata": {},
        "nickname": nickname,
        "product": product_id,
        "recurring": recurring,
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if interval else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }


def plan_from_price(p: JSONDict) -> JSONDict:
    """The legacy ``plan`` mirror Stripe still embeds in each subscription item."""
    recurring: JSONDict = p["recurring"] or {}
    return {
        "id": p["id"],
        "object": "plan",
        "active": p["active"],
        "amount": p["unit_amount"],
        "amount_decimal": p["unit_amount_decimal"],
        "billing_scheme": p["billing_scheme"],
        "created": p["created"],
        "currency": p["currency"],
        "interval": recurring.get("interval"),
        "interval_count": recurring.get("interval_count", 1),
        "livemode": False,
        "metadata": dict(p["metadata"]),
        "meter": None,
        "nickname": p["nickname"],
        "product": p["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": recurring.get("usage_type", "licensed"),
    }


# --- subscriptions ---------------------------------------------------------------------


def subscription_item(
    si_id: str,
    *,
    sub_id: str,
    price_obj: JSONDict,
    quantity: int,
    period_start: int,
    created: int,
) -> JSONDict:
    recurring: JSONDict = price_obj["recurring"] or {"interval": "month", "interval_count": 1}
    return {
        "id": si_id,
        "object": "subscription_item",
        "billed_until": None,
        "billing_thresholds": None,
        "created": created,
        # Since 2025-03-31.basil the billing period lives on each item, not on the subscription.
        "current_period_end": add_interval(
            period_start, recurring["interval"], recurring["interval_count"]
        ),
        "current_period_start": period_start,
        "current_trial": None,
        "discounts": [],
        "metadata": {},
        "plan": plan_from_price(price_obj),
        "price": price_obj,
        "quantity": quantity,
        "subscription": sub_id,
        "tax_rates": [],
    }


def subscription(
    sub_id: str,
    *,
    customer_id: str,
    items: list[JSONDict],
    currency: str,
    status: str,
    created: int,
    metadata: dict[str, str],
    description: str | None = None,
    trial_start: int | None = None,
    trial_end: int | None = None,
) -> JSONDict:
    return {
        "id": sub_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": trial_end or created,
        "billing_cycle_anchor_config": None,
        # "If no value is passed, the default is `flexible`" (SDK params docstring).
        "billing_mode": {
            "flexible": {"proration_discounts": "itemized"},
            "type": "flexible",
            "updated_at": created,
        },
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "customer": customer_id,
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": description,
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": items,
            "has_more": False,
            "total_count": len(items),
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": metadata,
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "presentment_details": None,
        "schedule": None,
        "start_date": created,
        "status": status,
        "status_details": None,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": trial_start,
    }


# --- checkout --------------------------------------------------------------------------


def line_item(price_obj: JSONDict, quantity: int, product_name: str) -> JSONDict:
    amount = (price_obj["unit_amount"] or 0) * quantity
    return {
        "id": new_id("li_"),
        "object": "item",
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": price_obj["currency"],
        "description": product_name,
        "metadata": {},
        "price": price_obj,
        "quantity": quantity,
    }


def checkout_session(
    cs_id: str,
    *,
    url: str,
    mode: str,
    created: int,
    customer_id: str | None,
    customer_email: str | None,
    client_reference_id: str | None,
    success_url: str | None,
    cancel_url: str | None,
    metadata: dict[str, str],
    currency: str | None,
    amount: int,
    ui_mode: str,
    locale: str | None,
    allow_promotion_codes: bool | None,
) -> JSONDict:
    return {
        "id": cs_id,
        "object": "checkout.session",
        "adaptive_pricing": None,
        "after_expiration": None,
        "allow_promotion_codes": allow_promotion_codes,
        "amount_subtotal": amount,
        "amount_total": amount,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "branding_settings": None,
        "cancel_url": cancel_url,
        "client_reference_id": client_reference_id,
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": created,
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer_id,
        "customer_account": None,
        "customer_creation": None if customer_id else "always",
        "customer_details": (
            None
            if customer_email is None
            else {
                "address": None,
                "business_name": None,
                "email": customer_email,
                "individual_name": None,
                "name": None,
                "phone": None,
                "tax_exempt": "none",
                "tax_ids": None,
            }
        ),
        "customer_email": customer_email,
        "discounts": [],
        "expires_at": created + 24 * 3600,
        "invoice": None,
        "invoice_creation": None,
        "livemode": False,
        "locale": locale,
        "managed_payments": None,
        "metadata": metadata,
        "mode": mode,
        "origin_context": None,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "always" if mode == "subscription" else None,
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "presentment_details": None,
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": None,
        "subscription": None,
        "success_url": success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": ui_mode,
        "url": url,
        "wallet_options": None,
    }


# --- billing portal --------------------------------------------------------------------


def portal_features_default() -> JSONDict:
    """``features`` of a portal configuration with nothing enabled (API defaults)."""
    return {
        "customer_update": {"allowed_updates": [], "enabled": False},
        "invoice_history": {"enabled": False},
        "payment_method_update": {"enabled": False, "payment_method_configuration": None},
        "subscription_cancel": {
            "cancellation_reason": {"enabled": False, "options": []},
            "enabled": False,
            "mode": "at_period_end",
            "proration_behavior": "none",
        },
        "subscription_pause": {
            "duration": {"interval_options": [], "type": "indefinite"},
            "enabled": False,
        },
        "subscription_update": {
            "billing_cycle_anchor": None,
            "default_allowed_updates": [],
            "enabled": False,
            "products": [],
            "proration_behavior": "none",
            "schedule_at_period_end": {"conditions": []},
            "trial_update_behavior": "end_trial",
        },
    }


def portal_configuration(bpc_id: str, created: int, *, is_default: bool = False) -> JSONDict:
    return {
        "id": bpc_id,
        "object": "billing_portal.configuration",
        "active": True,
        "application": None,
        "business_profile": {
            "headline": None,
            "privacy_policy_url": None,
            "terms_of_service_url": None,
        },
        "created": created,
        "default_return_url": None,
        "features": portal_features_default(),
        "is_default": is_default,
        "livemode": False,
        "login_page": {"enabled": False, "url": None},
        "metadata": {},
        "name": None,
        "updated": created,
    }


def portal_session(
    bps_id: str,
    *,
    url: str,
    configuration_id: str,
    customer_id: str,
    return_url: str | None,
    created: int,
    locale: str | None,
    flow: JSONDict | None,
    on_behalf_of: str | None,
) -> JSONDict:
    return {
        "id": bps_id,
        "object": "billing_portal.session",
        "after_expiration": None,
        "configuration": configuration_id,
        "created": created,
        "customer": customer_id,
        "customer_account": None,
        "flow": flow,
        "livemode": False,
        "locale": locale,
        "on_behalf_of": on_behalf_of,
        "return_url": return_url,
        "url": url,
    }


# --- events & errors -------------------------------------------------------------------


def event(
    evt_id: str,
    *,
    type: str,
    obj: JSONDict,
    previous_attributes: JSONDict | None,
    created: int,
    request_id: str | None,
    idempotency_key: str | None,
) -> JSONDict:
    data: JSONDict = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": evt_id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": type,
    }


def doc_url(code: str) -> str:
    # Stripe's docs use the code with dashes: resource_missing -> .../resource-missing
    return f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"


def error_body(
    *,
    type: str,
    message: str,
    code: str | None = None,
    param: str | None = None,
    request_id: str | None = None,
) -> JSONDict:
    """``{"error": {...}}`` with the keys Stripe sends; absent ones are omitted like Stripe."""
    err: JSONDict = {}
    if code is not None:
        err["code"] = code
        err["doc_url"] = doc_url(code)
    err["message"] = message
    if param is not None:
        err["param"] = param
    if request_id is not None:
        err["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}?t={now()}"
    err["type"] = type
    return {"error": err}
