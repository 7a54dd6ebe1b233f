"""The user's Stripe customer: found in our database, else adopted from Stripe by verified
email, else created. Callers hold the user's turn (`services.single_flight`).

**Adoption** (contract: "Emails", "Deleted accounts stay deleted", "Whose customer"): Stripe
is asked for the email as the token gives it and in lower case (its filter is
case-sensitive). A candidate is skipped when Stripe's `metadata.userId` names someone else,
when it was kept after an account's deletion (a tombstone here, `accountDeleted` at
Stripe), or when another user already linked it. The customer is *claimed* here first (a
link row, unique per customer, so of two users racing for it one wins and the other goes
on to a customer of its own), then tagged at Stripe with the user's ID, then marked tagged;
a claim whose tagging failed is finished on the user's next attempt. An adopted customer's
subscriptions are read at once: it may already pay for a plan.

**Creation** carries an idempotency key derived from the user (and from the customer it
replaces, if any), so a retry after a lost response returns the same customer.

No database connection is held while Stripe is asked; each write is a short user
transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime

from db import customers as db_customers
from db import notifications as db_notifications
from db import subscriptions as db_subscriptions
from db import tombstones as db_tombstones
from db import users as db_users
from db.connection import Pg, Pool
from db.customers import CustomerRecord
from db.locks import user_transaction
from db.users import UserRecord
from services import subscriptions
from services.emails import lookup_spellings
from services.errors import Unauthenticated
from services.plans import PlanCatalog
from services.stripe_gateway import StripeCustomer, StripeGateway

log = logging.getLogger(__name__)

SOURCE = "billing-api"
# Set at Stripe on a customer kept after its account was deleted: never adopt it again.
RELEASED = "accountDeleted"

CUSTOMER_DELETED_MESSAGE = (
    "Your billing account was deleted, so your subscription has ended. "
    "Subscribe again at any time to restore paid features."
)


def display_name(user: UserRecord) -> str | None:
    return " ".join(part for part in (user.first_name, user.last_name) if part) or None


def _creation_key(user: UserRecord, params: dict[str, object], replacing: str | None) -> str:
    """Same account, same parameters, same replaced customer → same key (one customer).

    The replaced customer is the one Stripe no longer has, whether a checkout found it gone
    or its `customer.deleted` unlinked it first: either way the next creation is a new
    request, never a replay of the one that created the deleted customer (which would hand
    it back for 24 hours).

    The account's creation time is part of the key: the same `sub` signing in afresh after
    deleting their account is a new account, and must not get the old customer back from
    Stripe's replay of the old key. The parameters' digest is part of it because Stripe
    refuses a key reused with other parameters; a changed email must not wedge customer
    creation for 24 hours.
    """
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    account = int(user.created_at.timestamp() * 1_000_000)
    return f"{SOURCE}:customer:{user.id}:{replacing or 'first'}:{account}:{digest}"


async def customer_gone(pg: Pg, user_id: str, customer_id: str) -> bool:
    """Stripe no longer has the user's customer (deleted in the Dashboard, say): unlink it,
    end the subscriptions it carried (Stripe ended them) and tell the user, once. Inside
    the user's transaction; False when it was not linked."""
    if not await db_customers.unlink(pg, user_id, customer_id):
        return False
    await db_subscriptions.mark_canceled(pg, user_id)
    await db_notifications.add(pg, user_id, "customer_deleted", CUSTOMER_DELETED_MESSAGE)
    return True


async def link(
    pg: Pg, user_id: str, customer: StripeCustomer, *, tagged: bool = True
) -> CustomerRecord | None:
    """Link the user to the Stripe customer, inside the user's transaction; from now on
    they have a (free) subscription row. None when the user already has a customer or the
    customer is someone else's."""
    record = await db_customers.link(
        pg,
        user_id=user_id,
        stripe_customer_id=customer.id,
        email=customer.email,
        name=customer.name,
        phone=customer.phone,
        created_at=datetime.fromtimestamp(customer.created, UTC),
        tagged=tagged,
    )
    if record is not None:
        await db_subscriptions.ensure_free(pg, user_id)
        await db_subscriptions.set_free_status(pg, user_id, "active")
    return record


async def current(pool: Pool, user_id: str) -> CustomerRecord | None:
    async with pool.connection() as pg:
        return await db_customers.get(pg, user_id)


