"""Accounts and tokens through the HTTP API: register, login, refresh, logout, me."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable

import asyncpg
import bcrypt
import httpx
import jwt
import pytest
import redis.asyncio as aioredis

from podium.embedded import free_port
from podium.settings import Settings
from tests.conftest import (
    TEST_PASSWORD,
    Account,
    RunningApp,
    Stores,
    app_with,
    make_settings,
    register_and_login,
    running_app,
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_user() -> dict[str, str]:
    name = f"u{uuid.uuid4().hex[:10]}"
    return {"username": name, "email": f"{name}@example.com", "password": TEST_PASSWORD}


# --- register -------------------------------------------------------------------------


async def test_register_returns_201_and_the_user(client: httpx.AsyncClient) -> None:
    body = new_user()
    r = await client.post("/auth/register", json=body)
    assert r.status_code == 201, r.text
    user = r.json()
    assert set(user) == {"id", "username", "email", "role", "created_at"}
    assert isinstance(user["id"], int)
    assert user["username"] == body["username"]
    assert user["email"] == body["email"]
    assert user["role"] == "player"
    assert "T" in user["created_at"]  # ISO 8601 timestamp


async def test_register_taken_username_and_email_are_409_case_insensitive(
    client: httpx.AsyncClient,
) -> None:
    body = new_user()
    assert (await client.post("/auth/register", json=body)).status_code == 201

    same_name = {**new_user(), "username": body["username"].upper()}
    r = await client.post("/auth/register", json=same_name)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "username_taken"

    same_email = {**new_user(), "email": body["email"].upper()}
    r = await client.post("/auth/register", json=same_email)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "email_taken"


INVALID_REGISTRATIONS: list[tuple[dict[str, str], set[str]]] = [
    ({"username": "ab"}, {"username"}),
    ({"username": "x" * 33}, {"username"}),
    ({"username": "has space"}, {"username"}),
    ({"username": "émile"}, {"username"}),
    ({"email": "not-an-email"}, {"email"}),
    ({"email": "a@b"}, {"email"}),
    ({"email": "a b@example.com"}, {"email"}),
    # PostgreSQL text cannot hold NUL: refused up front, not a 500 from the database.
    ({"email": "a\x00b@example.com"}, {"email"}),
    ({"password": "short"}, {"password"}),
    # 37 characters but 74 bytes: bcrypt would silently drop the tail.
    ({"password": "é" * 37}, {"password"}),
    ({"username": "ab", "email": "nope", "password": "x"}, {"username", "email", "password"}),
]


async def test_register_invalid_is_422_with_failing_fields(client: httpx.AsyncClient) -> None:
    # One server for every case (a loop, not parametrize): each case costs a request.
    wrong = []
    for change, failing in INVALID_REGISTRATIONS:
        r = await client.post("/auth/register", json={**new_user(), **change})
        error = r.json()["error"] if r.status_code == 422 else {}
        if error.get("code") != "invalid" or set(error.get("details", {})) != failing:
            wrong.append((change, r.status_code, r.text))
    assert not wrong, wrong


async def test_register_password_of_exactly_72_bytes_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    body = {**new_user(), "password": "é" * 36}
    assert (await client.post("/auth/register", json=body)).status_code == 201
    login = {"username": body["username"], "password": body["password"]}
    assert (await client.post("/auth/login", json=login)).status_code == 200


async def test_register_missing_or_unknown_field_is_422_naming_it(
    client: httpx.AsyncClient,
) -> None:
    body = new_user()
    del body["password"]
    r = await client.post("/auth/register", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["details"] == {"password": "required"}

    r = await client.post("/auth/register", json={**new_user(), "role": "admin"})
    assert r.status_code == 422
    assert r.json()["error"]["details"] == {"role": "unknown field"}


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"username": "abc",'])
async def test_register_malformed_json_is_400(client: httpx.AsyncClient, raw: bytes) -> None:
    r = await client.post(
        "/auth/register", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_request"


async def test_register_is_throttled_per_ip(stores: Stores) -> None:
    async with (
        app_with(stores, registrations_per_minute=2) as app,
        httpx.AsyncClient(base_url=app.url + "/api/v1") as http,
    ):
        for _ in range(2):
            assert (await http.post("/auth/register", json=new_user())).status_code == 201
        r = await http.post("/auth/register", json=new_user())
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 60


# --- login ----------------------------------------------------------------------------


async def test_login_by_username_and_by_email(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = new_user()
    created = (await client.post("/auth/register", json=body)).json()
    for login in (
        {"username": body["username"], "password": TEST_PASSWORD},
        {"username": body["username"].upper(), "password": TEST_PASSWORD},
        {"email": body["email"], "password": TEST_PASSWORD},
        {"email": body["email"].upper(), "password": TEST_PASSWORD},
    ):
        r = await client.post("/auth/login", json=login)
        assert r.status_code == 200, (login, r.text)
        pair = r.json()
        assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
        assert pair["token_type"] == "bearer"
        assert pair["expires_in"] == settings.access_token_ttl
        assert pair["user"] == created
        me = await client.get("/auth/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200 and me.json() == created


async def test_unknown_user_and_wrong_password_give_the_same_401(
    client: httpx.AsyncClient, player: Account
) -> None:
    attempts = [
        {"username": player.username, "password": "wrong-password"},
        {"username": "nobody-here", "password": "wrong-password"},
        {"email": "nobody@example.com", "password": "wrong-password"},
        # A NUL cannot be in any stored name; it is just another unknown user.
        {"username": "nul\x00name", "password": "wrong-password"},
    ]
    answers = []
    for body in attempts:
        r = await client.post("/auth/login", json=body)
        answers.append((r.status_code, r.content))
    assert answers[0][0] == 401
    assert all(answer == answers[0] for answer in answers), answers
    assert json.loads(answers[0][1])["error"]["code"] == "unauthorized"


async def test_login_with_both_or_neither_name_is_422(client: httpx.AsyncClient) -> None:
    for body in (
        {"password": TEST_PASSWORD},
        {"username": "abc", "email": "abc@example.com", "password": TEST_PASSWORD},
    ):
        r = await client.post("/auth/login", json=body)
        assert r.status_code == 422


async def test_login_brute_force_is_throttled_with_retry_after(stores: Stores) -> None:
    async with (
        app_with(stores, login_attempts_per_minute=3) as app,
        httpx.AsyncClient(base_url=app.url + "/api/v1") as http,
    ):
        victim = await register_and_login(http)  # one attempt used
        wrong = {"username": victim.username, "password": "guess-guess"}
        for _ in range(2):
            assert (await http.post("/auth/login", json=wrong)).status_code == 401
        # Over the limit, even the right password waits: the guesser learns nothing.
        right = {"username": victim.username.upper(), "password": TEST_PASSWORD}
        r = await http.post("/auth/login", json=right)
        assert r.status_code == 429
        retry = int(r.headers["retry-after"])
        assert 1 <= retry <= 60
        assert r.json()["error"]["code"] == "rate_limited"
        assert r.json()["error"]["details"] == {"retry_after": retry}

        # An unknown name is throttled the same way: a 429 does not reveal an account.
        ghost = {"username": "ghost-user", "password": "guess-guess"}
        codes = [(await http.post("/auth/login", json=ghost)).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]

        # Other accounts are not locked out by someone else's attacker.
        other = await register_and_login(http)
        assert other.access_token


# --- tokens: claims and every way to be refused -----------------------------------------


async def test_access_token_claims_and_header(player: Account, settings: Settings) -> None:
    header = jwt.get_unverified_header(player.access_token)
    assert header["alg"] == "HS256"
    claims = jwt.decode(
        player.access_token,
        settings.secret_key,
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    assert {"sub", "role", "jti", "iat", "exp", "iss", "aud"} <= set(claims)
    assert claims["sub"] == str(player.id)
    assert claims["role"] == "player"
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl
    assert abs(claims["iat"] - time.time()) < 60
    other = jwt.decode(player.refresh_token, options={"verify_signature": False})
    assert other["jti"] != claims["jti"]
    assert jwt.get_unverified_header(player.refresh_token)["alg"] == "HS256"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(account: Account, settings: Settings, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": str(account.id),
        "role": "player",
        "jti": uuid.uuid4().hex,
        "fam": uuid.uuid4().hex,
        "typ": "access",
        "iat": now,
        "exp": now + 300,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _forge(account: Account, settings: Settings, **changes: object) -> str:
    return jwt.encode(_claims(account, settings, **changes), settings.secret_key, "HS256")


def _hmac_with_header(header: dict[str, str], claims: dict[str, object], key: str) -> str:
    """Sign with HMAC-SHA256 whatever the header claims (pyjwt would refuse to)."""
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    sig = hmac.new(key.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + _b64(sig)


def _tamper_signature(token: str) -> str:
    head, _, sig = token.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[0] ^= 0x01
    return head + "." + _b64(bytes(raw))


def _tamper_payload(token: str) -> str:
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    return f"{header}.{_b64(json.dumps(claims).encode())}.{sig}"


BadToken = Callable[[Account, Settings], dict[str, str]]

BAD_TOKENS: dict[str, BadToken] = {
    "missing header": lambda a, s: {},
    "empty bearer": lambda a, s: {"Authorization": "Bearer"},
    "basic scheme": lambda a, s: {"Authorization": f"Basic {a.access_token}"},
    "malformed": lambda a, s: bearer("not-a-jwt"),
    "malformed three parts": lambda a, s: bearer("a.b.c"),
    "expired": lambda a, s: bearer(
        _forge(a, s, iat=int(time.time()) - 600, exp=int(time.time()) - 5)
    ),
    "tampered signature": lambda a, s: bearer(_tamper_signature(a.access_token)),
    "tampered payload": lambda a, s: bearer(_tamper_payload(a.access_token)),
    "wrong key": lambda a, s: bearer(
        jwt.encode(_claims(a, s), "another-secret-" + "y" * 40, "HS256")
    ),
    "wrong audience": lambda a, s: bearer(_forge(a, s, aud="someone-else")),
    "wrong issuer": lambda a, s: bearer(_forge(a, s, iss="evil")),
    "no audience": lambda a, s: bearer(_forge(a, s, aud=None)),
    "no jti": lambda a, s: bearer(_forge(a, s, jti=None)),
    "no exp": lambda a, s: bearer(_forge(a, s, exp=None)),
    "sub not a user id": lambda a, s: bearer(_forge(a, s, sub="admin")),
    "alg none": lambda a, s: bearer(jwt.encode(_claims(a, s), None, algorithm="none")),
    "alg none uppercase": lambda a, s: bearer(
        _b64(b'{"alg":"NONE","typ":"JWT"}') + "." + _b64(json.dumps(_claims(a, s)).encode()) + "."
    ),
    # Alg confusion: an RS256 header over an HMAC made with our secret as "public key".
    "alg confusion RS256": lambda a, s: bearer(
        _hmac_with_header({"alg": "RS256", "typ": "JWT"}, _claims(a, s), s.secret_key)
    ),
    "other HMAC alg": lambda a, s: bearer(jwt.encode(_claims(a, s), s.secret_key, "HS384")),
    "refresh token as access": lambda a, s: bearer(a.refresh_token),
}


async def test_forged_token_with_good_claims_is_accepted(
    client: httpx.AsyncClient, player: Account, settings: Settings
) -> None:
    """The control for the refusals below: the forging itself makes valid tokens."""
    r = await client.get("/auth/me", headers=bearer(_forge(player, settings)))
    assert r.status_code == 200, r.text
    token = _hmac_with_header({"alg": "HS256", "typ": "JWT"}, _claims(player, settings), "k")
    assert (await client.get("/auth/me", headers=bearer(token))).status_code == 401
    token = _hmac_with_header(
        {"alg": "HS256", "typ": "JWT"}, _claims(player, settings), settings.secret_key
    )
    assert (await client.get("/auth/me", headers=bearer(token))).status_code == 200


async def test_me_refuses_bad_tokens_with_401(
    client: httpx.AsyncClient, player: Account, settings: Settings
) -> None:
    wrong = []
    for case, make in BAD_TOKENS.items():
        r = await client.get("/auth/me", headers=make(player, settings))
        if (
            r.status_code != 401
            or r.json()["error"]["code"] != "unauthorized"
            or r.headers.get("www-authenticate") != "Bearer"
        ):
            wrong.append((case, r.status_code, r.text))
    assert not wrong, wrong
    # None of those attempts harmed the genuine token.
    assert (await client.get("/auth/me", headers=player.headers)).status_code == 200


# --- refresh and logout ---------------------------------------------------------------


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/refresh", json={"refresh_token": token})


async def _me_status(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get("/auth/me", headers=bearer(token))).status_code


async def test_refresh_rotates_the_pair(client: httpx.AsyncClient, player: Account) -> None:
    r = await _refresh(client, player.refresh_token)
    assert r.status_code == 200, r.text
    pair = r.json()
    assert pair["token_type"] == "bearer" and pair["user"]["id"] == player.id
    assert pair["refresh_token"] != player.refresh_token
    assert pair["access_token"] != player.access_token
    assert await _me_status(client, pair["access_token"]) == 200
    # The rotated token keeps rotating.
    r = await _refresh(client, pair["refresh_token"])
    assert r.status_code == 200
    assert await _me_status(client, r.json()["access_token"]) == 200


async def test_refresh_reuse_revokes_the_whole_family(
    client: httpx.AsyncClient, player: Account
) -> None:
    other_session = await client.post(
        "/auth/login", json={"username": player.username, "password": TEST_PASSWORD}
    )
    newer = (await _refresh(client, player.refresh_token)).json()
    assert await _me_status(client, newer["access_token"]) == 200

    # The spent token again: someone holds a copy. 401, and the family ends.
    r = await _refresh(client, player.refresh_token)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert (await _refresh(client, newer["refresh_token"])).status_code == 401
    assert await _me_status(client, newer["access_token"]) == 401
    assert await _me_status(client, player.access_token) == 401

    # Another login of the same user is another family, untouched.
    assert await _me_status(client, other_session.json()["access_token"]) == 200
    assert (await _refresh(client, other_session.json()["refresh_token"])).status_code == 200


@pytest.mark.parametrize("which", ["access token", "garbage", "tampered"])
async def test_refresh_refuses_non_refresh_tokens(
    client: httpx.AsyncClient, player: Account, which: str
) -> None:
    token = {
        "access token": player.access_token,
        "garbage": "garbage",
        "tampered": _tamper_signature(player.refresh_token),
    }[which]
    r = await _refresh(client, token)
    assert r.status_code == 401
    # None of these spent the real refresh token.
    assert (await _refresh(client, player.refresh_token)).status_code == 200


async def test_logout_revokes_access_and_refresh_at_once(
    client: httpx.AsyncClient, server: RunningApp, player: Account, settings: Settings
) -> None:
    other_session = await register_and_login(client, player.username + "x")
    family = jwt.decode(player.access_token, options={"verify_signature": False})["fam"]
    redis = aioredis.Redis.from_url(settings.redis_url)  # type: ignore[arg-type]
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{settings.redis_prefix}revocations")
    try:
        r = await client.post("/auth/logout", headers=player.headers)
        assert r.status_code == 204 and r.content == b""
        assert await _me_status(client, player.access_token) == 401
        assert (await _refresh(client, player.refresh_token)).status_code == 401
        assert (await client.post("/auth/logout", headers=player.headers)).status_code == 401

        # Other instances (and open sockets) hear about it on the revocations channel.
        async with asyncio.timeout(5):
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                if message is not None:
                    break
        assert message["data"].decode() == family
    finally:
        await pubsub.aclose()
        await redis.aclose()

    # The denylist entries live as long as the tokens they stop could, not forever.
    assert server.services is not None
    jti = jwt.decode(player.access_token, options={"verify_signature": False})["jti"]
    ttl = await server.services.redis.ttl(server.services.keys.deny_jti(jti))
    assert 0 < ttl <= settings.access_token_ttl
    ttl = await server.services.redis.ttl(server.services.keys.deny_family(family))
    assert 0 < ttl <= settings.access_token_ttl + 60

    assert await _me_status(client, other_session.access_token) == 200


async def test_logout_needs_a_token(client: httpx.AsyncClient) -> None:
    r = await client.post("/auth/logout")
    assert r.status_code == 401


async def test_me_for_a_deleted_user_is_refused(
    client: httpx.AsyncClient, server: RunningApp, player: Account
) -> None:
    assert server.services is not None
    await server.services.pool.execute("DELETE FROM users WHERE id = $1", player.id)
    r = await client.get("/auth/me", headers=player.headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


# --- bcrypt cost ----------------------------------------------------------------------


def test_bcrypt_cost_defaults_to_12() -> None:
    assert Settings().bcrypt_rounds == 12


async def test_passwords_are_stored_as_bcrypt_cost_12(stores: Stores) -> None:
    async with (
        app_with(stores, bcrypt_rounds=12) as app,
        httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=20) as http,
    ):
        body = new_user()
        started = time.perf_counter()
        bcrypt.hashpw(b"calibration", bcrypt.gensalt(12))
        one_hash = time.perf_counter() - started

        # The server runs in this event loop: if it hashed on the loop, this ticker
        # would stall for a whole hash. Off the loop, it keeps ticking.
        register = asyncio.create_task(http.post("/auth/register", json=body))
        longest_gap = 0.0
        last = time.perf_counter()
        while not register.done():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            longest_gap, last = max(longest_gap, now - last), now
        assert (await register).status_code == 201
        assert longest_gap < one_hash / 2, (longest_gap, one_hash)
        assert app.services is not None
        stored = await app.services.pool.fetchval(
            "SELECT password_hash FROM users WHERE username = $1", body["username"]
        )
        assert stored.startswith("$2b$12$")
        assert body["password"] not in stored
        login = {"username": body["username"], "password": body["password"]}
        assert (await http.post("/auth/login", json=login)).status_code == 200


# --- Redis down -----------------------------------------------------------------------


async def test_accounts_keep_working_while_redis_is_down(stores: Stores) -> None:
    settings = make_settings(stores, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        async with (
            running_app(settings) as app,
            httpx.AsyncClient(base_url=app.url + "/api/v1") as http,
        ):
            # The throttles fail open; tokens are checked against PostgreSQL.
            account = await register_and_login(http)
            assert await _me_status(http, account.access_token) == 200
            r = await _refresh(http, account.refresh_token)
            assert r.status_code == 200
            pair = r.json()

            # Logout cannot reach the denylist: the family ends in PostgreSQL at once,
            # and the caller is told to retry rather than told it is done.
            r = await http.post("/auth/logout", headers=bearer(pair["access_token"]))
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "unavailable"
            assert await _me_status(http, pair["access_token"]) == 401
            assert (await _refresh(http, pair["refresh_token"])).status_code == 401
    finally:
        conn = await asyncpg.connect(stores.database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        finally:
            await conn.close()
