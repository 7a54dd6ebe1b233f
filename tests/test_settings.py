"""Configuration: what production refuses, and that secrets never show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.cli import main
from app.main import create_app
from app.settings import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent
LONG_SECRET = "s" * 40


def production(**values: object) -> Settings:
    base: dict[str, object] = {
        "app_env": "production",
        "database_url": "postgresql://localhost/x",
        "auth_jwt_secret": LONG_SECRET,
        "stripe_secret_key": None,
        "stripe_webhook_secret": None,
        "auth_jwks_url": None,
    }
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[arg-type]


def test_production_starts_with_a_complete_configuration() -> None:
    assert production().problems() == []
    create_app(production())


def test_production_refuses_to_start_without_a_way_to_verify_tokens() -> None:
    with pytest.raises(ConfigError, match="AUTH_JWT_SECRET or AUTH_JWKS_URL"):
        create_app(production(auth_jwt_secret=None))


def test_production_accepts_a_jwks_url_instead_of_a_secret() -> None:
    assert (
        production(auth_jwt_secret=None, auth_jwks_url="https://idp.example/jwks").problems() == []
    )


def test_production_refuses_a_short_jwt_secret_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes") as raised:
        create_app(production(auth_jwt_secret="short-secret-value"))
    assert "short-secret-value" not in str(raised.value)


def test_production_refuses_stripe_without_a_webhook_secret() -> None:
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET"):
        create_app(production(stripe_secret_key="sk_live_abc"))


def test_several_problems_are_all_named() -> None:
    problems = production(auth_jwt_secret="short", stripe_secret_key="sk_live_abc").problems()
    assert len(problems) == 2


def test_development_needs_none_of_that() -> None:
    settings = Settings(_env_file=None, app_env="development", auth_jwt_secret=None)
    assert settings.problems() == []


def test_secrets_never_show_in_repr_or_validation_errors() -> None:
    settings = production(stripe_secret_key="sk_live_verysecret", stripe_webhook_secret="whsec_x1")
    assert isinstance(settings.stripe_secret_key, SecretStr)
    assert "sk_live_verysecret" not in repr(settings)
    assert LONG_SECRET not in repr(settings)
    with pytest.raises(Exception) as raised:  # noqa: PT011
        Settings(_env_file=None, port="not-a-port-sk_live_leak")
    assert "sk_live_leak" not in str(raised.value)


def test_blank_values_in_a_dotenv_file_mean_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "STRIPE_SECRET_KEY=\nAPP_URL=https://app.example.com/\nCORS_ORIGINS=https://a.example, https://b.example\n"
    )
    for name in ("STRIPE_SECRET_KEY", "APP_URL", "CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.stripe_secret_key is None
    assert settings.app_url == "https://app.example.com"
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]


def test_cors_origins_default_to_the_app_url() -> None:
    settings = Settings(_env_file=None, app_url="https://app.example.com", cors_origins=None)
    assert settings.allowed_origins == ["https://app.example.com"]


def test_the_token_command_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("AUTH_JWT_SECRET", LONG_SECRET)
    assert main(["token"]) == 2
    assert "Refused" in capsys.readouterr().err


def test_the_token_command_mints_a_token_the_service_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import jwt

    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.setenv("AUTH_JWT_SECRET", LONG_SECRET)
    assert main(["token", "--sub", "dev-42", "--email", "d@example.com"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), LONG_SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["email"], claims["email_verified"]) == (
        "dev-42",
        "d@example.com",
        True,
    )


def test_serve_refuses_a_bad_production_config_and_says_which() -> None:
    env = {
        "APP_ENV": "production",
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": "postgresql://localhost/x",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "AUTH_JWT_SECRET or AUTH_JWKS_URL" in result.stderr
