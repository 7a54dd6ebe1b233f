"""The plans users can subscribe to: `free` built in, `PRO` from the environment, more from a file.

A plans file (`PLANS_FILE`, TOML) adds plans or describes `PRO` further:

    [[plans]]
    id = "TEAM"
    name = "Team"
    price_id = "price_123"
    amount = 4900        # smallest currency unit
    currency = "usd"
    interval = "month"
    features = ["seats", "api"]   # entitlement keys the plan grants
    trial_days = 14               # Checkout options
    allow_promotion_codes = true
    automatic_tax = false

`free` is built in; its features can be given with `[[plans]] id = "free"` (no price).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

FREE_PLAN_ID = "free"
PRO_PLAN_ID = "PRO"
# The plan of a subscription whose price no configured plan lists (`priceId` says which).
CUSTOM_PLAN_ID = "custom"


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    name: str
    price_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    interval: str | None = None
    features: tuple[str, ...] = ()  # entitlement keys
    trial_days: int | None = None  # Checkout: days of free trial
    allow_promotion_codes: bool = False  # Checkout: a promotion code field
    automatic_tax: bool = False  # Checkout: Stripe Tax computes tax


class _PlanEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    name: str = Field(min_length=1, max_length=100)
    price_id: str | None = Field(default=None, pattern=r"^price_[A-Za-z0-9]+$")
    amount: int | None = Field(default=None, ge=0)
    currency: str | None = Field(default=None, pattern=r"^[a-z]{3}$")
    interval: str | None = Field(default=None, pattern=r"^(day|week|month|year)$")
    features: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]] = []
    trial_days: int | None = Field(default=None, ge=1, le=730)
    allow_promotion_codes: bool = False
    automatic_tax: bool = False


class _PlansFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plans: list[_PlanEntry] = []


class PlansFileError(Exception):
    pass


class PlanCatalog:
    """Built once at start-up; looked up by plan ID and by Stripe price ID."""

    def __init__(self, plans: list[Plan]) -> None:
        self._plans = list(plans)
        self._by_id = {plan.id: plan for plan in plans}
        self._by_price = {plan.price_id: plan for plan in plans if plan.price_id}

    @property
    def all(self) -> list[Plan]:
        return list(self._plans)

    def get(self, plan_id: str) -> Plan | None:
        return self._by_id.get(plan_id)

    def for_price(self, price_id: str | None) -> Plan | None:
        return self._by_price.get(price_id) if price_id else None

    @classmethod
    def load(cls, *, pro_price_id: str | None, plans_file: Path | None) -> PlanCatalog:
        plans: dict[str, Plan] = {
            FREE_PLAN_ID: Plan(id=FREE_PLAN_ID, name="Free", amount=0),
            PRO_PLAN_ID: Plan(id=PRO_PLAN_ID, name="Pro", price_id=pro_price_id),
        }
        for entry in _read_plans_file(plans_file) if plans_file else []:
            if entry.id == CUSTOM_PLAN_ID:
                raise PlansFileError(f"{plans_file}: {CUSTOM_PLAN_ID!r} is reserved")
            if entry.id == FREE_PLAN_ID:
                if entry.price_id or entry.trial_days:
                    raise PlansFileError(
                        f"{plans_file}: the free plan is built in and has no price or trial"
                    )
                plans[FREE_PLAN_ID] = Plan(
                    id=FREE_PLAN_ID,
                    name=entry.name,
                    amount=0,
                    features=tuple(entry.features),
                )
                continue
            price_id = entry.price_id
            if entry.id == PRO_PLAN_ID and pro_price_id:
                price_id = pro_price_id  # STRIPE_PRICE_PRO wins over the file
            plans[entry.id] = Plan(
                id=entry.id,
                name=entry.name,
                price_id=price_id,
                amount=entry.amount,
                currency=entry.currency,
                interval=entry.interval,
                features=tuple(entry.features),
                trial_days=entry.trial_days,
                allow_promotion_codes=entry.allow_promotion_codes,
                automatic_tax=entry.automatic_tax,
            )
        prices = [plan.price_id for plan in plans.values() if plan.price_id]
        if len(prices) != len(set(prices)):
            raise PlansFileError("two plans share one Stripe price ID")
        return cls(list(plans.values()))


def _read_plans_file(path: Path) -> list[_PlanEntry]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        entries = _PlansFile.model_validate(data).plans
    except OSError as exc:
        raise PlansFileError(f"cannot read plans file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise PlansFileError(f"plans file {path} is invalid: {exc}") from exc
    ids = [entry.id for entry in entries]
    if len(ids) != len(set(ids)):
        raise PlansFileError(f"plans file {path} names a plan twice")
    return entries
