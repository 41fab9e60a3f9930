"""Authentication on every endpoint, before accept; expiry, re-auth and revocation."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.boards_helpers import create_game
from tests.conftest import Account, RunningApp
from tests.ws_helpers import closed_with, open_ws, recv, send

ENDPOINTS = ["scoreboard", "scores", "my-score", "add-score", "reports"]


async def refused(
    server: RunningApp, path: str, token: str | None, how: str = "header", **kw: object
) -> int:
    with pytest.raises(InvalidStatus) as info:
        await open_ws(server, path, token, how, **kw)
    return info.value.response.status_code


def token_for(server: RunningApp, account: Account, *, issued_ago: int = 0) -> str:
    assert server.services is not None
    now = int(time.time()) - issued_ago
    return server.services.tokens.access(account.id, "player", uuid.uuid4().hex, now)


@pytest.mark.parametrize("how", ["header", "query", "subprotocol"])
async def test_each_auth_way(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account, how: str
) -> None:
    game = (await create_game(client, admin))["id"]
    async with await open_ws(server, "scoreboard", player, how, game=game) as ws:
        assert (await recv(ws))["type"] == "snapshot"
        # Browsers offer ["bearer", token]: the server must pick "bearer", never the token.
        assert ws.subprotocol == ("bearer" if how == "subprotocol" else None)


async def test_every_endpoint_refuses_without_a_good_token(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    expired = token_for(server, player, issued_ago=10_000)
    forged = player.access_token[:-4] + (
        "AAAA" if not player.access_token.endswith("AAAA") else "BBBB"
    )
    for path in ENDPOINTS:
        assert await refused(server, path, None, game=game) == 403
        assert await refused(server, path, "not-a-jwt", game=game) == 403
        assert await refused(server, path, forged, game=game) == 403
        assert await refused(server, path, expired, game=game) == 403
        assert await refused(server, path, "psk_unknown", "query", game=game) == 403


async def test_bad_parameters_answer_the_handshake(
    server: RunningApp, client: httpx.AsyncClient, player: Account
) -> None:
    assert await refused(server, "scoreboard", player.access_token) == 400
    assert await refused(server, "scoreboard", player.access_token, game="nope") == 404
    assert await refused(server, "my-score", player.access_token, game="nope") == 404
    assert (
        await refused(server, "scoreboard", player.access_token, game="global", period="year")
        == 422
    )


async def test_foreign_origin_is_refused(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    evil = {"Origin": "https://evil.example"}
    assert await refused(server, "scoreboard", player.access_token, headers=evil, game=game) == 403
    own = {"Origin": server.url}
    async with await open_ws(server, "scoreboard", player, headers=own, game=game) as ws:
        assert (await recv(ws))["type"] == "snapshot"


async def test_token_expiry_closes_4001_unless_refreshed(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    ttl = server.settings.access_token_ttl
    short = token_for(server, player, issued_ago=ttl - 1)  # expires in about a second
    async with await open_ws(server, "scoreboard", short, game=game) as ws:
        assert (await recv(ws))["type"] == "snapshot"
        assert await closed_with(ws, timeout=4) == 4001
    short = token_for(server, player, issued_ago=ttl - 1)
    async with await open_ws(server, "scoreboard", short, game=game) as ws:
        assert (await recv(ws))["type"] == "snapshot"
        await send(ws, {"type": "auth", "token": player.access_token})
        authed = await recv(ws)
        assert authed["type"] == "authed" and authed["exp"] > time.time() + 60
        # The first token expires about a second from now: no close may come by then,
        # and the socket still answers after it.
        with pytest.raises(TimeoutError):
            await closed_with(ws, timeout=2.2)
        await send(ws, {"type": "ping"})
        assert (await recv(ws))["type"] == "pong"
        # A token of someone else is refused, the socket stays.
        other = (
            await client.post(
                "/auth/login", json={"username": admin.username, "password": "correct-horse-42"}
            )
        ).json()
        await send(ws, {"type": "auth", "token": other["access_token"]})
        assert (await recv(ws))["code"] == "forbidden"
        await send(ws, {"type": "auth", "token": "garbage"})
        assert (await recv(ws))["code"] == "unauthorized"
        await send(ws, {"type": "ping"})
        assert (await recv(ws))["type"] == "pong"


async def test_logout_closes_open_sockets_4003(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    board = await open_ws(server, "scoreboard", player, game=game)
    adder = await open_ws(server, "add-score", player)
    other = await open_ws(server, "scoreboard", admin, game=game)
    try:
        assert (await recv(board))["type"] == "snapshot"
        assert (await recv(other))["type"] == "snapshot"
        r = await client.post("/auth/logout", headers=player.headers)
        assert r.status_code == 204
        assert await closed_with(board) == 4003
        assert await closed_with(adder) == 4003
        # Another user's socket is untouched.
        await send(other, {"type": "ping"})
        assert (await recv(other))["type"] == "pong"
    finally:
        for ws in (board, adder, other):
            await ws.close()


async def test_refresh_reuse_revokes_open_sockets(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    r = await client.post("/auth/refresh", json={"refresh_token": player.refresh_token})
    assert r.status_code == 200
    fresh = r.json()["access_token"]
    async with await open_ws(server, "scoreboard", fresh, game=game) as ws:
        assert (await recv(ws))["type"] == "snapshot"
        # Spending the same refresh token twice means it leaked: the family ends.
        r = await client.post("/auth/refresh", json={"refresh_token": player.refresh_token})
        assert r.status_code == 401
        assert await closed_with(ws) == 4003
