"""Migrations keep what the previous revision held: nothing is lost on the way up or down."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from db import migrate
from db.urls import with_database


@pytest.fixture
async def old_database(pg_server_url: str) -> AsyncIterator[str]:
    """A database migrated to 0005, the revision before every subscription was mirrored."""
    name = f"billing_migration_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = with_database(pg_server_url, name)
        await asyncio.to_thread(migrate.upgrade, url, "0005")
        yield url
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_one_subscription_row_a_user_becomes_the_stripe_row_and_a_free_row(
    old_database: str,
) -> None:
    db = await asyncpg.connect(old_database)
    try:
        await db.execute(
            """
            INSERT INTO users (id, email) VALUES ('paid', 'p@example.com'), ('free', 'f@x.io');
            INSERT INTO customers (user_id, stripe_customer_id) VALUES ('paid', 'cus_paid'),
                ('free', 'cus_free');
            INSERT INTO subscriptions (user_id, plan_id, status, stripe_subscription_id,
                price_id, cancel_at_period_end, current_period_end)
            VALUES ('paid', 'PRO', 'past_due', 'sub_1', 'price_1', true, '2027-01-01'),
                   ('free', 'free', 'active', NULL, NULL, false, NULL);
            INSERT INTO sync_jobs (user_id, kind) VALUES ('paid', 'profile_sync');
            """
        )
        await db.execute(
            "INSERT INTO stripe_events (id, type, created_at, payload) "
            "VALUES ('evt_1', 'customer.updated', now(), $1::jsonb)",
            json.dumps({"id": "evt_1", "data": {"object": {"id": "cus_paid"}}}),
        )
        await asyncio.to_thread(migrate.upgrade, old_database)

        rows = await db.fetch(
            "SELECT user_id, plan_id, status, stripe_subscription_id, stripe_customer_id, "
            "price_id, cancel_at_period_end FROM subscriptions ORDER BY user_id, id"
        )
        assert [tuple(r) for r in rows] == [
            ("free", "free", "active", None, None, None, False),
            ("paid", "PRO", "past_due", "sub_1", "cus_paid", "price_1", True),
            ("paid", "free", "active", None, None, None, False),
        ]
        job = await db.fetchrow("SELECT subject, fields FROM sync_jobs")
        assert (job["subject"], sorted(job["fields"])) == (
            "",
            ["email", "first_name", "last_name", "phone"],
        )
        payload = await db.fetchval("SELECT payload FROM stripe_events")
        assert json.loads(payload)["data"]["object"]["id"] == "cus_paid"
        assert (
            await db.fetchval(
                "SELECT relpersistence::text FROM pg_class WHERE relname = 'rate_limits'"
            )
            == "u"
        )

        # And back down: one row a user again, the one that matters.
        await asyncio.to_thread(migrate.downgrade, old_database, "0005")
        rows = await db.fetch(
            "SELECT user_id, plan_id, status, stripe_subscription_id FROM subscriptions "
            "ORDER BY user_id"
        )
        assert [tuple(r) for r in rows] == [
            ("free", "free", "active", None),
            ("paid", "PRO", "past_due", "sub_1"),
        ]
        event = await db.fetchval("SELECT payload FROM stripe_events")
        assert json.loads(event)["id"] == "evt_1"
    finally:
        await db.close()
