"""/ws/v1/my-score: the caller's own rank, live, refreshed in batches."""

from __future__ import annotations

import asyncio

import httpx

from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp, register_and_login
from tests.ws_helpers import open_ws, recv, recv_until


async def test_rank_on_connect_and_on_every_change(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    rival = await register_and_login(client)
    loop = asyncio.get_running_loop()
    async with await open_ws(server, "my-score", player, game=game) as ws:
        first = await recv(ws)
        assert first == {
            "type": "rank",
            "game": game,
            "period": "all",
            "rank": None,
            "score": None,
            "total": 0,
        }
        # Own write.
        assert (await post_score(client, player, game, 40)).status_code == 200
        started = loop.time()
        msg = await recv(ws, timeout=1.0)
        assert (msg["rank"], msg["score"], msg["total"]) == (1, 40, 1)
        assert loop.time() - started < 1.0
        # Someone else enters below: total changes, rank does not.
        assert (await post_score(client, rival, game, 10)).status_code == 200
        msg = await recv(ws, timeout=1.0)
        assert (msg["rank"], msg["score"], msg["total"]) == (1, 40, 2)
        # ... and passes us.
        assert (await post_score(client, rival, game, 90)).status_code == 200
        started = loop.time()
        msg = await recv(ws, timeout=1.0)
        assert (msg["rank"], msg["score"], msg["total"]) == (2, 40, 2)
        assert loop.time() - started < 1.0
    async with await open_ws(server, "my-score", player, game=game, period="week") as ws:
        msg = await recv(ws)
        assert (msg["period"], msg["rank"], msg["score"]) == ("week", 2, 40)


async def test_many_watchers_one_batch_per_tick(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    players = list(await asyncio.gather(*(register_and_login(client) for _ in range(6))))
    hub = server.podium.realtime.hub
    sockets = [await open_ws(server, "my-score", p, game=game) for p in players]
    try:
        for ws in sockets:
            assert (await recv(ws))["rank"] is None
        for i, p in enumerate(players[:5]):
            assert (await post_score(client, p, game, 10 * (i + 1))).status_code == 200
        # Wait until every socket saw the final state, then write once more.
        for i, ws in enumerate(sockets[:5]):
            async with asyncio.timeout(3):
                while True:
                    msg = await recv(ws)
                    if msg["total"] == 5:
                        break
            assert msg["rank"] == 5 - i
        batches = hub.rank_batches
        assert (await post_score(client, players[5], game, 1000)).status_code == 200
        for i, ws in enumerate(sockets):
            # The sixth socket also saw the totals 1..5 go by (it is not on the board).
            msg = await recv_until(ws, lambda m: m["total"] == 6, timeout=1.0)
            assert msg["rank"] == (1 if i == 5 else 6 - i)
        # Six sockets refreshed by one pipelined batch (two if a tick split the write).
        assert hub.rank_batches - batches <= 2
    finally:
        for ws in sockets:
            await ws.close()
