"""Bearer tokens: what is refused, what is accepted, and key rotation at the provider."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.auth import JwksCache
from tests.helpers import error_codes, gql
from tests.support.loopback import LoopbackServer
from tests.support.tokens import TEST_JWT_SECRET, make_token

ME = "{ me { id } }"


async def me_codes(client: httpx.AsyncClient, bearer: str | None) -> list[str]:
    return error_codes(await gql(client, ME, token=bearer))


async def test_a_missing_token_is_unauthenticated(client: httpx.AsyncClient) -> None:
    body = await gql(client, ME)
    assert body["data"] is None
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_an_expired_token_is_unauthenticated(client: httpx.AsyncClient) -> None:
    body = await gql(client, ME, token=make_token(expires_in=-120))
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert "expired" in body["errors"][0]["message"]


async def test_a_token_expired_within_the_leeway_still_works(client: httpx.AsyncClient) -> None:
    assert await me_codes(client, make_token(expires_in=-5)) == []


async def test_a_badly_signed_token_is_unauthenticated(client: httpx.AsyncClient) -> None:
    forged = make_token(secret="another-secret-that-is-long-enough-0123456789")
    assert await me_codes(client, forged) == ["UNAUTHENTICATED"]


async def test_a_tampered_payload_is_unauthenticated(client: httpx.AsyncClient) -> None:
    header, _, signature = make_token("victim").split(".")
    payload = jwt.utils.base64url_encode(json.dumps({"sub": "attacker", "exp": 2**31}).encode())
    assert await me_codes(client, f"{header}.{payload.decode()}.{signature}") == ["UNAUTHENTICATED"]


async def test_an_alg_none_token_is_unauthenticated(client: httpx.AsyncClient) -> None:
    unsigned = jwt.encode({"sub": "user-1", "exp": 2**31}, "", algorithm="none")
    assert await me_codes(client, unsigned) == ["UNAUTHENTICATED"]


async def test_a_token_without_exp_is_unauthenticated(client: httpx.AsyncClient) -> None:
    assert await me_codes(client, make_token(exp=None)) == ["UNAUTHENTICATED"]


async def test_a_token_without_sub_is_unauthenticated(client: httpx.AsyncClient) -> None:
    no_sub = jwt.encode({"exp": 2**31}, TEST_JWT_SECRET, algorithm="HS256")
    assert await me_codes(client, no_sub) == ["UNAUTHENTICATED"]


@pytest.mark.parametrize("header", ["Token abc", "Bearer", "bearer  ", "Bearer a.b"])
async def test_a_malformed_authorization_header_is_unauthenticated(
    client: httpx.AsyncClient, header: str
) -> None:
    response = await client.post("/graphql", json={"query": ME}, headers={"Authorization": header})
    assert error_codes(response.json()) == ["UNAUTHENTICATED"]


async def test_the_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", json={"query": ME}, headers={"Authorization": f"bearer {make_token()}"}
    )
    assert response.json() == {"data": {"me": {"id": "user-1"}}}


async def test_an_unauthenticated_request_creates_no_user(
    client: httpx.AsyncClient, pg: Any
) -> None:
    await gql(client, ME, token=make_token(expires_in=-120))
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


class TestIssuerAndAudience:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"auth_issuer": "https://auth.example.com/", "auth_audience": "billing-api"}

    async def test_the_right_issuer_and_audience_are_accepted(
        self, client: httpx.AsyncClient
    ) -> None:
        bearer = make_token(iss="https://auth.example.com/", aud="billing-api")
        assert await me_codes(client, bearer) == []

    @pytest.mark.parametrize(
        "claims",
        [
            {"iss": "https://evil.example.com/", "aud": "billing-api"},
            {"iss": "https://auth.example.com/", "aud": "another-api"},
            {"aud": "billing-api"},
            {"iss": "https://auth.example.com/"},
        ],
    )
    async def test_a_wrongly_addressed_token_is_unauthenticated(
        self, client: httpx.AsyncClient, claims: dict[str, Any]
    ) -> None:
        assert await me_codes(client, make_token(**claims)) == ["UNAUTHENTICATED"]


async def test_audience_is_not_checked_when_unset(client: httpx.AsyncClient) -> None:
    assert await me_codes(client, make_token(aud="anything")) == []


# --- JWKS (RS256 / ES256) -------------------------------------------------------------------


class Provider:
    """An identity provider on loopback: signing keys and the JWKS it publishes."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, Any]] = {}
        self.published: list[str] = []
        self.fetches = 0

        async def jwks(request: Request) -> JSONResponse:
            self.fetches += 1
            return JSONResponse({"keys": [self.jwk(kid) for kid in self.published]})

        self.server = LoopbackServer(Starlette(routes=[Route("/.well-known/jwks.json", jwks)]))

    @property
    def jwks_url(self) -> str:
        return f"{self.server.url}/.well-known/jwks.json"

    def add_key(self, kid: str, algorithm: str = "RS256", *, publish: bool = True) -> None:
        private: Any
        if algorithm == "RS256":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            private = ec.generate_private_key(ec.SECP256R1())
        self.keys[kid] = (algorithm, private)
        if publish:
            self.published.append(kid)

    def jwk(self, kid: str) -> dict[str, Any]:
        algorithm, private = self.keys[kid]
        algo = jwt.algorithms.RSAAlgorithm if algorithm == "RS256" else jwt.algorithms.ECAlgorithm
        data: dict[str, Any] = json.loads(algo.to_jwk(private.public_key()))
        return {**data, "kid": kid, "alg": algorithm, "use": "sig"}

    def token(self, kid: str, sub: str = "jwks-user", **claims: Any) -> str:
        algorithm, private = self.keys[kid]
        return make_token(sub, secret=private, algorithm=algorithm, headers={"kid": kid}, **claims)

    def public_pem(self, kid: str) -> bytes:
        _, private = self.keys[kid]
        pem: bytes = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    provider = Provider()
    provider.add_key("rsa-1", "RS256")
    provider.add_key("ec-1", "ES256")
    with provider.server:
        yield provider


