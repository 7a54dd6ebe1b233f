"""Small helpers the tests share: tokens and GraphQL calls."""

from __future__ import annotations

import time
from typing import Any

import httpx
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


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def sign_up(client: httpx.AsyncClient, bearer: str) -> None:
    """The user's first request, which provisions them."""
    body = await gql(client, "{ me { id } }", token=bearer)
    assert "errors" not in body, body
