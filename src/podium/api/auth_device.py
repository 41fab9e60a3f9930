"""/api/v1/auth/device and /auth/link: sign in by device id, later link a password."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.auth import (
    PASSWORD_BYTES,
    Email,
    NewPassword,
    TokenPair,
    client_ip,
    refresh_expiry,
    services_of,
    throttle,
    throttle_pairs,
    token_pair,
)
from podium.api.responses import JSON, read_json
from podium.api.spec import spec
from podium.auth.guards import require_user
from podium.auth.passwords import hash_password
from podium.errors import conflict, forbidden, invalid, unauthorized
from podium.store import identities, users
from podium.validation import Username

# A device id is the player's only credential until it links a password: at least 16
# characters (a UUID, a platform's install id), of a charset safe in logs and keys.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{16,128}(?!\n)$"
DeviceId = Annotated[
    str,
    msgspec.Meta(
        pattern=DEVICE_ID_PATTERN,
        min_length=16,
        max_length=128,
        description="16 to 128 letters, digits, '_', '.', ':' or '-'",
    ),
]


class DeviceIn(msgspec.Struct, forbid_unknown_fields=True):
    device_id: DeviceId


class LinkIn(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: NewPassword
    email: Email | None = None


def device_subject(device_id: str) -> str:
    """What the store keeps of a device id: its SHA-256, never the bearer secret itself."""
    return hashlib.sha256(device_id.encode()).hexdigest()


@spec(
    summary="Sign in by device id (the player is created on first sight); get a token pair",
    tag="auth",
    body=DeviceIn,
    response=TokenPair,
    example={"device_id": "6f1c2a4e-2b7d-4c1e-9a53-0d6c1f3b8e21"},
    errors=(403, 429),
    description="Throttled like login, per address and per device id. The pair is the "
    "same as login's; `POST /auth/link` later gives the player a username and password.",
)
async def device_signin(request: Request) -> Response:
    services = services_of(request)
    body = await read_json(request, DeviceIn, services.settings.max_body_bytes)
    subject = device_subject(body.device_id)
    await throttle_pairs(
        services, "device", subject, client_ip(request), services.settings.device_signins_per_minute
    )
    name = f"player-{secrets.token_hex(4)}"
    found = await identities.user_for(services.pool, "device", "", subject, name)
    if found.voided:
        raise forbidden("this account is voided", code="voided")
    user = await users.get_user(services.pool, found.user_id)
    if user is None:
        raise forbidden("this account is voided", code="voided")
    now, jti, family = int(time.time()), uuid.uuid4(), uuid.uuid4()
    await users.store_refresh(services.pool, jti, family, user.id, refresh_expiry(services, now))
    return JSON(token_pair(services, user, family, jti, now))


@spec(
    summary="Give a device player a username and password (same user id, scores kept)",
    tag="auth",
    body=LinkIn,
    response=users.User,
    auth=True,
    example={"username": "lovelace", "password": "correct-horse-42"},
    errors=(403, 409, 429),
    description="409 `username_taken` / `email_taken`, or `already_linked` when the "
    "player already has a password or did not sign in by device.",
)
async def link(request: Request) -> Response:
    services = services_of(request)
    principal = await require_user(request)
    assert principal.user_id is not None
    body = await read_json(request, LinkIn, services.settings.max_body_bytes)
    low, high = PASSWORD_BYTES
    if not low <= len(body.password.encode()) <= high:
        raise invalid("link is invalid", {"password": "8-72 bytes"})
    await throttle(
        services, "link", str(principal.user_id), services.settings.registrations_per_minute
    )
    hashed = await hash_password(body.password, services.settings.bcrypt_rounds)
    try:
        user = await identities.link_device_player(
            services.pool, principal.user_id, body.username, body.email, hashed
        )
    except users.UserExists as exc:
        raise conflict(f"{exc.field} is already taken", code=f"{exc.field}_taken") from None
    if user is None:
        if await users.get_user(services.pool, principal.user_id) is None:
            raise unauthorized("account no longer exists")
        raise conflict("this player is already linked", code="already_linked")
    return JSON(user)


routes = [
    Route("/auth/device", device_signin, methods=["POST"]),
    Route("/auth/link", link, methods=["POST"]),
]
