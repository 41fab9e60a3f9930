"""/ws/v1/scores (live pages, seed 001's shape too) and /ws/v1/reports."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp, register_and_login
from tests.ws_helpers import open_ws, recv, recv_until, send


async def board_of(client: httpx.AsyncClient, admin: Account, n: int) -> tuple[str, list[Account]]:
    """A game with n players scoring 100, 99, ... (player i at rank i + 1)."""
    game = (await create_game(client, admin))["id"]
    players = list(await asyncio.gather(*(register_and_login(client) for _ in range(n))))
    for i, p in enumerate(players):
        assert (await post_score(client, p, game, 100 - i)).status_code == 200
    return game, players


async def test_live_pages_beyond_the_top(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    game, players = await board_of(client, admin, 14)
    hub = server.podium.realtime.hub
    sockets = [await open_ws(server, "scores", players[0]) for _ in range(3)]
    try:
        for ws in sockets:
            await send(ws, {"type": "subscribe", "game": game, "offset": 10, "limit": 3})
            sub = await recv(ws)
            assert sub["type"] == "subscribed" and sub["sub"] == f"{game}:all:10:3"
            page = await recv(ws)
            assert page["type"] == "page" and page["total"] == 14
            assert [e["rank"] for e in page["entries"]] == [11, 12, 13]
            assert [e["user_id"] for e in page["entries"]] == [p.id for p in players[10:13]]
        reads = hub.page_reads
        # The last player (87) climbs to 90, right behind the first to reach 90 (rank 11).
        assert (await post_score(client, players[13], game, 90)).status_code == 200
        for ws in sockets:
            page = await recv_until(ws, lambda m: m["type"] == "page")
            assert [e["user_id"] for e in page["entries"]] == [
                players[10].id,
                players[13].id,
                players[11].id,
            ]
            assert [e["score"] for e in page["entries"]] == [90, 90, 89]
        # One read of that page for the three sockets (allow one tick's overlap).
        assert hub.page_reads - reads <= 2
        # Unsubscribe: no more pages for that socket; the others still get them.
        await send(sockets[0], {"type": "unsubscribe", "game": game, "offset": 10, "limit": 3})
        assert (await recv_until(sockets[0], lambda m: m["type"] != "page"))[
            "type"
        ] == "unsubscribed"
        # 88 -> 96 enters the top ten: everyone on the page moves down one.
        assert (await post_score(client, players[12], game, 96)).status_code == 200
        page = await recv_until(sockets[1], lambda m: m["type"] == "page")
        assert [e["user_id"] for e in page["entries"]] == [
            players[9].id,
            players[10].id,
            players[13].id,
        ]
        await send(sockets[0], {"type": "ping"})
        assert (await recv(sockets[0]))["type"] == "pong"
    finally:
        for ws in sockets:
            await ws.close()


async def test_several_subscriptions_on_one_socket(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    game, players = await board_of(client, admin, 3)
    async with await open_ws(server, "scores", players[0]) as ws:
        await send(ws, {"type": "subscribe", "game": game, "limit": 2})
        await send(ws, {"type": "subscribe", "game": game, "period": "day", "offset": 1})
        await send(ws, {"type": "subscribe", "game": "global"})
        pages = {}
        async with asyncio.timeout(5):
            while len(pages) < 3:
                msg = await recv(ws)
                if msg["type"] == "page":
                    pages[msg["sub"]] = msg
        assert [e["rank"] for e in pages[f"{game}:all:0:2"]["entries"]] == [1, 2]
        assert [e["rank"] for e in pages[f"{game}:day:1:10"]["entries"]] == [2, 3]
        assert pages["global:all:0:10"]["total"] >= 3


async def test_seed_001_shape(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    game, players = await board_of(client, admin, 6)
    async with await open_ws(server, "scores", players[0]) as ws:
        await send(ws, {"channel": game, "start": 1, "end": 3})
        msg = await recv(ws)
        assert set(msg) == {"result", "total_count"} and msg["total_count"] == 6
        assert [r["rank"] for r in msg["result"]] == [2, 3, 4]
        row = msg["result"][0]
        assert set(row) == {"rank", "user_id", "player", "score", "date"}
        assert row["player"] == players[1].username and row["score"] == 99
        assert row["date"] == datetime.now(UTC).date().isoformat()
        # Live: a change on that page is pushed in the same shape.
        assert (await post_score(client, players[5], game, 98)).status_code == 200
        msg = await recv(ws)
        # 95 -> 98 ties the player already at 98, who got there first.
        assert [r["user_id"] for r in msg["result"]] == [
            players[1].id,
            players[2].id,
            players[5].id,
        ]
        # A new request replaces the previous view; "all" is the global board.
        await send(ws, {"channel": "all", "start": 0, "end": 0})
        msg = await recv(ws)
        assert len(msg["result"]) == 1 and msg["total_count"] >= 6


async def test_reports_typed_and_seed_shape(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    game, players = await board_of(client, admin, 3)
    today = datetime.now(UTC).date()
    async with await open_ws(server, "reports", players[0]) as ws:
        await send(
            ws,
            {
                "type": "report",
                "start": today.isoformat(),
                "end": (today + timedelta(days=1)).isoformat(),
                "limit": 2,
                "game": game,
            },
        )
        msg = await recv(ws)
        assert msg["type"] == "report" and msg["game"] == game and msg["total_count"] == 3
        assert [r["user_id"] for r in msg["result"]] == [players[0].id, players[1].id]
        r = await client.get(
            "/reports/top",
            params={"start": msg["start"], "end": msg["end"], "limit": 2, "game": game},
            headers=players[0].headers,
        )
        if r.status_code == 200:  # the HTTP route, when mounted, says the same
            assert r.json()["result"] == msg["result"]
        await send(ws, {"start": today.isoformat(), "end": today.isoformat(), "limit": 2})
        msg = await recv(ws)
        assert set(msg) == {"result"} and len(msg["result"]) == 2
        assert set(msg["result"][0]) == {"name", "score", "games", "game", "date"}
        assert msg["result"][0]["name"] == players[0].username
        await send(ws, {"type": "report", "start": today.isoformat(), "end": "nope"})
        assert (await recv(ws))["code"] == "invalid"
        await send(ws, {"type": "report", "start": today.isoformat(), "end": today.isoformat()})
        assert (await recv(ws))["code"] == "invalid"
