"""createCheckoutSession end to end against the fake Stripe at zero latency.

Prints p50/p99 of the whole mutation, of the same Stripe calls made bare with the SDK in
the same run, and the difference: our server's overhead per call.

    .venv/bin/python -m bench.checkout [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
import stripe

from bench.common import summary, token
from tests.support.processes import server_process, throwaway_database
from tests.support.stripe import FakeStripe

MUTATION = "mutation { createCheckoutSession { id url } }"


async def through_the_api(base: str, users: list[str]) -> list[float]:
    samples = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for user in users:
            headers = {"Authorization": f"Bearer {token(user)}"}
            started = time.perf_counter()
            response = await client.post("/graphql", json={"query": MUTATION}, headers=headers)
            samples.append(time.perf_counter() - started)
            body = response.json()
            assert "errors" not in body, body
    return samples


async def bare_sdk(
    fake: FakeStripe, price: str, users: list[str], *, new_customer: bool
) -> list[float]:
    """The Stripe calls the mutation makes, straight from the SDK."""
    http = stripe.HTTPXClient()
    client = stripe.StripeClient(
        "sk_test_bench", base_addresses={"api": fake.url}, http_client=http
    )
    samples = []
    try:
        for user in users:
            started = time.perf_counter()
            if new_customer:
                await client.v1.customers.list_async({"email": f"{user}@example.com", "limit": 10})
                customer = await client.v1.customers.create_async(
                    {
                        "email": f"{user}@example.com",
                        "metadata": {"userId": user, "source": "billing-api"},
                    },
                    {"idempotency_key": f"bench:{user}"},
                )
                customer_id = customer.id
            else:
                customer_id = users[0]
            await client.v1.checkout.sessions.create_async(
                {
                    "mode": "subscription",
                    "customer": customer_id,
                    "line_items": [{"price": price, "quantity": 1}],
                    "client_reference_id": user,
                    "metadata": {"userId": user},
                    "subscription_data": {"metadata": {"userId": user}},
                    "success_url": "http://localhost:3000/billing?checkout=success&session_id={CHECKOUT_SESSION_ID}",
                    "cancel_url": "http://localhost:3000/billing?checkout=canceled",
                }
            )
            samples.append(time.perf_counter() - started)
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]
    return samples


def report(name: str, api: list[float], bare: list[float]) -> None:
    a, b = summary(api), summary(bare)
    print(f"\n{name} ({len(api)} calls, sequential)")
    print(f"  {'':28} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    print(f"  {'createCheckoutSession':28} {a['p50']:8.2f} {a['p99']:8.2f} {a['mean']:8.2f}")
    print(f"  {'same Stripe calls, bare SDK':28} {b['p50']:8.2f} {b['p99']:8.2f} {b['mean']:8.2f}")
    print(
        f"  {'server overhead':28} {a['p50'] - b['p50']:8.2f} {a['p99'] - b['p99']:8.2f} "
        f"{a['mean'] - b['mean']:8.2f}"
    )


async def measure(fake: FakeStripe, price: str, base: str, calls: int) -> None:
    await through_the_api(base, [f"warm-{n}" for n in range(20)])
    await bare_sdk(fake, price, [f"bwarm-{n}" for n in range(20)], new_customer=True)

    new_users = [f"new-{n}" for n in range(calls)]
    api_new = await through_the_api(base, new_users)
    bare_new = await bare_sdk(fake, price, [f"bnew-{n}" for n in range(calls)], new_customer=True)
    report("New user: find by email, create customer, create session", api_new, bare_new)

    returning = ["new-0"] * calls
    api_again = await through_the_api(base, returning)
    customer_id = next(
        c["id"] for c in fake.customers.values() if c["metadata"].get("userId") == "new-0"
    )
    bare_again = await bare_sdk(fake, price, [customer_id] * calls, new_customer=False)
    report("Returning user: create session only", api_again, bare_again)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    calls = parser.parse_args().calls
    with FakeStripe() as fake, throwaway_database() as database_url:
        price = fake.add_price(unit_amount=1500)["id"]
        env = {
            "DATABASE_URL": database_url,
            "STRIPE_SECRET_KEY": "sk_test_bench",
            "STRIPE_API_BASE": fake.url,
            "STRIPE_PRICE_PRO": price,
        }
        with server_process(env) as base:
            asyncio.run(measure(fake, price, base, calls))


if __name__ == "__main__":
    main()
