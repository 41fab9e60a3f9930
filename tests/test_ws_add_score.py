"""/ws/v1/add-score: the HTTP write path over a socket, acked by event_id."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from podium.settings import Settings
from tests.boards_helpers import create_game, read_board
from tests.conftest import Account, RunningApp, Stores, make_settings
from tests.ws_helpers import open_ws, recv, recv_until, send


@pytest.fixture
def settings(stores: Stores) -> Settings:
    return make_settings(
        stores, writes_per_second_per_user=100_000, writes_per_second_per_ip=100_000
    )


async def test_ack_duplicate_conflict_and_errors(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    async with await open_ws(server, "add-score", player) as ws:
        event = str(uuid.uuid4())
        await send(ws, {"type": "score", "game": game, "event_id": event, "score": 30})
        ack = await recv(ws)
        assert ack == {
            "type": "ack",
            "event_id": event,
            "score": 30,
            "delta": 30,
            "rank": 1,
            "duplicate": False,
        }
        await send(ws, {"type": "score", "game": game, "event_id": event, "score": 30})
        again = await recv(ws)
        assert again["type"] == "ack" and again["duplicate"] is True and again["score"] == 30
        await send(ws, {"type": "score", "game": game, "event_id": event, "score": 31})
        err = await recv(ws)
        assert err["type"] == "error" and err["event_id"] == event
        assert err["code"] != "internal"
        other = str(uuid.uuid4())
        await send(ws, {"type": "score", "game": "no-such-game", "event_id": other, "score": 1})
        err = await recv(ws)
        assert (err["type"], err["code"], err["event_id"]) == ("error", "not_found", other)
        await send(ws, {"type": "score", "game": game, "event_id": "not-a-uuid", "score": 1})
        err = await recv(ws)
        assert err["type"] == "error" and err["event_id"] == "not-a-uuid"
        # Writing for someone else is refused, as over HTTP.
        await send(
            ws,
            {"type": "score", "game": game, "event_id": other, "score": 5, "user_id": admin.id},
        )
        err = await recv(ws)
        assert err["type"] == "error" and err["code"] == "forbidden"
        await send(ws, {"type": "ping"})
        assert (await recv(ws))["type"] == "pong"
    assert server.services is not None
    stored = await read_board(server.services.redis, server.settings.redis_prefix, game)
    assert stored == [(player.id, 30)]


async def test_pipelined_writes_reach_a_scoreboard(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin, operator="sum"))["id"]
    async with (
        await open_ws(server, "scoreboard", player, game=game) as board,
        await open_ws(server, "add-score", player) as ws,
    ):
        assert (await recv(board))["type"] == "snapshot"
        events = [str(uuid.uuid4()) for _ in range(100)]
        await asyncio.gather(
            *(send(ws, {"type": "score", "game": game, "event_id": e, "score": 2}) for e in events)
        )
        acks = {}
        async with asyncio.timeout(10):
            while len(acks) < len(events):
                msg = await recv(ws)
                assert msg["type"] == "ack", msg
                acks[msg["event_id"]] = msg
        assert set(acks) == set(events)
        assert max(a["score"] for a in acks.values()) == 200
        assert sorted(a["score"] for a in acks.values()) == list(range(2, 201, 2))
        msg = await recv_until(
            board,
            lambda m: m["type"] == "diff" and any(r["score"] == 200 for r in m["upserts"]),
        )
        assert msg["upserts"][0]["user_id"] == player.id
