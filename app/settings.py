"""Configuration from the environment (and `.env`), as the contract lists it.

Secrets are `SecretStr` so that no repr, log line or validation error can show them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.rate_limits import RateLimits

MIN_JWT_SECRET_BYTES = 32


class ConfigError(Exception):
    """The configuration cannot run; the message names the variables, never their values."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    database_url: str | None = None
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    stripe_price_pro: str | None = None
    stripe_portal_configuration_id: str | None = None
    stripe_timeout_seconds: float = 8.0
    stripe_max_network_retries: int = 2
    # Stripe calls a second across every process (0: no budget). See services/stripe_budget.
    stripe_max_requests_per_second: NonNegativeFloat = 20.0
    app_url: str = "http://localhost:3000"
    cors_origins: str | None = None
    auth_jwt_secret: SecretStr | None = None
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_jwks_cooldown_seconds: float = 30.0
    app_env: Literal["development", "production"] = "development"
    plans_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    access_log: bool = True
    web_concurrency: int = 1
    forwarded_allow_ips: str = "127.0.0.1"
    graceful_shutdown_seconds: int = 20
    # Each request, headers and body, must arrive within this long of the connection opening
    # or the previous response ending; else 408 and the connection is closed.
    # See app.process.slow_clients.
    request_read_timeout_seconds: PositiveFloat = 30.0
    run_worker: bool = True
    worker_poll_seconds: float = 1.0
    worker_concurrency: PositiveInt = 4
    data_dir: Path = Path(".data")
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    # Per user; 0 turns a limit off. See `services.rate_limits` and the README.
    rate_limit_requests_per_minute: NonNegativeInt = 600
    rate_limit_stripe_per_minute: NonNegativeInt = 20
    rate_limit_export_per_hour: NonNegativeInt = 10
    rate_limit_delete_per_hour: NonNegativeInt = 5
    db_acquire_timeout_seconds: float = 5.0
    # Exports (1,000 rows each) a worker builds at once; more wait their turn.
    export_concurrency: PositiveInt = 2
    log_format: Literal["json", "text"] | None = None

    @field_validator(
        "database_url",
        "stripe_secret_key",
        "stripe_webhook_secret",
        "stripe_api_base",
        "stripe_price_pro",
        "stripe_portal_configuration_id",
        "cors_origins",
        "auth_jwt_secret",
        "auth_jwks_url",
        "auth_issuer",
        "auth_audience",
        "plans_file",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`FOO=` in a .env file means unset, not an empty secret or URL."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("app_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def allowed_origins(self) -> list[str]:
        raw = self.cors_origins if self.cors_origins is not None else self.app_url
        return [origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip()]

    @property
    def json_logs(self) -> bool:
        """JSON lines in production (or with LOG_FORMAT=json); readable text in development."""
        return self.log_format == "json" if self.log_format else self.is_production

    @property
    def rate_limits(self) -> RateLimits:
        return RateLimits.configured(
            requests_per_minute=self.rate_limit_requests_per_minute,
            stripe_per_minute=self.rate_limit_stripe_per_minute,
            export_per_hour=self.rate_limit_export_per_hour,
            delete_per_hour=self.rate_limit_delete_per_hour,
        )

    @property
    def webhook_secrets(self) -> list[str]:
        """Several during a rotation: `whsec_new,whsec_old`."""
        if self.stripe_webhook_secret is None:
            return []
        raw = self.stripe_webhook_secret.get_secret_value()
        return [secret.strip() for secret in raw.split(",") if secret.strip()]

    def problems(self) -> list[str]:
        """What stops this configuration from serving; empty when it can start."""
        found: list[str] = []
        if self.is_production:
            if self.auth_jwt_secret is None and self.auth_jwks_url is None:
                found.append(
                    "APP_ENV=production needs AUTH_JWT_SECRET or AUTH_JWKS_URL to verify tokens"
                )
            secret = self.auth_jwt_secret
            if (
                secret is not None
                and len(secret.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES
            ):
                found.append(
                    f"AUTH_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes in production"
                )
            if self.stripe_secret_key is not None and self.stripe_webhook_secret is None:
                found.append(
                    "STRIPE_WEBHOOK_SECRET is required in production when STRIPE_SECRET_KEY is set"
                )
        return found

    def check(self) -> None:
        found = self.problems()
        if found:
            raise ConfigError("; ".join(found))
