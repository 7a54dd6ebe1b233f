"""Leaf types, which resolve from their own fields only, and the mappers that build each
from its record (`to_*`)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from db.customers import CustomerRecord
from db.invoices import InvoiceRecord
from db.notifications import NotificationRecord
from db.subscriptions import SubscriptionRecord
from db.usage import UsageRecordRow
from services.plan_management import PlanChangePreview as PlanChangePreviewRecord
from services.plans import PRO_PLAN_ID
from services.plans import Plan as PlanRecord


@strawberry.enum
class SubscriptionStatus(Enum):
    ACTIVE = "active"
    TRIALING = "trialing"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    UNPAID = "unpaid"
    PAUSED = "paused"


@strawberry.type
class Customer:
    id: strawberry.ID = strawberry.field(description="The Stripe customer ID, cus_…")
    email: str | None
    name: str | None
    phone: str | None
    created_at: datetime


@strawberry.type
class Subscription:
    plan_id: strawberry.ID = strawberry.field(
        description='"free", a plan\'s id such as "PRO", or "custom" for a price no plan lists'
    )
    status: SubscriptionStatus
    stripe_subscription_id: str | None
    price_id: str | None
    cancel_at_period_end: bool = strawberry.field(
        description="A scheduled cancellation takes effect at the end of the current period"
    )
    cancel_at: datetime | None = strawberry.field(
        description="When a scheduled cancellation takes effect (from cancel_at_period_end or "
        "cancel_at, as the Billing Portal sets it); null when none is scheduled"
    )
    current_period_end: datetime | None
    trial_end: datetime | None = strawberry.field(description="When a trial ends, if any")
    updated_at: datetime


@strawberry.enum
class InvoiceStatus(Enum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    UNCOLLECTIBLE = "uncollectible"
    VOID = "void"


@strawberry.type(description="An invoice of the caller's customer, from our copy of Stripe's")
class Invoice:
    id: strawberry.ID = strawberry.field(description="Stripe's invoice ID, in_…")
    number: str | None
    status: InvoiceStatus
    currency: str
    amount_due: int = strawberry.field(description="In the currency's smallest unit")
    amount_paid: int = strawberry.field(description="In the currency's smallest unit")
    created_at: datetime
    period_start: datetime | None
    period_end: datetime | None
    hosted_invoice_url: str | None = strawberry.field(
        description="Stripe's page where the invoice can be viewed and paid"
    )
    invoice_pdf: str | None = strawberry.field(description="A link to the invoice as a PDF")


@strawberry.type(description="What changing to a plan would charge now, changing nothing")
class PlanChangePreview:
    plan_id: strawberry.ID
    amount_due: int = strawberry.field(
        description="What the next invoice would charge now, in the currency's smallest unit"
    )
    currency: str
    proration_date: datetime = strawberry.field(
        description="The instant the prorations are computed for"
    )


@strawberry.type
class Plan:
    id: strawberry.ID
    name: str
    price_id: str | None
    amount: int | None = strawberry.field(description="In the currency's smallest unit")
    currency: str | None
    interval: str | None


@strawberry.type
class Notification:
    id: strawberry.ID
    kind: str = strawberry.field(
        description="customer_deleted, duplicate_subscription_refunded, trial_will_end or "
        "payment_failed"
    )
    message: str
    url: str | None = strawberry.field(
        description="Where the user acts on it: for payment_failed, the invoice's hosted page "
        "(Stripe's hosted_invoice_url), where it can be paid"
    )
    created_at: datetime


@strawberry.type
class UsageRecord:
    id: strawberry.ID
    metric: str
    quantity: int
    created_at: datetime


@strawberry.type
class CheckoutSession:
    id: strawberry.ID
    url: str


@strawberry.type
class PortalSession:
    url: str


@strawberry.input
class CreateCheckoutSessionInput:
    plan_id: strawberry.ID = strawberry.field(default=strawberry.ID(PRO_PLAN_ID))


@strawberry.input
class CancelSubscriptionInput:
    at_period_end: bool = strawberry.field(
        default=True,
        description="True (the default): at the end of the paid period; false: at once",
    )


@strawberry.input
class ChangePlanInput:
    plan_id: strawberry.ID
    proration_date: datetime | None = strawberry.field(
        default=None,
        description="The prorationDate of the previewPlanChange the user confirmed, so the "
        "change charges exactly what was previewed; at most an hour old. Omitted: now",
    )


@strawberry.input(description="An omitted field is left as it is; null clears it.")
class UpdateProfileInput:
    first_name: str | None = strawberry.UNSET
    last_name: str | None = strawberry.UNSET
    phone: str | None = strawberry.UNSET


def to_customer(record: CustomerRecord) -> Customer:
    return Customer(
        id=strawberry.ID(record.stripe_customer_id),
        email=record.email,
        name=record.name,
        phone=record.phone,
        created_at=record.created_at,
    )


def to_subscription(record: SubscriptionRecord) -> Subscription:
    return Subscription(
        plan_id=strawberry.ID(record.plan_id),
        status=SubscriptionStatus(record.status),
        stripe_subscription_id=record.stripe_subscription_id,
        price_id=record.price_id,
        cancel_at_period_end=record.cancel_at_period_end,
        cancel_at=record.cancel_at,
        current_period_end=record.current_period_end,
        trial_end=record.trial_end,
        updated_at=record.updated_at,
    )


def to_usage_record(record: UsageRecordRow) -> UsageRecord:
    return UsageRecord(
        id=strawberry.ID(str(record.id)),
        metric=record.metric,
        quantity=record.quantity,
        created_at=record.created_at,
    )


def to_notification(record: NotificationRecord) -> Notification:
    return Notification(
        id=strawberry.ID(str(record.id)),
        kind=record.kind,
        message=record.message,
        url=record.url,
        created_at=record.created_at,
    )


def to_plan(plan: PlanRecord) -> Plan:
    return Plan(
        id=strawberry.ID(plan.id),
        name=plan.name,
        price_id=plan.price_id,
        amount=plan.amount,
        currency=plan.currency,
        interval=plan.interval,
    )


def to_invoice(record: InvoiceRecord) -> Invoice:
    return Invoice(
        id=strawberry.ID(record.id),
        number=record.number,
        status=InvoiceStatus(record.status),
        currency=record.currency,
        amount_due=record.amount_due,
        amount_paid=record.amount_paid,
        created_at=record.created_at,
        period_start=record.period_start,
        period_end=record.period_end,
        hosted_invoice_url=record.hosted_invoice_url,
        invoice_pdf=record.invoice_pdf,
    )


def to_plan_change_preview(preview: PlanChangePreviewRecord) -> PlanChangePreview:
    return PlanChangePreview(
        plan_id=strawberry.ID(preview.plan_id),
        amount_due=preview.amount_due,
        currency=preview.currency,
        proration_date=preview.proration_date,
    )