async def get_or_create(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    user: UserRecord,
    *,
    replacing: str | None = None,
) -> CustomerRecord:
    """The user's customer; `replacing` names a linked customer Stripe no longer has, which
    is ended (as its `customer.deleted` would) and replaced. `Unauthenticated` when the
    account was deleted meanwhile; Stripe failures as `PAYMENT_PROVIDER_ERROR`."""
    existing = await current(pool, user.id)
    if existing is not None and existing.stripe_customer_id != replacing:
        if not existing.tagged:
            await _tag(pool, stripe, user, existing.stripe_customer_id)
        return existing
    stripe.require()
    if existing is not None:
        async with user_transaction(pool, user.id) as pg:
            await customer_gone(pg, user.id, existing.stripe_customer_id)
        log.info("user %s: customer %s is gone from Stripe, replacing it", user.id, replacing)
    adopted = await _adopt(pool, stripe, plans, user, exclude=replacing)
    if adopted is not None:
        return adopted
    metadata = {"userId": user.id, "source": SOURCE}
    params: dict[str, object] = {
        "email": user.email,
        "name": display_name(user),
        "phone": user.phone,
        "metadata": metadata,
    }
    if replacing is None:
        async with pool.connection() as pg:
            replacing = await db_customers.previous(pg, user.id)
    created = await stripe.create_customer(
        email=user.email,
        name=display_name(user),
        phone=user.phone,
        metadata=metadata,
        idempotency_key=_creation_key(user, params, replacing),
    )
    async with user_transaction(pool, user.id) as pg:
        await _require_user(pg, user.id)
        record = await link(pg, user.id, created)
        if record is None:  # linked meanwhile (another process's request of this user)
            record = await db_customers.get(pg, user.id)
            assert record is not None
    return record


async def _require_user(pg: Pg, user_id: str) -> None:
    if await db_users.get(pg, user_id) is None:
        raise Unauthenticated("This account no longer exists")  # deleted meanwhile


async def _adopt(
    pool: Pool,
    stripe: StripeGateway,
    plans: PlanCatalog,
    user: UserRecord,
    *,
    exclude: str | None,
) -> CustomerRecord | None:
    """A customer Stripe already has for this verified email that nobody else may claim."""
    if not user.email or not user.email_verified:
        return None
    candidates: dict[str, StripeCustomer] = {}
    for spelling in lookup_spellings(user.email):
        for found in await stripe.find_customers_by_email(spelling):
            candidates.setdefault(found.id, found)
    for candidate in candidates.values():
        owner = candidate.metadata.get("userId")
        if candidate.id == exclude or owner not in (None, "", user.id):
            continue
        if candidate.metadata.get(RELEASED):
            continue
        claimed = await _claim(pool, user, candidate, tagged=owner == user.id)
        if claimed is None:
            continue
        if claimed.stripe_customer_id != candidate.id:
            return claimed  # the user got another customer meanwhile
        if not claimed.tagged:
            await _tag(pool, stripe, user, candidate.id)
        log.info("user %s: adopted existing Stripe customer %s", user.id, candidate.id)
        await subscriptions.refresh(pool, stripe, plans, user.id, candidate.id)
        return claimed
    return None


async def _claim(
    pool: Pool, user: UserRecord, candidate: StripeCustomer, *, tagged: bool
) -> CustomerRecord | None:
    """Our link to the candidate, taken before Stripe is told; None when the candidate is
    a deleted account's or another user's. Returns the user's other customer when they got
    one meanwhile."""
    async with user_transaction(pool, user.id) as pg:
        await _require_user(pg, user.id)
        if await db_tombstones.for_customer(pg, candidate.id) is not None:
            return None
        record = await link(pg, user.id, candidate, tagged=tagged)
        if record is not None:
            return record
        return await db_customers.get(pg, user.id)  # None: someone else's


async def _tag(pool: Pool, stripe: StripeGateway, user: UserRecord, customer_id: str) -> None:
    """Stripe's metadata names the user who claimed the customer."""
    await stripe.update_customer(
        customer_id,
        {"metadata": {"userId": user.id}},
        idempotency_key=f"{SOURCE}:adopt:{user.id}:{customer_id}",
    )
    async with user_transaction(pool, user.id) as pg:
        await db_customers.mark_tagged(pg, user.id, customer_id)
