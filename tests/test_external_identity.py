"""Bring your own identity: JWTs of an external issuer, keys from a JWKS we serve here."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from websockets.exceptions import InvalidStatus

from podium.auth.tokens import PODIUM_JWT_PREFIX
from tests.boards_helpers import create_game, post_score
from tests.conftest import RunningApp, Stores, app_with, make_admin, running_app
from tests.ws_helpers import open_ws, recv, send

ISSUER = "https://id.example.test"
AUDIENCE = "podium-game"


class Signer:
    """A private key, its kid, and its public JWK."""

    def __init__(self, kind: str, kid: str) -> None:
        self.kid = kid
        if kind == "RS256":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        self.algorithm = kind
        self.jwk = {**jwk, "kid": kid, "alg": kind, "use": "sig"}

    def token(self, sub: str, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600}
        body.update(claims)
        headers = {"kid": self.kid}
        return jwt.encode(body, self.private, algorithm=self.algorithm, headers=headers)


class JwksServer:
    """A loopback HTTP server of the test's own, serving `keys` as a JWKS; counts fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.up = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                if not outer.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rsa_key() -> Signer:
    return Signer("RS256", "rsa-1")


@pytest.fixture
def ec_key() -> Signer:
    return Signer("ES256", "ec-1")


@pytest.fixture
def jwks(rsa_key: Signer, ec_key: Signer) -> Iterator[JwksServer]:
    served = JwksServer()
    served.keys = [rsa_key.jwk, ec_key.jwk]
    yield served
    served.close()


@pytest.fixture
async def idp_app(stores: Stores, jwks: JwksServer) -> AsyncIterator[RunningApp]:
    async with app_with(
        stores,
        external_jwks=jwks.url,
        external_issuer=ISSUER,
        external_audience=AUDIENCE,
        writes_per_second_per_user=100_000,
        writes_per_second_per_ip=100_000,
    ) as app:
        yield app


