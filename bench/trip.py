"""One request's trip through the code: the functions it stops in, the files it enters, and
how often it climbs back up (a call from a lower layer into a higher one).

Layers, top to bottom: `app` (HTTP edge), `schema`, `resolvers`, `services`, `db`. A
request should go down: edge → resolver → service → db. Every call from a lower layer into
a higher one (a resolver calling back into `app`, say) is a climb. The trip is a
`createCheckoutSession` of a new user against the fake Stripe, served in-process; the
app's own start-up and the first request (which provisions the user) are not counted.

    .venv/bin/python -m bench.trip
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from tests.support.processes import ROOT, throwaway_database
from tests.support.stripe import FakeStripe
from tests.support.tokens import TEST_JWT_SECRET, make_token

LAYERS = ("app", "schema", "resolvers", "services", "db")
CHECKOUT = "mutation { createCheckoutSession { id url } }"


def _layer(path: str) -> int | None:
    try:
        relative = Path(path).resolve().relative_to(ROOT)
    except ValueError:
        return None
    top = relative.parts[0] if relative.parts else ""
    return LAYERS.index(top) if top in LAYERS else None


class Trip:
    def __init__(self) -> None:
        self.stops: list[tuple[str, str]] = []
        self.climbs: set[tuple[str, str]] = set()
        self.climbed = 0  # every upward call, not only distinct ones

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        callee = frame.f_code
        layer = _layer(callee.co_filename)
        if layer is None:
            return
        where = str(Path(callee.co_filename).resolve().relative_to(ROOT))
        stop = (where, callee.co_qualname)
        if stop not in self.stops:
            self.stops.append(stop)
        caller = frame.f_back
        while caller is not None and _layer(caller.f_code.co_filename) is None:
            caller = caller.f_back
        if caller is None:
            return
        caller_layer = _layer(caller.f_code.co_filename)
        assert caller_layer is not None
        if layer < caller_layer:
            self.climbed += 1
            caller_where = str(Path(caller.f_code.co_filename).resolve().relative_to(ROOT))
            self.climbs.add(
                (f"{caller_where}:{caller.f_code.co_qualname}", f"{where}:{callee.co_qualname}")
            )


async def walk(database_url: str, fake: FakeStripe, data_dir: str) -> Trip:
    from app.main import create_app
    from app.settings import Settings

    price = fake.add_price(unit_amount=1500)["id"]
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        auth_jwt_secret=TEST_JWT_SECRET,
        stripe_secret_key="sk_test_trip",
        stripe_api_base=fake.url,
        stripe_price_pro=price,
        run_worker=False,
        data_dir=Path(data_dir),
        access_log=False,
    )
    bearer = make_token("traveller")
    trip = Trip()
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            # Another user's checkout first: the document is parsed and checked once, and
            # the trip below is the steady state.
            warm = _auth(make_token("warm-up"))
            await client.post("/graphql", json={"query": CHECKOUT}, headers=warm)
            await client.post("/graphql", json={"query": "{ me { id } }"}, headers=_auth(bearer))
            sys.setprofile(trip.profile)
            try:
                response = await client.post(
                    "/graphql", json={"query": CHECKOUT}, headers=_auth(bearer)
                )
            finally:
                sys.setprofile(None)
            assert "errors" not in response.json(), response.text
    return trip


def _auth(bearer: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {bearer}"}


def main() -> None:
    with FakeStripe() as fake, throwaway_database() as url, tempfile.TemporaryDirectory() as tmp:
        trip = asyncio.run(walk(url, fake, tmp))
    files = sorted({where for where, _ in trip.stops})
    print(
        f"createCheckoutSession: {len(trip.stops)} functions in {len(files)} files; "
        f"{trip.climbed} calls back up ({len(trip.climbs)} distinct)"
    )
    for where in files:
        print(f"  {where}")
    for caller, callee in sorted(trip.climbs):
        print(f"  climb: {caller} -> {callee}")


if __name__ == "__main__":
    main()