class TestJwks:
    @pytest.fixture
    def settings_overrides(self, provider: Provider) -> dict[str, Any]:
        return {
            "auth_jwks_url": provider.jwks_url,
            "auth_jwt_secret": None,
            "auth_jwks_cooldown_seconds": 0.0,
        }

    async def test_rs256_and_es256_tokens_from_the_provider_are_accepted(
        self, client: httpx.AsyncClient, provider: Provider
    ) -> None:
        assert await gql(client, ME, token=provider.token("rsa-1", sub="r")) == {
            "data": {"me": {"id": "r"}}
        }
        assert await gql(client, ME, token=provider.token("ec-1", sub="e")) == {
            "data": {"me": {"id": "e"}}
        }

    async def test_a_rotated_in_key_is_fetched_on_first_sight(
        self, client: httpx.AsyncClient, provider: Provider
    ) -> None:
        assert await me_codes(client, provider.token("rsa-1")) == []
        provider.add_key("rsa-2", "RS256")
        assert await me_codes(client, provider.token("rsa-2")) == []

    async def test_a_key_signed_but_never_published_is_refused(
        self, client: httpx.AsyncClient, provider: Provider
    ) -> None:
        provider.add_key("rogue", "RS256", publish=False)
        assert await me_codes(client, provider.token("rogue")) == ["UNAUTHENTICATED"]

    async def test_hs256_signed_with_the_public_key_is_refused(
        self, client: httpx.AsyncClient, provider: Provider
    ) -> None:
        """The classic HS/RS confusion: the RSA public key used as an HMAC secret."""
        pem = provider.public_pem("rsa-1")
        payload = {"sub": "attacker", "exp": 2**31}
        header = jwt.utils.base64url_encode(
            json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode()
        )
        body = jwt.utils.base64url_encode(json.dumps(payload).encode())
        signing_input = header + b"." + body
        signature = jwt.utils.base64url_encode(
            hmac.new(pem, signing_input, hashlib.sha256).digest()
        )
        forged = (signing_input + b"." + signature).decode()
        assert await me_codes(client, forged) == ["UNAUTHENTICATED"]

    async def test_a_token_claiming_another_keys_algorithm_is_refused(
        self, client: httpx.AsyncClient, provider: Provider
    ) -> None:
        _, private = provider.keys["ec-1"]
        mislabeled = jwt.encode(
            {"sub": "x", "exp": 2**31}, private, algorithm="ES256", headers={"kid": "rsa-1"}
        )
        assert await me_codes(client, mislabeled) == ["UNAUTHENTICATED"]

    async def test_an_expired_provider_token_is_refused(
        self, client: httpx.AsyncClient, provider: Provider
    ) -> None:
        assert await me_codes(client, provider.token("rsa-1", expires_in=-600)) == [
            "UNAUTHENTICATED"
        ]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_jwks_refetches_for_unknown_kids_at_most_once_per_cooldown(
    provider: Provider,
) -> None:
    clock = Clock()
    async with httpx.AsyncClient() as http:
        cache = JwksCache(provider.jwks_url, http, min_refresh_interval=30.0, clock=clock)
        before = provider.fetches
        assert await cache.key("rsa-1") is not None
        for n in range(20):
            assert await cache.key(f"made-up-{n}") is None
        assert provider.fetches - before == 1

        provider.add_key("rsa-late", "RS256")
        assert await cache.key("rsa-late") is None  # still cooling down
        clock.now += 31
        assert await cache.key("rsa-late") is not None
        assert provider.fetches - before == 2


async def test_jwks_keys_are_cached_between_requests(provider: Provider) -> None:
    clock = Clock()
    async with httpx.AsyncClient() as http:
        cache = JwksCache(provider.jwks_url, http, ttl=600.0, clock=clock)
        before = provider.fetches
        for _ in range(10):
            assert await cache.key("ec-1") is not None
        assert provider.fetches - before == 1
        clock.now += 601
        assert await cache.key("ec-1") is not None
        assert provider.fetches - before == 2


async def test_an_unreachable_provider_means_unauthenticated_not_a_crash() -> None:
    async with httpx.AsyncClient() as http:
        cache = JwksCache("http://127.0.0.1:9/jwks.json", http)
        assert await cache.key("any") is None


def test_make_token_helper_signs_with_the_test_secret() -> None:
    claims = jwt.decode(make_token("s"), TEST_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "s"