@pytest.fixture
async def http(idp_app: RunningApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=idp_app.url + "/api/v1", timeout=10) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_external_player_reads_and_writes_over_http_and_websocket(
    idp_app: RunningApp, http: httpx.AsyncClient, rsa_key: Signer, ec_key: Signer
) -> None:
    admin = await make_admin(idp_app, http)
    game = (await create_game(http, admin))["id"]
    token = rsa_key.token("player-42", name="Ada Lovelace")
    me = await http.get("/auth/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    user = me.json()
    assert user["username"] == "AdaLovelace" and user["role"] == "player"
    r = await post_score(http, bearer(token), game, 70)
    assert r.status_code in (200, 201), r.text
    r = await http.get(f"/leaderboards/{game}/users/{user['id']}", headers=bearer(token))
    assert r.status_code == 200 and r.json()["score"] == 70, r.text
    # The same sub is the same player on a later token; an EC-signed token works too.
    again = await http.get("/auth/me", headers=bearer(rsa_key.token("player-42")))
    assert again.json()["id"] == user["id"]
    ec_token = ec_key.token("player-43")
    async with await open_ws(idp_app, "add-score", ec_token) as ws:
        event = str(uuid.uuid4())
        await send(ws, {"type": "score", "game": game, "event_id": event, "score": 90})
        ack = await recv(ws)
        assert (ack["type"], ack["score"], ack["rank"]) == ("ack", 90, 1), ack
    async with await open_ws(idp_app, "scoreboard", token, "query", game=game) as ws:
        snapshot = await recv(ws)
        assert snapshot["type"] == "snapshot"
        assert [e["score"] for e in snapshot["entries"]][:2] == [90, 70], snapshot
    # Podium's own accounts keep working beside it (told apart by their header).
    assert admin.access_token.startswith(PODIUM_JWT_PREFIX)
    assert (await http.get("/auth/me", headers=admin.headers)).status_code == 200


async def test_bad_external_tokens_are_refused(
    idp_app: RunningApp, http: httpx.AsyncClient, rsa_key: Signer
) -> None:
    now = int(time.time())
    public_pem = rsa_key.private.public_key().public_bytes(
        encoding=__import__("cryptography").hazmat.primitives.serialization.Encoding.PEM,
        format=__import__(
            "cryptography"
        ).hazmat.primitives.serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x-1", "iat": now, "exp": now + 600}
    stranger = Signer("RS256", "rsa-1")  # same kid, another key
    bad = {
        "wrong issuer": rsa_key.token("x-1", iss="https://evil.test"),
        "wrong audience": rsa_key.token("x-1", aud="someone-else"),
        "expired": rsa_key.token("x-1", iat=now - 4000, exp=now - 3000),
        "not yet valid": rsa_key.token("x-1", nbf=now + 3000),
        "issued in the future": rsa_key.token("x-1", iat=now + 3000, exp=now + 4000),
        "no exp": jwt.encode(
            {k: v for k, v in claims.items() if k != "exp"},
            rsa_key.private,
            "RS256",
            headers={"kid": "rsa-1"},
        ),
        "alg none": jwt.encode(claims, None, algorithm="none", headers={"kid": "rsa-1"}),
        "HS256 with the public key": _hs256_with(public_pem, claims),
        "unknown kid": Signer("RS256", "rsa-unknown").token("x-1"),
        "forged signature": stranger.token("x-1"),
        "ES256 header on the RSA key": _relabelled(rsa_key.token("x-1"), "ES256"),
    }
    for why, token in bad.items():
        r = await http.get("/auth/me", headers=bearer(token))
        assert r.status_code == 401, (why, r.status_code, r.text)
        with pytest.raises(InvalidStatus):
            await open_ws(idp_app, "scoreboard", token, game="nope")
    # None of them made a player.
    assert idp_app.services is not None
    assert await idp_app.services.pool.fetchval("SELECT count(*) FROM identities") == 0


def _hs256_with(secret: bytes, claims: dict[str, Any]) -> str:
    """An HS256 token keyed by the RSA public key's PEM (PyJWT itself refuses to make one)."""
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def _relabelled(token: str, algorithm: str) -> str:
    import base64

    head, body, sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header["alg"] = algorithm
    new = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{new}.{body}.{sig}"


async def test_kid_rotation_and_jwks_outage(
    idp_app: RunningApp, http: httpx.AsyncClient, jwks: JwksServer, rsa_key: Signer
) -> None:
    assert idp_app.services is not None and idp_app.services.external is not None
    cache = idp_app.services.external.jwks
    old_token = rsa_key.token("rot-1")
    assert (await http.get("/auth/me", headers=bearer(old_token))).status_code == 200
    assert jwks.fetches == 1
    # The issuer publishes a new key beside the old one and signs with it from now on.
    new_key = Signer("RS256", "rsa-2")
    jwks.keys = [rsa_key.jwk, new_key.jwk]
    cache.min_interval = 0
    r = await http.get("/auth/me", headers=bearer(new_key.token("rot-1")))
    assert r.status_code == 200, r.text
    assert jwks.fetches == 2  # one refresh, for the unknown kid
    # The old token is fine until it expires (it was verified and remembered).
    assert (await http.get("/auth/me", headers=bearer(old_token))).status_code == 200
    # The JWKS goes down: the keys we have keep working, fresh tokens included.
    jwks.up = False
    cache.max_age = 0
    for sub in ("rot-2", "rot-3"):
        r = await http.get("/auth/me", headers=bearer(new_key.token(sub)))
        assert r.status_code == 200, r.text
    r = await http.get("/auth/me", headers=bearer(Signer("RS256", "rsa-9").token("rot-4")))
    assert r.status_code == 401


async def test_a_flood_of_unknown_kids_makes_one_fetch(
    idp_app: RunningApp, http: httpx.AsyncClient, jwks: JwksServer, rsa_key: Signer
) -> None:
    assert idp_app.services is not None and idp_app.services.external is not None
    cache = idp_app.services.external.jwks
    assert (await http.get("/auth/me", headers=bearer(rsa_key.token("f-1")))).status_code == 200
    forger = Signer("ES256", "ec-x")

    async def flood(first: int) -> None:
        for n in range(first, first + 20):
            forger.kid = f"random-{n}"
            r = await http.get("/auth/me", headers=bearer(forger.token("f-2")))
            assert r.status_code == 401

    await flood(0)
    assert jwks.fetches == 1  # the first load was the last fetch: none within min_interval
    later = time.monotonic() + cache.min_interval + 1
    cache._clock = lambda: later  # type: ignore[method-assign]
    await flood(100)
    assert jwks.fetches == 2  # past min_interval: one refresh for the whole flood


async def test_no_keys_at_all_is_503(stores: Stores, jwks: JwksServer, rsa_key: Signer) -> None:
    jwks.up = False
    async with (
        app_with(
            stores, external_jwks=jwks.url, external_issuer=ISSUER, external_audience=AUDIENCE
        ) as app,
        httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=10) as client,
    ):
        for _ in range(5):
            r = await client.get("/auth/me", headers=bearer(rsa_key.token("d-1")))
            assert r.status_code == 503, r.text
        with pytest.raises(InvalidStatus) as info:
            await open_ws(app, "scoreboard", rsa_key.token("d-1"), game="nope")
        assert info.value.response.status_code == 503
        assert jwks.fetches == 1  # one attempt per min_interval, not one per token
        # Back up: the next attempt (past min_interval) loads the keys.
        jwks.up = True
        assert app.services is not None and app.services.external is not None
        app.services.external.jwks.min_interval = 0
        r = await client.get("/auth/me", headers=bearer(rsa_key.token("d-1")))
        assert r.status_code == 200, r.text


async def test_jwks_from_a_file(stores: Stores, tmp_path: Any, ec_key: Signer) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [ec_key.jwk]}))
    async with (
        app_with(
            stores, external_jwks=str(path), external_issuer=ISSUER, external_audience=AUDIENCE
        ) as app,
        httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=10) as client,
    ):
        r = await client.get("/auth/me", headers=bearer(ec_key.token("file-1")))
        assert r.status_code == 200, r.text


