"""Hostile input: errors keep the socket open; repeated abuse closes it with a code."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.boards_helpers import create_game
from tests.conftest import Account, RunningApp
from tests.ws_helpers import closed_with, open_ws, recv, send


async def still_open(ws) -> None:  # type: ignore[no-untyped-def]
    await send(ws, {"type": "ping"})
    assert (await recv(ws)) == {"type": "pong"}


async def test_malformed_messages_get_errors_and_the_socket_stays(
    server: RunningApp, player: Account
) -> None:
    async with await open_ws(server, "scores", player) as ws:
        cases = [
            ("{not json", "bad_json"),
            ("[1, 2, 3]", "invalid"),
            ('"a string"', "invalid"),
            ("null", "invalid"),
            ('{"type": "subscribe", "game": 5}', "invalid"),
            ('{"type": "subscribe", "game": "x", "limit": "ten"}', "invalid"),
            ('{"type": "subscribe", "game": "x", "extra": 1}', "invalid"),
            ('{"type": "explode"}', "unknown_type"),
            ('{"type": 7}', "invalid"),
            ('{"channel": "all", "start": "zero", "end": 4}', "invalid"),
            ('{"type": "subscribe", "game": "x", "offset": -1}', "invalid"),
            ('{"type": "subscribe", "game": "x", "limit": 100000}', "invalid"),
            ('{"type": "subscribe", "game": "no-such-game"}', "not_found"),
            ('{"type": "unsubscribe", "game": "x"}', "not_subscribed"),
            ('{"type": "score", "game": "x", "event_id": "e"}', "bad_request"),
            ("\u0000\ud7ff" * 10, "bad_json"),
        ]
        for text, code in cases:
            await ws.send(text)
            msg = await recv(ws)
            assert msg["type"] == "error" and msg["code"] == code, (text, msg)
        await still_open(ws)
        await ws.send(b"\x00\x01binary")
        assert (await recv(ws))["code"] == "binary_unsupported"
        await still_open(ws)


async def test_huge_frame_closes_1009(server: RunningApp, player: Account) -> None:
    async with await open_ws(server, "scores", player) as ws:
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 70_000}))
        assert await closed_with(ws) == 1009


async def test_flood_is_rate_limited_then_closed_4029(server: RunningApp, player: Account) -> None:
    async with await open_ws(server, "scores", player) as ws:
        for _ in range(300):
            await send(ws, {"type": "ping"})
        codes = []
        try:
            async with asyncio.timeout(5):
                async for raw in ws:
                    msg = json.loads(raw)
                    codes.append(msg.get("code", msg["type"]))
        except Exception:
            pass
        assert ws.close_code == 4029
        assert "pong" in codes and "rate_limited" in codes


async def test_repeated_garbage_closes_4008(server: RunningApp, player: Account) -> None:
    async with await open_ws(server, "scores", player) as ws:
        for _ in range(30):
            await ws.send("{oops")
        assert await closed_with(ws) == 4008


async def test_sockets_per_user_and_subscriptions_per_socket(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    hub = server.podium.realtime.hub
    limit = hub.limits.max_sockets_per_user
    sockets = [await open_ws(server, "scores", player) for _ in range(limit)]
    try:
        for ws in sockets:
            await still_open(ws)
        extra = await open_ws(server, "scores", player)
        assert await closed_with(extra) == 4030
        ws = sockets[0]
        for offset in range(hub.limits.max_subscriptions):
            await send(ws, {"type": "subscribe", "game": game, "offset": offset})
            assert (await recv(ws))["type"] == "subscribed"
            assert (await recv(ws))["type"] == "page"
        await send(ws, {"type": "subscribe", "game": game, "offset": 999})
        assert (await recv(ws))["code"] == "too_many_subscriptions"
        await still_open(ws)
    finally:
        for ws in sockets:
            await ws.close()
    # Closed sockets no longer count.
    async with await open_ws(server, "scores", player) as ws:
        await still_open(ws)
