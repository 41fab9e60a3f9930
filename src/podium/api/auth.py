"""/api/v1/auth: register, login, refresh, logout, me."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar

import msgspec
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.podium import podium_of
from podium.api.responses import JSON, read_json
from podium.api.spec import spec
from podium.auth import ratelimit, revocation
from podium.auth.denylist import JTI_SUBJECT
from podium.auth.guards import require_user
from podium.auth.passwords import hash_password, verify_password
from podium.auth.tokens import TokenError
from podium.errors import (
    ApiError,
    conflict,
    invalid,
    rate_limited,
    unauthorized,
    unavailable,
)
from podium.services import Services
from podium.store import users
from podium.validation import Username, exactly_one

log = logging.getLogger("podium.auth")

# Pragmatic, not RFC 5322: one @, a dot in the domain, no spaces or control characters
# (PostgreSQL text cannot hold NUL).
# Spelled out rather than `\s`, which means more in Python (NEL, \x1c-\x1f) than in the
# ECMA dialect of the OpenAPI document: both must take exactly the same addresses.
_NOT_IN_EMAIL = r"@\x00-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
EMAIL_PATTERN = rf"^[^{_NOT_IN_EMAIL}]{{1,64}}@[^{_NOT_IN_EMAIL}]+\.[^{_NOT_IN_EMAIL}]{{2,}}(?!\n)$"
BAD_LOGIN = "invalid username, email or password"
# bcrypt reads at most 72 bytes: a longer password would be silently truncated. The
# Struct bounds characters; `validate_registration` also bounds the UTF-8 bytes.
PASSWORD_BYTES = (8, 72)

Email = Annotated[
    str,
    msgspec.Meta(
        pattern=EMAIL_PATTERN, min_length=6, max_length=254, description="an email address"
    ),
]
NewPassword = Annotated[
    str, msgspec.Meta(min_length=8, max_length=72, description="8 to 72 bytes of UTF-8")
]
# Login names and passwords are only bounded, not shaped: a name that cannot exist is
# an unknown account (401), the same answer as any other.
LoginName = Annotated[str, msgspec.Meta(min_length=1, max_length=254)]
LoginPassword = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class RegisterIn(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    email: Email
    password: NewPassword


class _RegisterForm(msgspec.Struct, forbid_unknown_fields=True):
    # The same fields unconstrained: decoded first so every failing field is reported.
    username: str
    email: str
    password: str


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    password: LoginPassword
    username: LoginName | None = None
    email: LoginName | None = None

    __json_schema_extra__: ClassVar[dict[str, object]] = exactly_one(
        {"username": "string", "email": "string"}
    )


class RefreshIn(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class TokenPair(msgspec.Struct):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    user: users.User


_REGISTRATION_RULES = {
    "username": (Username, "3-32 characters of letters, digits, '_', '.', '-'"),
    "email": (Email, "not a valid email address"),
    "password": (NewPassword, "8-72 bytes"),
}


def validate_registration(body: RegisterIn | _RegisterForm) -> dict[str, str]:
    """Every failing field of a registration, checked against RegisterIn's own types."""
    errors: dict[str, str] = {}
    for name, (shape, message) in _REGISTRATION_RULES.items():
        try:
            msgspec.convert(getattr(body, name), shape)
        except msgspec.ValidationError:
            errors[name] = message
    low, high = PASSWORD_BYTES
    if "password" not in errors and not low <= len(body.password.encode()) <= high:
        errors["password"] = "8-72 bytes"
    return errors


def services_of(request: Request) -> Services:
    return podium_of(request).services


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def refresh_expiry(services: Services, now: int) -> datetime:
    return datetime.fromtimestamp(now + services.tokens.refresh_ttl, UTC)


def token_pair(
    services: Services, user: users.User, family: uuid.UUID, jti: uuid.UUID, now: int
) -> TokenPair:
    """The pair for a refresh token `jti` already stored in `family`."""
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
    form = await read_json(request, _RegisterForm, services.settings.max_body_bytes)
    if errors := validate_registration(form):
        raise invalid("registration is invalid", errors)
    body = msgspec.convert(msgspec.structs.asdict(form), RegisterIn)
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
    await throttle_login(services, login_name.lower(), client_ip(request))
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
    now, jti, family = int(time.time()), uuid.uuid4(), uuid.uuid4()
    user = found[0]
    await users.store_refresh(services.pool, jti, family, user.id, refresh_expiry(services, now))
    return JSON(token_pair(services, user, family, jti, now))


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
        user_id = int(claims["sub"])
    except (TokenError, KeyError, ValueError):
        raise unauthorized("invalid refresh token") from None
    now, new_jti = int(time.time()), uuid.uuid4()
    # Spending the token and storing its successor is one transaction under the
    # family's lock: ten concurrent uses leave one winner, and the reuse by the nine
    # others revokes the winner's successor too.
    async with services.pool.acquire() as conn:
        state = await users.rotate_refresh(
            conn, jti, family, user_id, new_jti, refresh_expiry(services, now)
        )
    if state == "reused":
        try:
            await deny_family(services, family.hex)
        except RedisError:
            # Revoked in PostgreSQL already, which the guards consult while Redis is down.
            log.warning("refresh reuse: family not denied in redis", extra={"family": family.hex})
    if state != "ok":
        raise unauthorized("invalid refresh token")
    user = await users.get_user(services.pool, user_id)
    if user is None:
        raise unauthorized("invalid refresh token")
    return JSON(token_pair(services, user, family, new_jti, now))


async def throttle_login(services: Services, account: str, address: str) -> None:
    """429 over a login limit: per (account, address), per address, per account.

    Counted before the password is checked, so a 429 says nothing about the account.
    Each counter is reached only through the narrower ones, so one address adds at
    most `limit` a minute to an account's counter, which allows ten times that: it
    takes ten addresses together to lock an owner out, never one.
    """
    await throttle_pairs(
        services, "login", account, address, services.settings.login_attempts_per_minute
    )


async def throttle_pairs(
    services: Services, bucket: str, account: str, address: str, limit: int
) -> None:
    """The three counters of `throttle_login`, in bucket `bucket`."""
    counters = [
        (services.keys.rate(f"{bucket}-pair", f"{address}|{account}"), limit),
        (services.keys.rate(f"{bucket}-ip", address), limit * 5),
        (services.keys.rate(f"{bucket}-user", account), limit * 10),
    ]
    try:
        for key, allowed in counters:
            if retry := await ratelimit.hit(services.redis, key, allowed, 60):
                raise rate_limited(retry)
    except RedisError:
        log.warning("rate limit skipped: redis unavailable", extra={"bucket": bucket})


async def throttle(services: Services, bucket: str, who: str, per_minute: int) -> None:
    """429 over the limit. With Redis down it lets the request through: accounts keep
    working in an outage, and bcrypt still makes every guess cost a quarter second."""
    try:
        await ratelimit.enforce(services.redis, services.keys, bucket, who, per_minute, 60)
    except RedisError:
        log.warning("rate limit skipped: redis unavailable", extra={"bucket": bucket})


async def deny_family(services: Services, family: str) -> None:
    """Every access token of the family stops working now, on every instance."""
    # Here first: this instance refuses the family before it answers; the others
    # hear it on the revocations channel.
    services.denylist.add(family, revocation.deny_ttl(services.tokens.access_ttl))
    await revocation.deny_family(services.redis, services.keys, family, services.tokens.access_ttl)


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
    services.denylist.add(JTI_SUBJECT + principal.jti, ttl)
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