async def test_concurrent_first_sights_make_one_user_and_names_get_suffixes(
    idp_app: RunningApp, http: httpx.AsyncClient, rsa_key: Signer
) -> None:
    taken = await http.post(
        "/auth/register",
        json={"username": "grace", "email": "grace@example.com", "password": "x" * 12},
    )
    assert taken.status_code == 201
    tokens = [rsa_key.token("same-sub", name="grace", jti=str(n)) for n in range(8)]
    # A second instance on the same stores races the first.
    async with (
        running_app(idp_app.settings) as other,
        httpx.AsyncClient(base_url=other.url + "/api/v1", timeout=10) as http2,
    ):
        replies = await asyncio.gather(
            *(
                (http if n % 2 else http2).get("/auth/me", headers=bearer(t))
                for n, t in enumerate(tokens)
            )
        )
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    ids = {r.json()["id"] for r in replies}
    assert len(ids) == 1
    assert replies[0].json()["username"] == "grace-2"
    assert idp_app.services is not None
    assert await idp_app.services.pool.fetchval("SELECT count(*) FROM identities") == 1


async def test_a_voided_external_player_is_denied(
    idp_app: RunningApp, http: httpx.AsyncClient, rsa_key: Signer
) -> None:
    admin = await make_admin(idp_app, http)
    token = rsa_key.token("void-me")
    user_id = (await http.get("/auth/me", headers=bearer(token))).json()["id"]
    r = await http.post(f"/admin/users/{user_id}/void", headers=admin.headers)
    assert r.status_code == 200, r.text
    for t in (token, rsa_key.token("void-me")):
        r = await http.get("/auth/me", headers=bearer(t))
        assert r.status_code == 403 and r.json()["error"]["code"] == "voided", r.text
    # Also once the deny keys are gone: the player's row says voided.
    assert idp_app.services is not None
    await idp_app.services.redis.delete(idp_app.services.keys.deny_user(user_id))
    idp_app.services.denylist.__init__(  # type: ignore[misc]
        idp_app.services.keys, idp_app.settings.denylist_size
    )
    r = await http.get("/auth/me", headers=bearer(rsa_key.token("void-me", jti="later")))
    assert r.status_code == 403, r.text
    with pytest.raises(InvalidStatus):
        await open_ws(idp_app, "scoreboard", rsa_key.token("void-me", jti="ws"), game="x")
