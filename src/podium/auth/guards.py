"""Turn a bearer credential into a Principal, for HTTP requests and WebSockets."""

from __future__ import annotations

import functools
import hmac
import ipaddress
import uuid

from redis.exceptions import RedisError
from starlette.requests import HTTPConnection

from podium import metrics
from podium.auth.jwks import JwksUnavailable
from podium.auth.tokens import (
    PODIUM_JWT_PREFIX,
    SERVICE_PREFIX,
    Principal,
    TokenError,
    hash_service_secret,
)
from podium.errors import ApiError, forbidden, not_found, unauthorized, unavailable
from podium.services import Services, services_of


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token from `Authorization: Bearer`, `Sec-WebSocket-Protocol` or `?token=`."""
    header = conn.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    if conn.scope["type"] == "websocket":
        # Browsers cannot set headers on a WebSocket: `new WebSocket(url, ["bearer", token])`.
        protocols = [p.strip() for p in conn.headers.get("sec-websocket-protocol", "").split(",")]
        if len(protocols) >= 2 and protocols[0].lower() == "bearer" and protocols[1]:
            return protocols[1]
        token = conn.query_params.get("token")
        return token or None
    return None


async def authenticate_token(services: Services, token: str) -> Principal:
    """Verify a token (JWT or service credential); raise TokenError if unusable."""
    if token.startswith(SERVICE_PREFIX):
        row = await services.pool.fetchrow(
            "SELECT name, games FROM service_credentials"
            " WHERE secret_hash = $1 AND revoked_at IS NULL",
            hash_service_secret(token),
        )
        if row is None:
            raise TokenError("invalid token")
        return Principal(
            kind="service",
            role="service",
            games=tuple(row["games"]),
            credential=f"service:{row['name']}",
        )
    principal = await _user_principal(services, token)
    assert principal.user_id is not None
    verdict = services.denylist.check(principal.jti, principal.family, principal.user_id)
    if verdict is None:
        verdict = await _revoked_in_redis(services, principal)
    revoked, voided = verdict
    if voided:
        raise TokenError("this account is voided", voided=True)
    if revoked:
        raise TokenError("token revoked")
    return principal


async def _user_principal(services: Services, token: str) -> Principal:
    """A Podium access token's Principal, or an external issuer's (when one is set)."""
    external = services.external
    # One prefix test keeps the two apart: a Podium token costs no more than before,
    # an external one no failed HS256 decode.
    if external is None or token.startswith(PODIUM_JWT_PREFIX):
        return services.tokens.access_principal(token)
    try:
        return await external.principal(services.pool, token)
    except JwksUnavailable:
        raise unavailable("sign-in cannot be checked right now") from None


async def _revoked_in_redis(services: Services, principal: Principal) -> tuple[bool, bool]:
    """(revoked, voided) from the deny keys, or PostgreSQL while Redis is down."""
    assert principal.user_id is not None
    keys = services.keys
    try:
        marks = await services.redis.mget(
            keys.deny_jti(principal.jti),
            keys.deny_family(principal.family),
            keys.deny_user(principal.user_id),
        )
        revoked, voided = bool(marks[0] or marks[1]), bool(marks[2])
    except RedisError:
        metrics.REDIS_ERRORS.inc()
        # Redis down must not lock everyone out: logout, refresh-token reuse and voids
        # also revoke in PostgreSQL, which answers for the denylist meanwhile.
        revoked, voided = await _revoked_in_db(services, principal.family, principal.user_id)
    return revoked, voided


async def _revoked_in_db(services: Services, family: str, user_id: int) -> tuple[bool, bool]:
    """(family revoked, user voided) from PostgreSQL."""
    try:
        fam = uuid.UUID(family)
    except ValueError:
        return True, False
    row = await services.pool.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM refresh_tokens WHERE family = $1"
        " AND revoked_at IS NOT NULL) AS family,"
        " EXISTS (SELECT 1 FROM users WHERE id = $2 AND voided_at IS NOT NULL) AS voided",
        fam,
        user_id,
    )
    assert row is not None
    return bool(row["family"]), bool(row["voided"])


async def require_principal(conn: HTTPConnection) -> Principal:
    """The authenticated caller of a request, or 401."""
    cached: Principal | None = conn.scope.get("podium.principal")
    if cached is not None:
        return cached
    token = bearer_token(conn)
    if token is None:
        raise unauthorized()
    services = services_of(conn)
    try:
        principal = await authenticate_token(services, token)
    except TokenError as exc:
        if exc.voided:
            raise forbidden(str(exc), code="voided") from None
        raise unauthorized(str(exc)) from None
    conn.scope["podium.principal"] = principal
    return principal


async def require_user(conn: HTTPConnection) -> Principal:
    principal = await require_principal(conn)
    if principal.kind != "user":
        raise forbidden("this endpoint needs a user token")
    return principal


async def require_admin(conn: HTTPConnection) -> Principal:
    principal = await require_principal(conn)
    if not principal.is_admin:
        raise forbidden("admin role required")
    return principal


@functools.lru_cache(maxsize=16)
def _networks(items: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def require_metrics_access(conn: HTTPConnection) -> None:
    """/metrics is for the operators' scraper: an allowed address or the scrape token.

    Anyone else gets the 404 of a route that does not exist, whatever the path's
    spelling that led here (the proxy's rule is the first line, this the second).
    """
    settings = services_of(conn).settings
    token = settings.metrics_token
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token):
        return
    host = conn.client.host if conn.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise not_found("no such route") from None
    if not any(address in net for net in _networks(settings.metrics_allow)):
        raise not_found("no such route")


__all__ = [
    "ApiError",
    "bearer_token",
    "require_admin",
    "require_metrics_access",
    "require_principal",
    "require_user",
]
