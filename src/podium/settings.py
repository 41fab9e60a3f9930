"""Settings from the environment and an optional `.env` file, in one Struct."""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from podium.validation import is_schema_name

MIN_SECRET_BYTES = 32
# Each worker holds up to 20 PostgreSQL connections (store/db.py) and 64 Redis ones.
MAX_WORKERS = 64


class SettingsError(RuntimeError):
    """The configuration cannot run; the message says what to change."""


class Settings(msgspec.Struct, kw_only=True):
    redis_url: str | None = None
    database_url: str | None = None
    secret_key: str = ""
    data_dir: Path = Path(".podium")
    env: str = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    jwt_issuer: str = "podium"
    jwt_audience: str = "podium"
    cors_origins: tuple[str, ...] = ()
    # Addresses or networks of the reverse proxies whose X-Forwarded-For is believed
    # (`serve --proxy-headers`); none by default. The client is the right-most address
    # of the header that is not one of them.
    trusted_proxies: tuple[str, ...] = ()
    # Who may read /metrics: these addresses or networks, or a bearer scrape token.
    metrics_allow: tuple[str, ...] = ("127.0.0.1", "::1")
    metrics_token: str = ""
    bcrypt_rounds: int = 12
    # Key prefix in Redis: lets tests (and several deployments) share one server.
    redis_prefix: str = "podium:"
    # Schema in PostgreSQL; tests isolate with a fresh one each.
    db_schema: str = "public"
    tick_ms: int = 50
    retention_days: int = 400
    max_body_bytes: int = 64 * 1024
    login_attempts_per_minute: int = 10
    registrations_per_minute: int = 30
    writes_per_second_per_user: int = 50
    writes_per_second_per_ip: int = 500
    # Write and report limits count in process and reconcile with Redis every
    # `rate_limit_sync_ms` (auth/ratelimit.py); at most `rate_limit_keys` counters
    # are kept here, past that a counter goes to Redis on every hit.
    rate_limit_sync_ms: int = 50
    rate_limit_keys: int = 100_000
    # Denials kept in process (auth/denylist.py); past that, token checks ask Redis.
    denylist_size: int = 100_000
    # Reports (boards/top_report.py): their cost bounds.
    reports_per_minute_per_user: int = 30
    reports_per_minute_per_ip: int = 120
    report_concurrency: int = 4
    report_timeout_ms: int = 10_000
    # WebSocket limits (docs/protocol.md): per user on one instance, per socket.
    ws_max_sockets_per_user: int = 20
    ws_messages_per_second: int = 20
    ws_max_subscriptions: int = 20
    ws_compression: bool = False
    log_level: str = "info"
    # `serve --workers N`: processes serving one port (SO_REUSEPORT); 1 is a single process.
    workers: int = 1
    # Bring your own identity (auth/external.py): bearer JWTs signed by this issuer's
    # keys (a JWKS at an http(s) URL or in a file) are accepted beside Podium's own.
    external_jwks: str = ""
    external_issuer: str = ""
    external_audience: str = ""
    # Claims tried in order for a new player's display name.
    external_name_claims: tuple[str, ...] = ("name", "preferred_username")
    # Device sign-in (POST /auth/device), throttled like login.
    device_signins_per_minute: int = 10

    @property
    def production(self) -> bool:
        return self.env == "production"


def _read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


_INT_FIELDS = {
    "PORT": "port",
    "ACCESS_TOKEN_TTL": "access_token_ttl",
    "REFRESH_TOKEN_TTL": "refresh_token_ttl",
    "BCRYPT_ROUNDS": "bcrypt_rounds",
    "TICK_MS": "tick_ms",
    "RETENTION_DAYS": "retention_days",
    "MAX_BODY_BYTES": "max_body_bytes",
    "LOGIN_ATTEMPTS_PER_MINUTE": "login_attempts_per_minute",
    "REGISTRATIONS_PER_MINUTE": "registrations_per_minute",
    "WRITES_PER_SECOND_PER_USER": "writes_per_second_per_user",
    "WRITES_PER_SECOND_PER_IP": "writes_per_second_per_ip",
    "RATE_LIMIT_SYNC_MS": "rate_limit_sync_ms",
    "RATE_LIMIT_KEYS": "rate_limit_keys",
    "DENYLIST_SIZE": "denylist_size",
    "REPORTS_PER_MINUTE_PER_USER": "reports_per_minute_per_user",
    "REPORTS_PER_MINUTE_PER_IP": "reports_per_minute_per_ip",
    "REPORT_CONCURRENCY": "report_concurrency",
    "REPORT_TIMEOUT_MS": "report_timeout_ms",
    "WS_MAX_SOCKETS_PER_USER": "ws_max_sockets_per_user",
    "WS_MESSAGES_PER_SECOND": "ws_messages_per_second",
    "WS_MAX_SUBSCRIPTIONS": "ws_max_subscriptions",
    "DEVICE_SIGNINS_PER_MINUTE": "device_signins_per_minute",
}


