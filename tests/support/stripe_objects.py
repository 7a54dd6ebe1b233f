"""Builders for Stripe API objects, shaped like the installed SDK's typed resources.

Every builder returns a plain JSON-able ``dict`` the way the real API serialises the
object for the API version the installed ``stripe`` SDK pins (``stripe.api_version``).
Field lists follow ``stripe/_customer.py``, ``_subscription.py``, ``_subscription_item.py``,
``_price.py``, ``_plan.py``, ``_product.py``, ``checkout/_session.py``,
``billing_portal/_session.py``, ``billing_portal/_configuration.py``, ``_invoice.py``,
``_invoice_line_item.py``, ``_invoice_payment.py``, ``_payment_intent.py``, ``_charge.py``,
``_refund.py``, ``entitlements/_active_entitlement.py``,
``entitlements/_active_entitlement_summary.py`` and ``_event.py``.
Includable-only fields (``customer.subscriptions``, ``checkout.session.line_items``,
``invoice.payments`` …) are left out, as the real API does unless ``expand[]`` asks for them.

Nothing here holds state; :mod:`tests.support.stripe` owns the store.
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


# --- invoices & payments -----------------------------------------------------------------


def invoice_line(
    il_id: str,
    *,
    invoice_id: str | None,
    sub_id: str,
    si_id: str,
    price_obj: JSONDict,
    quantity: int,
    amount: int,
    period_start: int,
    period_end: int,
    description: str,
    proration: bool = False,
    invoice_item: str | None = None,
) -> JSONDict:
    """An ``InvoiceLineItem`` generated by a subscription item (``subscription_item_details``).

    Proration lines (``proration=True``) come from an invoice item (``ii_…``), as in Stripe.
    """
    return {
        "id": il_id,
        "object": "line_item",
        "amount": amount,
        "currency": price_obj["currency"],
        "description": description,
        "discount_amounts": [],
        "discountable": not proration,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": False,
        "metadata": {},
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": invoice_item,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": sub_id,
                "subscription_item": si_id,
            },
            "type": "subscription_item_details",
        },
        "period": {"end": period_end, "start": period_start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price_obj["id"], "product": price_obj["product"]},
            "type": "price_details",
            "unit_amount_decimal": price_obj["unit_amount_decimal"],
        },
        "quantity": quantity,
        "quantity_decimal": str(quantity),
        "subscription": sub_id,
        "subtotal": amount,
        "taxes": [],
    }


def invoice(
    in_id: str,
    *,
    customer_obj: JSONDict,
    sub: JSONDict | None,
    lines: list[JSONDict],
    created: int,
    period_start: int,
    period_end: int,
    billing_reason: str,
    currency: str,
) -> JSONDict:
    """A draft ``Invoice``; :mod:`tests.support.stripe` finalizes and pays it.

    Since 2025-03-31.basil an invoice names its subscription only through
    ``parent.subscription_details`` (no top-level ``subscription``), and its payments are
    ``InvoicePayment`` objects (no ``charge``/``payment_intent`` on the invoice).
    """
    total = sum(line["amount"] for line in lines)
    due = max(total, 0)
    parent = (
        {
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(sub["metadata"]),
                "subscription": sub["id"],
                "subscription_proration_date": None,
            },
            "type": "subscription_details",
        }
        if sub is not None
        else None
    )
    return {
        "id": in_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Fake Stripe Test Account",
        "account_tax_ids": None,
        "amount_due": due,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_paid_off_stripe": 0,
        "amount_remaining": due,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": True,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": None,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "custom_fields": None,
        "customer": customer_obj["id"],
        "customer_account": None,
        "customer_address": customer_obj["address"],
        "customer_email": customer_obj["email"],
        "customer_name": customer_obj["name"],
        "customer_phone": customer_obj["phone"],
        "customer_shipping": customer_obj["shipping"],
        "customer_tax_exempt": customer_obj["tax_exempt"],
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": None,
        "ending_balance": None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": lines,
            "has_more": False,
            "total_count": len(lines),
            "url": f"/v1/invoices/{in_id}/lines",
        },
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None,
        "number": None,
        "on_behalf_of": None,
        "parent": parent,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": period_end,
        "period_start": period_start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": customer_obj["balance"],
        "statement_descriptor": None,
        "status": "draft",
        "status_details": None,
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "subtotal": total,
        "subtotal_excluding_tax": total,
        "test_clock": None,
        "threshold_reason": None,
        "total": total,
        "total_discount_amounts": [],
        "total_excluding_tax": total,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": created,
    }


def invoice_payment(
    inpay_id: str, *, invoice_id: str, pi_id: str, amount: int, currency: str, created: int
) -> JSONDict:
    """The default ``InvoicePayment`` Stripe creates when it finalizes an invoice."""
    return {
        "id": inpay_id,
        "object": "invoice_payment",
        "amount_paid": None,
        "amount_requested": amount,
        "created": created,
        "currency": currency,
        "invoice": invoice_id,
        "is_default": True,
        "livemode": False,
        "payment": {
            "charge": None,
            "payment_intent": pi_id,
            "payment_record": None,
            "type": "payment_intent",
        },
        "status": "open",
        "status_transitions": {"canceled_at": None, "paid_at": None},
    }


def payment_intent(
    pi_id: str,
    *,
    amount: int,
    currency: str,
    customer_id: str | None,
    created: int,
    description: str | None = None,
) -> JSONDict:
    """A ``PaymentIntent`` (the fields the fake keeps; it is never confirmed over HTTP)."""
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": 0,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": f"{pi_id}_secret_{random_token(25)}",
        "confirmation_method": "automatic",
        "created": created,
        "currency": currency,
        "customer": customer_id,
        "description": description,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": {},
        "payment_method": None,
        "payment_method_types": ["card"],
        "status": "requires_payment_method",
    }


def charge(
    ch_id: str,
    *,
    amount: int,
    currency: str,
    customer_id: str | None,
    pi_id: str | None,
    created: int,
    succeeded: bool,
) -> JSONDict:
    return {
        "id": ch_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount if succeeded else 0,
        "amount_refunded": 0,
        "balance_transaction": new_id("txn_") if succeeded else None,
        "captured": succeeded,
        "created": created,
        "currency": currency,
        "customer": customer_id,
        "description": None,
        "disputed": False,
        "failure_code": None if succeeded else "card_declined",
        "failure_message": None if succeeded else "Your card was declined.",
        "livemode": False,
        "metadata": {},
        "paid": succeeded,
        "payment_intent": pi_id,
        "payment_method": new_id("pm_"),
        "receipt_url": None,
        "refunded": False,
        "status": "succeeded" if succeeded else "failed",
    }


def refund(
    re_id: str,
    *,
    amount: int,
    charge_obj: JSONDict,
    created: int,
    reason: str | None,
    metadata: dict[str, str],
) -> JSONDict:
    """A card ``Refund``; card refunds succeed at once in test mode."""
    return {
        "id": re_id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": new_id("txn_"),
        "charge": charge_obj["id"],
        "created": created,
        "currency": charge_obj["currency"],
        "destination_details": {
            "card": {
                "reference": None,
                "reference_status": "pending",
                "reference_type": "acquirer_reference_number",
                "type": "refund",
            },
            "type": "card",
        },
        "metadata": metadata,
        "payment_intent": charge_obj["payment_intent"],
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }


# --- entitlements ----------------------------------------------------------------------


def active_entitlement(ent_id: str, *, feature_id: str, lookup_key: str) -> JSONDict:
    return {
        "id": ent_id,
        "object": "entitlements.active_entitlement",
        "feature": feature_id,
        "livemode": False,
        "lookup_key": lookup_key,
    }


def active_entitlement_summary(customer_id: str, entitlements: list[JSONDict]) -> JSONDict:
    """The object of an ``entitlements.active_entitlement_summary.updated`` event."""
    return {
        "object": "entitlements.active_entitlement_summary",
        "customer": customer_id,
        "entitlements": list_object(entitlements, url=f"/v1/customer/{customer_id}/entitlements"),
        "livemode": False,
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
    decline_code: str | None = None,
) -> JSONDict:
    """``{"error": {...}}`` with the keys Stripe sends; absent ones are omitted like Stripe."""
    err: JSONDict = {}
    if code is not None:
        err["code"] = code
    if decline_code is not None:
        err["decline_code"] = decline_code
    if code is not None:
        err["doc_url"] = doc_url(code)
    err["message"] = message
    if param is not None:
        err["param"] = param
    if request_id is not None:
        err["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}?t={now()}"
    err["type"] = type
    return {"error": err}
