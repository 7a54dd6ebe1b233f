"""Bearer tokens: HS256 with a shared secret, RS256/ES256 with an identity provider's JWKS.

Each mode pins its own algorithms, so a token can never pick its verification: an HS256
token is only checked against the shared secret, an RS256/ES256 token only against a JWKS
key of that very algorithm (no `none`, no HS/RS confusion).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt

from services.errors import Unauthenticated
from services.identity import Identity

log = logging.getLogger(__name__)

HS_ALGORITHMS = ("HS256",)
JWKS_ALGORITHMS = ("RS256", "ES256")
LEEWAY_SECONDS = 30
MAX_TOKEN_BYTES = 8192


class JwksCache:
    """An identity provider's signing keys: cached, refetched on an unknown `kid`.

    Refetches are rate-limited so that tokens with made-up `kid`s cannot make us hammer
    the provider; concurrent misses share one fetch.
    """

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        ttl: float = 600.0,
        min_refresh_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._http = http
        self._ttl = ttl
        self._min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        if self._fetched_at is None or self._clock() - self._fetched_at > self._ttl:
            await self._refresh()
        found = self._lookup(kid)
        if found is None:
            await self._refresh()
            found = self._lookup(kid)
        return found

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        seen = self.fetches
        async with self._lock:
            if self.fetches != seen:
                return  # another request refreshed while we waited
            now = self._clock()
            if (
                self._attempted_at is not None
                and now - self._attempted_at < self._min_refresh_interval
            ):
                return
            self._attempted_at = now
            try:
                response = await self._http.get(self._url, timeout=5.0)
                response.raise_for_status()
                jwk_set = jwt.PyJWKSet.from_dict(response.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                log.warning("could not fetch JWKS from %s: %s", self._url, type(exc).__name__)
                return
            self._keys = {key.key_id: key for key in jwk_set.keys}
            self._fetched_at = now
            self.fetches += 1


class Authenticator:
    """Verifies bearer tokens, remembering recent successes.

    A verified token's signature cannot turn bad, so repeat requests skip the HMAC/RSA work;
    expiry is still checked on every use, and an entry lives at most `VERIFIED_TTL_SECONDS`
    so a key withdrawn from the JWKS stops working soon after.
    """

    VERIFIED_TTL_SECONDS = 300.0
    VERIFIED_MAX_ENTRIES = 10_000

    def __init__(
        self,
        *,
        hs_secret: str | None,
        jwks: JwksCache | None,
        issuer: str | None,
        audience: str | None,
    ) -> None:
        self._hs_secret = hs_secret
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._verified: dict[str, tuple[Identity, float, float]] = {}

    async def identify(self, authorization: str | None) -> Identity:
        """The bearer's identity, or `Unauthenticated` saying what is wrong with the token."""
        token = _bearer_token(authorization)
        remembered = self._verified.get(token)
        if remembered is not None:
            identity, expires_at, forget_at = remembered
            if time.time() < expires_at + LEEWAY_SECONDS and time.monotonic() < forget_at:
                return identity
            del self._verified[token]
        identity, expires_at = await self._verify(token)
        if len(self._verified) >= self.VERIFIED_MAX_ENTRIES:
            self._verified.clear()
        self._verified[token] = (identity, expires_at, time.monotonic() + self.VERIFIED_TTL_SECONDS)
        return identity

    async def _verify(self, token: str) -> tuple[Identity, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The bearer token is malformed") from exc
        algorithm = header.get("alg")
        key: Any
        if algorithm in HS_ALGORITHMS and self._hs_secret is not None:
            key, algorithms = self._hs_secret, list(HS_ALGORITHMS)
        elif algorithm in JWKS_ALGORITHMS and self._jwks is not None:
            kid = header.get("kid")
            jwk = await self._jwks.key(kid if isinstance(kid, str) else None)
            if jwk is None or jwk.algorithm_name != algorithm:
                raise Unauthenticated("The bearer token is signed with an unknown key")
            key, algorithms = jwk, [jwk.algorithm_name]
        else:
            raise Unauthenticated("The bearer token's signing algorithm is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("The bearer token has expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The bearer token is invalid") from exc
        return identity_from_claims(claims), float(claims["exp"])


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("Sign in: send an Authorization: Bearer <token> header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("The Authorization header must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthenticated("The bearer token is too long")
    return token


def _str_claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject) <= 255:
        raise Unauthenticated("The bearer token has no usable subject")
    verified = claims.get("email_verified", False)
    if isinstance(verified, str):  # some providers (Cognito) send "true"
        verified = verified.lower() == "true"
    issued_at = claims.get("iat")
    return Identity(
        subject=subject,
        email=_str_claim(claims, "email"),
        email_verified=verified is True,
        given_name=_str_claim(claims, "given_name"),
        family_name=_str_claim(claims, "family_name"),
        name=_str_claim(claims, "name"),
        phone_number=_str_claim(claims, "phone_number"),
        issued_at=(
            datetime.fromtimestamp(issued_at, UTC) if isinstance(issued_at, int | float) else None
        ),
    )


def development_secret(data_dir: Path) -> str:
    """A per-checkout HS256 secret so `make run` accepts dev tokens with nothing configured."""
    path = data_dir / "dev-jwt-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48), encoding="utf-8")
    return path.read_text(encoding="utf-8").strip()


def mint_token(
    secret: str,
    *,
    subject: str,
    email: str | None,
    email_verified: bool,
    name: str | None = None,
    ttl: timedelta = timedelta(hours=12),
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "email_verified": email_verified,
    }
    if email:
        claims["email"] = email
    if name:
        claims["name"] = name
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