def load_settings(environ: dict[str, str] | None = None, dotenv: Path | None = None) -> Settings:
    """Build settings: the environment wins over `.env`, which wins over defaults."""
    env = dict(_read_dotenv(dotenv if dotenv is not None else Path(".env")))
    env.update(os.environ if environ is None else environ)

    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value not in (None, "") else None

    kwargs: dict[str, Any] = {}
    for name, field in (("REDIS_URL", "redis_url"), ("DATABASE_URL", "database_url")):
        if (value := get(name)) is not None:
            kwargs[field] = value
    if (value := get("SECRET_KEY")) is not None:
        kwargs["secret_key"] = value
    if (value := get("PODIUM_DATA_DIR")) is not None:
        kwargs["data_dir"] = Path(value)
    if (value := get("PODIUM_ENV")) is not None:
        if value not in ("development", "production"):
            raise SettingsError(f"PODIUM_ENV must be 'development' or 'production', not {value!r}")
        kwargs["env"] = value
    if (value := get("PODIUM_HOST")) is not None:
        kwargs["host"] = value
    if (value := get("CORS_ORIGINS")) is not None:
        kwargs["cors_origins"] = tuple(o.strip() for o in value.split(",") if o.strip())
    for name, field in (
        ("PODIUM_TRUSTED_PROXIES", "trusted_proxies"),
        ("PODIUM_METRICS_ALLOW", "metrics_allow"),
    ):
        if (value := get(name)) is not None:
            kwargs[field] = _addresses(name, value)
    if (value := get("PODIUM_METRICS_TOKEN")) is not None:
        kwargs["metrics_token"] = value
    if (value := get("PODIUM_DB_SCHEMA")) is not None:
        if not is_schema_name(value):
            raise SettingsError(
                f"PODIUM_DB_SCHEMA must be a lowercase PostgreSQL identifier, not {value!r}"
            )
        kwargs["db_schema"] = value
    if (value := get("PODIUM_REDIS_PREFIX")) is not None:
        kwargs["redis_prefix"] = value
    if (value := get("PODIUM_LOG_LEVEL")) is not None:
        kwargs["log_level"] = value.lower()
    if (value := get("PODIUM_WS_COMPRESSION")) is not None:
        kwargs["ws_compression"] = value.lower() in ("1", "true", "yes", "on")
    if (value := get("PODIUM_WORKERS")) is not None:
        kwargs["workers"] = parse_workers(value, "PODIUM_WORKERS")
    kwargs.update(_external(get))
    for name, field in _INT_FIELDS.items():
        raw = get(f"PODIUM_{name}") or (get(name) if name.endswith("TTL") else None)
        if raw is None:
            continue
        try:
            kwargs[field] = int(raw)
        except ValueError:
            raise SettingsError(f"PODIUM_{name} must be an integer, not {raw!r}") from None
    return Settings(**kwargs)


def parse_workers(raw: str, name: str = "--workers") -> int:
    """A worker count: a number from 1 to MAX_WORKERS, or `auto` for the CPUs this
    process may run on (its affinity, not the machine's count: a container or
    `taskset` limits it)."""
    if raw.strip().lower() == "auto":
        return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise SettingsError(
            f"{name} must be 'auto' or a number from 1 to {MAX_WORKERS}, not {raw!r}"
        )
    return count


def _external(get: Callable[[str], str | None]) -> dict[str, Any]:
    """The external identity settings: all three of JWKS, issuer and audience, or none."""
    names = ("PODIUM_EXTERNAL_JWKS", "PODIUM_EXTERNAL_ISSUER", "PODIUM_EXTERNAL_AUDIENCE")
    values = [get(name) for name in names]
    out: dict[str, Any] = {}
    if (claims := get("PODIUM_EXTERNAL_NAME_CLAIM")) is not None:
        out["external_name_claims"] = tuple(c.strip() for c in claims.split(",") if c.strip())
    if all(v is None for v in values):
        return out
    if any(v is None for v in values):
        raise SettingsError(f"{', '.join(names)} go together: set all three or none")
    jwks, issuer, audience = (str(v) for v in values)
    if "://" in jwks and not jwks.startswith(("https://", "http://")):
        raise SettingsError(
            f"PODIUM_EXTERNAL_JWKS must be an http(s) URL or a file path, not {jwks!r}"
        )
    out.update(external_jwks=jwks, external_issuer=issuer, external_audience=audience)
    return out


def _addresses(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of IP addresses or networks; "*" is refused."""
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise SettingsError(
                f"{name} must list IP addresses or networks (e.g. 10.0.0.5,10.1.0.0/16), "
                f"not {item!r}"
            ) from None
    return items


def ensure_secret_key(settings: Settings) -> Settings:
    """Return settings with a usable signing key, or refuse to start in production."""
    key = settings.secret_key
    if settings.production and settings.bcrypt_rounds < 12:
        raise SettingsError(
            f"PODIUM_BCRYPT_ROUNDS={settings.bcrypt_rounds} is too weak for production "
            "(at least 12)."
        )
    if settings.production:
        if not key:
            raise SettingsError(
                "SECRET_KEY is not set. In production Podium needs a secret of at least "
                f"{MIN_SECRET_BYTES} bytes, e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'`."
            )
        if len(key.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(
                f"SECRET_KEY is too short ({len(key.encode())} bytes); production needs at "
                f"least {MIN_SECRET_BYTES} bytes."
            )
        return settings
    if key:
        return settings
    # Development: generate once and keep it, so tokens survive a restart.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "secret_key"
    if path.is_file():
        key = path.read_text().strip()
    if not key:
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
    return msgspec.structs.replace(settings, secret_key=key)
