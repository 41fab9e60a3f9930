"""Two Podium instances on one Redis and one PostgreSQL; and Redis restarting under them."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import msgspec

from podium.embedded import EmbeddedValkey
from podium.settings import Settings
from tests.boards_helpers import create_game, post_score
from tests.conftest import (
    Account,
    RunningApp,
    Stores,
    drop_test_state,
    make_settings,
    register_and_login,
    running_app,
)
from tests.ws_helpers import closed_with, open_ws, recv, recv_until, send


async def test_a_write_on_a_reaches_a_socket_on_b(
    server: RunningApp,
    settings: Settings,
    client: httpx.AsyncClient,
    admin: Account,
    player: Account,
) -> None:
    game = (await create_game(client, admin))["id"]
    rival = await register_and_login(client)
    async with running_app(settings) as b:
        async with (
            await open_ws(b, "scoreboard", player, game=game) as board,
            await open_ws(b, "my-score", player, game=game) as mine,
        ):
            snap = await recv(board)
            assert snap["type"] == "snapshot" and snap["entries"] == []
            assert (await recv(mine))["rank"] is None
            seq = snap["seq"]
            writes = [(player, 10), (rival, 20), (player, 30)]
            expected = [
                [(player.id, 10)],
                [(rival.id, 20), (player.id, 10)],
                [(player.id, 30), (rival.id, 20)],
            ]
            rows: dict[int, dict] = {}
            for (who, score), want in zip(writes, expected, strict=True):
                assert (await post_score(client, who, game, score)).status_code == 200
                diff = await recv(board)
                assert diff["type"] == "diff"
                assert (diff["seq"], diff["prev_seq"]) == (seq + 1, seq)
                seq = diff["seq"]
                for uid in diff["left"]:
                    rows.pop(uid, None)
                rows.update({r["user_id"]: r for r in diff["upserts"]})
                got = [
                    (r["user_id"], r["score"])
                    for r in sorted(rows.values(), key=lambda r: r["rank"])
                ]
                assert got == want
            assert rows[rival.id]["username"] == rival.username
            # my-score on B follows writes on A, including being passed and passing back.
            last = await recv_until(mine, lambda m: m["score"] == 30 and m["total"] == 2)
            assert last["rank"] == 1
        # add-score on B reaches a scoreboard on A.
        async with (
            await open_ws(server, "scoreboard", rival, game=game) as board,
            await open_ws(b, "add-score", rival) as adder,
        ):
            assert (await recv(board))["seq"] == seq
            event = str(uuid.uuid4())
            await send(adder, {"type": "score", "game": game, "event_id": event, "score": 50})
            assert (await recv(adder))["type"] == "ack"
            diff = await recv(board)
            assert diff["seq"] == seq + 1
            assert diff["upserts"][0] == {
                "rank": 1,
                "user_id": rival.id,
                "username": rival.username,
                "score": 50,
            }


async def test_stopping_an_instance_closes_its_sockets_for_reconnect(
    settings: Settings, stores: Stores
) -> None:
    async with running_app(settings) as app:
        async with httpx.AsyncClient(base_url=app.url + "/api/v1") as http:
            account = await register_and_login(http)
        ws = await open_ws(app, "scores", account)
        await send(ws, {"type": "ping"})
        assert (await recv(ws))["type"] == "pong"
        stopping = asyncio.create_task(app.stop())
        # 1001 (going away) from Podium, or 1012 (service restart) from uvicorn: both
        # tell the client to reconnect, to another instance.
        assert await closed_with(ws) in (1001, 1012)
        await stopping
    await drop_test_state(settings)


async def test_redis_restart_keeps_sockets_open_and_resyncs(stores: Stores, tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", persist=True)
    valkey.start()
    try:
        settings = make_settings(stores, redis_url=valkey.url)
        async with running_app(settings) as app:
            async with httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=10) as http:
                admin = await register_and_login(http)
                assert app.services is not None
                await app.services.pool.execute(
                    "UPDATE users SET role = 'admin' WHERE id = $1", admin.id
                )
                r = await http.post(
                    "/auth/login", json={"username": admin.username, "password": "correct-horse-42"}
                )
                admin = msgspec.structs.replace(admin, access_token=r.json()["access_token"])
                game = (await create_game(http, admin))["id"]
                player = await register_and_login(http)
                assert (await post_score(http, player, game, 5)).status_code == 200
                board = await open_ws(app, "scoreboard", player, game=game)
                mine = await open_ws(app, "my-score", player, game=game)
                try:
                    snap = await recv(board)
                    assert [(e["user_id"], e["score"]) for e in snap["entries"]] == [(player.id, 5)]
                    assert (await recv(mine))["rank"] == 1
                    broker = app.podium.realtime.hub.broker
                    reconnects = broker.reconnects
                    await asyncio.to_thread(valkey.stop)
                    # Redis is gone: the sockets stay open and answer.
                    await send(board, {"type": "ping"})
                    assert (await recv(board))["type"] == "pong"
                    valkey = EmbeddedValkey(valkey.data_dir, persist=True, port=valkey.port)
                    await asyncio.to_thread(valkey.start)
                    # Back: the broker reconnects and the board is re-read, one snapshot.
                    snap = await recv_until(board, lambda m: m["type"] == "snapshot", timeout=10)
                    assert [(e["user_id"], e["score"]) for e in snap["entries"]] == [(player.id, 5)]
                    assert broker.reconnects == reconnects + 1
                    # Live again: a new write is pushed to both sockets.
                    assert (await post_score(http, player, game, 9)).status_code == 200
                    # One snapshot only: the next message is the diff.
                    diff = await recv(board)
                    assert diff["type"] == "diff", diff
                    assert diff["upserts"][0]["score"] == 9
                    rank = await recv_until(mine, lambda m: m["score"] == 9, timeout=5)
                    assert rank["rank"] == 1
                finally:
                    await board.close()
                    await mine.close()
        await drop_test_state(settings)
    finally:
        valkey.stop()
