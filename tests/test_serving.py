"""A serving process built by the production factory does everything it must, with no
module hidden from it: nothing in `sys.modules` is a placeholder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# In a fresh interpreter: this test process has long since imported everything.
PROBE = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from app.process.serving import production_app

    production_app()
    import jwt, stripe
    from app.auth import Authenticator

    secret = "s" * 40
    now = int(time.time())
    token = jwt.encode({"sub": "u1", "iat": now, "exp": now + 60}, secret, algorithm="HS256")
    authenticator = Authenticator(hs_secret=secret, jwks=None, issuer=None, audience=None)
    identity = asyncio.run(authenticator.identify(f"Bearer {token}"))
    hidden = sorted(name for name, module in sys.modules.items() if module is None)
    print(json.dumps({"hidden": hidden, "subject": identity.subject,
                      "stripe_client": stripe.HTTPXClient.__name__}))
    """
)


def probe(**env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": "postgresql://localhost/unused",
            "AUTH_JWT_SECRET": "s" * 40,
            "AUTH_JWKS_URL": "",
            **env,
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def test_a_worker_verifies_tokens_and_hides_no_module() -> None:
    result = probe()
    assert result == {"hidden": [], "subject": "u1", "stripe_client": "HTTPXClient"}


def test_a_worker_with_jwks_verifies_tokens_too() -> None:
    result = probe(AUTH_JWKS_URL="https://issuer.example/.well-known/jwks.json")
    assert result == {"hidden": [], "subject": "u1", "stripe_client": "HTTPXClient"}
