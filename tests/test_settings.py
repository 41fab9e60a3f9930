"""Settings from the environment and `.env`; the secret key rules of dev and production."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from podium.settings import Settings, SettingsError, ensure_secret_key, load_settings

STRONG_KEY = "k" * 32


def write_env(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings(environ={}, dotenv=Path("/nonexistent/.env"))
    assert s == Settings()
    assert s.redis_url is None and s.database_url is None
    assert s.data_dir == Path(".podium")
    assert s.env == "development" and not s.production
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.bcrypt_rounds == 12
    assert s.access_token_ttl == 900
    assert s.db_schema == "public" and s.redis_prefix == "podium:"
    assert s.ws_compression is False


def test_dotenv_is_parsed(tmp_path: Path) -> None:
    dotenv = write_env(
        tmp_path / ".env",
        "# a comment\n"
        "\n"
        "REDIS_URL=redis://example:6379/2\n"
        "export DATABASE_URL = postgresql://u:p@db/podium?sslmode=require\n"
        'SECRET_KEY="quoted value with spaces and = sign"\n'
        "PODIUM_DATA_DIR='/var/lib/podium'\n"
        "CORS_ORIGINS=https://a.example, https://b.example ,\n"
        "ACCESS_TOKEN_TTL=60\n"
        "PODIUM_REFRESH_TOKEN_TTL=3600\n"
        "PODIUM_TICK_MS=20\n"
        "PODIUM_HOST=0.0.0.0\n"
        "PODIUM_PORT=9000\n"
        "PODIUM_WS_COMPRESSION=on\n"
        "PODIUM_LOG_LEVEL=DEBUG\n"
        "PODIUM_DB_SCHEMA=tenant_a\n"
        "PODIUM_REDIS_PREFIX=tenant-a:\n"
        "PODIUM_LOGIN_ATTEMPTS_PER_MINUTE=5\n"
        "PODIUM_REGISTRATIONS_PER_MINUTE=7\n"
        "PODIUM_BCRYPT_ROUNDS=13\n"
        "not a setting line\n",
    )
    s = load_settings(environ={}, dotenv=dotenv)
    assert s.redis_url == "redis://example:6379/2"
    assert s.database_url == "postgresql://u:p@db/podium?sslmode=require"
    assert s.secret_key == "quoted value with spaces and = sign"
    assert s.data_dir == Path("/var/lib/podium")
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.access_token_ttl == 60
    assert s.refresh_token_ttl == 3600
    assert s.tick_ms == 20
    assert (s.host, s.port) == ("0.0.0.0", 9000)
    assert s.ws_compression is True
    assert s.log_level == "debug"
    assert s.db_schema == "tenant_a" and s.redis_prefix == "tenant-a:"
    assert s.login_attempts_per_minute == 5
    assert s.registrations_per_minute == 7
    assert s.bcrypt_rounds == 13


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    dotenv = write_env(
        tmp_path / ".env", "REDIS_URL=redis://from-file/0\nACCESS_TOKEN_TTL=60\nPODIUM_PORT=1\n"
    )
    s = load_settings(
        environ={"REDIS_URL": "redis://from-env/0", "PODIUM_ACCESS_TOKEN_TTL": "120"},
        dotenv=dotenv,
    )
    assert s.redis_url == "redis://from-env/0"
    assert s.access_token_ttl == 120
    assert s.port == 1
    # The PODIUM_ name wins over the short alias.
    s = load_settings(
        environ={"ACCESS_TOKEN_TTL": "5", "PODIUM_ACCESS_TOKEN_TTL": "6"}, dotenv=dotenv
    )
    assert s.access_token_ttl == 6
    # An empty value means unset.
    assert load_settings(environ={"REDIS_URL": ""}, dotenv=dotenv).redis_url is None


@pytest.mark.parametrize(
    ("environ", "mentions"),
    [
        ({"PODIUM_ENV": "staging"}, "PODIUM_ENV"),
        ({"PODIUM_PORT": "eighty"}, "PODIUM_PORT"),
        ({"ACCESS_TOKEN_TTL": "15m"}, "ACCESS_TOKEN_TTL"),
        ({"PODIUM_DB_SCHEMA": "Robert'); DROP TABLE users;--"}, "PODIUM_DB_SCHEMA"),
    ],
)
def test_bad_values_are_refused_by_name(
    tmp_path: Path, environ: dict[str, str], mentions: str
) -> None:
    with pytest.raises(SettingsError, match=mentions):
        load_settings(environ=environ, dotenv=tmp_path / ".env")


def test_production_refuses_a_missing_or_short_key(tmp_path: Path) -> None:
    prod = Settings(env="production", data_dir=tmp_path)
    with pytest.raises(SettingsError, match="SECRET_KEY is not set"):
        ensure_secret_key(prod)
    short = Settings(env="production", data_dir=tmp_path, secret_key="k" * 31)
    with pytest.raises(SettingsError, match="too short"):
        ensure_secret_key(short)
    # Counted in bytes: 16 two-byte characters are enough.
    ok = Settings(env="production", data_dir=tmp_path, secret_key="é" * 16)
    assert ensure_secret_key(ok) is ok
    assert not (tmp_path / "secret_key").exists()  # production never invents a key


def test_development_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = ensure_secret_key(Settings(data_dir=data_dir))
    assert len(first.secret_key.encode()) >= 32
    path = data_dir / "secret_key"
    assert path.read_text().strip() == first.secret_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = ensure_secret_key(Settings(data_dir=data_dir))
    assert again.secret_key == first.secret_key
    other = ensure_secret_key(Settings(data_dir=tmp_path / "elsewhere"))
    assert other.secret_key != first.secret_key
    # An explicit key is used as is and nothing is written.
    given = ensure_secret_key(Settings(data_dir=tmp_path / "given", secret_key="mine"))
    assert given.secret_key == "mine"
    assert not (tmp_path / "given" / "secret_key").exists()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PODIUM_")
        and k not in ("REDIS_URL", "DATABASE_URL", "SECRET_KEY", "ACCESS_TOKEN_TTL")
    }
    env.update(extra)
    return env


def _serve(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podium", "serve", "--port", "1"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_in_production_without_a_key_exits_with_a_clear_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = _serve(tmp_path, _clean_env(PODIUM_ENV="production", PODIUM_DATA_DIR=str(data_dir)))
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr
    # Refused before anything started: no embedded server touched the data dir.
    assert not (data_dir / "postgres").exists() and not (data_dir / "valkey").exists()


def test_serve_reads_dotenv_from_the_working_directory(tmp_path: Path) -> None:
    write_env(
        tmp_path / ".env",
        f"PODIUM_ENV=production\nSECRET_KEY=short\nPODIUM_DATA_DIR={tmp_path / 'data'}\n",
    )
    result = _serve(tmp_path, _clean_env())
    assert result.returncode != 0
    assert "SECRET_KEY is too short" in result.stderr


def test_production_refuses_a_weak_bcrypt_cost(tmp_path: Path) -> None:
    settings = load_settings(
        {"PODIUM_ENV": "production", "SECRET_KEY": "k" * 48, "PODIUM_BCRYPT_ROUNDS": "4"},
        dotenv=tmp_path / "none",
    )
    with pytest.raises(SettingsError, match="BCRYPT_ROUNDS"):
        ensure_secret_key(settings)


def test_external_identity_settings_go_together(tmp_path: Path) -> None:
    none = tmp_path / "none.env"
    given = {
        "PODIUM_EXTERNAL_JWKS": "https://id.example.test/jwks.json",
        "PODIUM_EXTERNAL_ISSUER": "https://id.example.test",
        "PODIUM_EXTERNAL_AUDIENCE": "game",
        "PODIUM_EXTERNAL_NAME_CLAIM": "nickname, name",
        "PODIUM_DEVICE_SIGNINS_PER_MINUTE": "7",
    }
    s = load_settings(given, dotenv=none)
    assert (s.external_jwks, s.external_issuer, s.external_audience) == (
        "https://id.example.test/jwks.json",
        "https://id.example.test",
        "game",
    )
    assert s.external_name_claims == ("nickname", "name")
    assert s.device_signins_per_minute == 7
    assert load_settings({}, dotenv=none).external_jwks == ""
    with pytest.raises(SettingsError, match="PODIUM_EXTERNAL_AUDIENCE"):
        load_settings({"PODIUM_EXTERNAL_JWKS": "/etc/jwks.json"}, dotenv=none)
    with pytest.raises(SettingsError, match="http"):
        load_settings({**given, "PODIUM_EXTERNAL_JWKS": "ftp://id.example.test/k"}, dotenv=none)
