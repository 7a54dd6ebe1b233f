"""Bearer tokens as the identity provider would sign them, for tests and benchmarks."""

from __future__ import annotations

import time
from typing import Any

import jwt

TEST_JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


def make_token(
    sub: str = "user-1",
    *,
    secret: str = TEST_JWT_SECRET,
    algorithm: str = "HS256",
    expires_in: int = 3600,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A token for `sub` (a verified `<sub>@example.com` unless `claims` say otherwise;
    a claim set to None is left out), valid for `expires_in` seconds."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": sub,
        "iat": now,
        "exp": now + expires_in,
        "email": f"{sub}@example.com",
        "email_verified": True,
    }
    payload.update(claims)
    payload = {key: value for key, value in payload.items() if value is not None}
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)
