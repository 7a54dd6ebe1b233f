"""A serving process leaves out what it never uses, and still does everything it must."""

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
    loaded = [name for name in ("requests", "cryptography", "pygments")
              if sys.modules.get(name) is not None]
    print(json.dumps({"loaded": loaded, "subject": identity.subject,
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


def test_a_worker_without_jwks_loads_no_crypto_and_still_verifies_tokens() -> None:
    result = probe()
    assert result == {"loaded": [], "subject": "u1", "stripe_client": "HTTPXClient"}


def test_a_worker_with_jwks_keeps_what_rsa_and_ec_keys_need() -> None:
    result = probe(AUTH_JWKS_URL="https://issuer.example/.well-known/jwks.json")
    assert result["loaded"] == ["cryptography"]
    assert result["subject"] == "u1"
