"""/api/v1/auth: register, login, refresh, logout, me."""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from datetime import UTC, datetime

import msgspec
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.responses import JSON, read_json
from podium.api.spec import spec
from podium.auth import ratelimit
from podium.auth.guards import require_user
from podium.auth.passwords import hash_password, verify_password
from podium.auth.tokens import TokenError
from podium.errors import ApiError, conflict, invalid, unauthorized, unavailable
from podium.services import Services
from podium.store import users

log = logging.getLogger("podium.auth")

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
# Pragmatic, not RFC 5322: one @, a dot in the domain, no spaces or control characters
# (PostgreSQL text cannot hold NUL).
EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]{2,}$")
BAD_LOGIN = "invalid username, email or password"


class RegisterIn(msgspec.Struct, forbid_unknown_fields=True):
    username: str
    email: str
    password: str


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    password: str
    username: str | None = None
    email: str | None = None


class RefreshIn(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: str


class TokenPair(msgspec.Struct):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    user: users.User


def validate_registration(body: RegisterIn) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not USERNAME_RE.match(body.username):
        errors["username"] = "3-32 characters of letters, digits, '_', '.', '-'"
    if len(body.email) > 254 or not EMAIL_RE.match(body.email):
        errors["email"] = "not a valid email address"
    size = len(body.password.encode())
    if size < 8 or size > 72:
        # bcrypt reads at most 72 bytes: a longer password would be silently truncated.
        errors["password"] = "8-72 bytes"
    return errors


def services_of(request: Request) -> Services:
    return request.app.state.podium


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def issue_pair(services: Services, user: users.User, family: uuid.UUID) -> TokenPair:
    now = int(time.time())
    jti = uuid.uuid4()
    expires = datetime.fromtimestamp(now + services.tokens.refresh_ttl, UTC)
    await users.store_refresh(services.pool, jti, family, user.id, expires)
    return TokenPair(
        access_token=services.tokens.access(user.id, user.role, family.hex, now),
        refresh_token=services.tokens.refresh(user.id, family.hex, jti.hex, now),
        token_type="bearer",
        expires_in=services.tokens.access_ttl,
        user=user,
    )


@spec(
    summary="Register an account",
    tag="auth",
    status=201,
    body=RegisterIn,
    response=users.User,
    example={"username": "ada", "email": "ada@example.com", "password": "correct-horse-42"},
    errors=(409, 429),
)
async def register(request: Request) -> Response:
    services = services_of(request)
    body = await read_json(request, RegisterIn, services.settings.max_body_bytes)
    if errors := validate_registration(body):
        raise invalid("registration is invalid", errors)
    await throttle(
        services, "register", client_ip(request), services.settings.registrations_per_minute
    )
    hashed = await hash_password(body.password, services.settings.bcrypt_rounds)
    try:
        user = await users.create_user(services.pool, body.username, body.email, hashed)
    except users.UserExists as exc:
        raise conflict(f"{exc.field} is already taken", code=f"{exc.field}_taken") from None
    return JSON(user, status_code=201)


@spec(
    summary="Log in with username or email; get an access and a refresh token",
    tag="auth",
    body=LoginIn,
    response=TokenPair,
    example={"username": "ada", "password": "correct-horse-42"},
    errors=(401, 429),
)
async def login(request: Request) -> Response:
    services = services_of(request)
    body = await read_json(request, LoginIn, services.settings.max_body_bytes)
    login_name = body.username if body.username is not None else body.email
    if not login_name or (body.username is not None and body.email is not None):
        raise invalid("give either username or email", {"username": "or email, one of them"})
    limit = services.settings.login_attempts_per_minute
    await throttle(services, "login-ip", client_ip(request), limit * 5)
    await throttle(services, "login-user", login_name.lower(), limit)
    # No stored name holds a NUL (PostgreSQL text cannot): such a name is just unknown.
    found = (
        await users.find_login(services.pool, login_name, by_email=body.username is None)
        if "\x00" not in login_name
        else None
    )
    ok = await verify_password(
        body.password, found[1] if found else None, services.settings.bcrypt_rounds
    )
    if not found or not ok:
        raise unauthorized(BAD_LOGIN)
    pair = await issue_pair(services, found[0], uuid.uuid4())
    return JSON(pair)


@spec(
    summary="Trade a refresh token for a new pair (rotation; reuse revokes the family)",
    tag="auth",
    body=RefreshIn,
    response=TokenPair,
    example={"refresh_token": "eyJ..."},
    errors=(401,),
)
async def refresh(request: Request) -> Response:
    services = services_of(request)
    body = await read_json(request, RefreshIn, services.settings.max_body_bytes)
    try:
        claims = services.tokens.decode(body.refresh_token, typ="refresh")
        jti, family = uuid.UUID(claims["jti"]), uuid.UUID(claims["fam"])
    except (TokenError, KeyError, ValueError):
        raise unauthorized("invalid refresh token") from None
    async with services.pool.acquire() as conn, conn.transaction():
        state = await users.spend_refresh(conn, jti)
        if state == "reused":
            # A spent token used again means it leaked: end the whole family.
            await users.revoke_family(conn, family)
    if state == "reused":
        try:
            await deny_family(services, family.hex)
        except RedisError:
            # Revoked in PostgreSQL already, which the guards consult while Redis is down.
            log.warning("refresh reuse: family not denied in redis", extra={"family": family.hex})
    if state != "ok":
        raise unauthorized("invalid refresh token")
    user = await users.get_user(services.pool, int(claims["sub"]))
    if user is None:
        raise unauthorized("invalid refresh token")
    return JSON(await issue_pair(services, user, family))


async def throttle(services: Services, bucket: str, who: str, per_minute: int) -> None:
    """429 over the limit. With Redis down it lets the request through: accounts keep
    working in an outage, and bcrypt still makes every guess cost a quarter second."""
    try:
        await ratelimit.enforce(services.redis, services.keys, bucket, who, per_minute, 60)
    except RedisError:
        log.warning("rate limit skipped: redis unavailable", extra={"bucket": bucket})


async def deny_family(services: Services, family: str) -> None:
    """Every access token of the family stops working now, on every instance."""
    # Only access tokens need the denylist (refresh tokens are checked in PostgreSQL),
    # and none of the family outlives one access lifetime from now; the margin covers a
    # refresh that was in flight while the family was revoked.
    ttl = services.tokens.access_ttl + 60
    await services.redis.set(services.keys.deny_family(family), "1", ex=ttl)
    await services.redis.publish(services.keys.revocations, family)


@spec(
    summary="Log out: revoke this token's family at once",
    tag="auth",
    status=204,
    auth=True,
    errors=(503,),
)
async def logout(request: Request) -> Response:
    services = services_of(request)
    principal = await require_user(request)
    # PostgreSQL first: the refresh family ends for good even if Redis fails next.
    if principal.family:
        with contextlib.suppress(ValueError):
            await users.revoke_family(services.pool, uuid.UUID(principal.family))
    ttl = max(1, principal.exp - int(time.time()))
    try:
        await services.redis.set(services.keys.deny_jti(principal.jti), "1", ex=ttl)
        if principal.family:
            await deny_family(services, principal.family)
    except RedisError:
        # The guards fall back to PostgreSQL only while Redis is down; once it is back,
        # only the denylist stops this access token. Not done yet: say so, retry works.
        raise unavailable("logout is not complete; retry") from None
    return Response(status_code=204)


@spec(summary="The caller's account", tag="auth", response=users.User, auth=True)
async def me(request: Request) -> Response:
    services = services_of(request)
    principal = await require_user(request)
    assert principal.user_id is not None
    user = await users.get_user(services.pool, principal.user_id)
    if user is None:
        # The token is genuine but its account is gone: the client must log in again.
        raise unauthorized("account no longer exists")
    return JSON(user)


routes = [
    Route("/auth/register", register, methods=["POST"]),
    Route("/auth/login", login, methods=["POST"]),
    Route("/auth/refresh", refresh, methods=["POST"]),
    Route("/auth/logout", logout, methods=["POST"]),
    Route("/auth/me", me, methods=["GET"]),
]

__all__ = ["ApiError", "routes"]
