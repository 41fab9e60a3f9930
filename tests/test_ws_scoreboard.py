"""/ws/v1/scoreboard: a snapshot on connect, then coalesced diffs with the board's seq."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from podium.settings import Settings
from tests.boards_helpers import create_game, post_score, read_board
from tests.conftest import Account, RunningApp, Stores, make_settings, register_and_login
from tests.ws_helpers import open_ws, recv, recv_until


def apply(board: dict[int, dict], msg: dict) -> dict[int, dict]:
    if msg["type"] == "snapshot":
        return {e["user_id"]: e for e in msg["entries"]}
    for uid in msg["left"]:
        board.pop(uid, None)
    for row in msg["upserts"]:
        board[row["user_id"]] = row
    return board


def ranked(board: dict[int, dict]) -> list[tuple[int, int]]:
    return [(e["user_id"], e["score"]) for e in sorted(board.values(), key=lambda e: e["rank"])]


async def test_snapshot_then_diffs(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    other = await register_and_login(client)
    async with await open_ws(server, "scoreboard", player, game=game) as ws:
        snap = await recv(ws)
        assert snap["type"] == "snapshot" and snap["entries"] == [] and snap["game"] == game
        seq = snap["seq"]
        board = apply({}, snap)
        assert (await post_score(client, player, game, 50)).status_code == 200
        diff = await recv(ws)
        assert diff["type"] == "diff" and diff["seq"] == seq + 1 and diff["prev_seq"] == seq
        board = apply(board, diff)
        assert ranked(board) == [(player.id, 50)]
        assert board[player.id]["username"] == player.username
        assert (await post_score(client, other, game, 70)).status_code == 200
        diff = await recv(ws)
        assert diff["seq"] == seq + 2
        board = apply(board, diff)
        assert ranked(board) == [(other.id, 70), (player.id, 50)]
    # A reconnect with the last seq misses nothing; an old seq gets a snapshot.
    async with await open_ws(server, "scoreboard", player, game=game, since=seq + 2) as ws:
        assert (await recv(ws)) == {"type": "synced", "board": snap["board"], "seq": seq + 2}
    async with await open_ws(server, "scoreboard", player, game=game, since=seq) as ws:
        msg = await recv(ws)
        assert msg["type"] == "snapshot" and msg["seq"] == seq + 2
        assert ranked(apply({}, msg)) == [(other.id, 70), (player.id, 50)]


@pytest.fixture
def settings(stores: Stores) -> Settings:
    # The burst is 250 writes per user at once: lift the per-user write rate limit.
    return make_settings(stores, writes_per_second_per_user=100_000)


async def test_burst_coalesces(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    game = (await create_game(client, admin, operator="sum"))["id"]
    players = [await register_and_login(client) for _ in range(4)]
    async with await open_ws(server, "scoreboard", players[0], game=game) as ws:
        board = apply({}, await recv(ws))

        gate = asyncio.Semaphore(32)

        async def write(who: Account) -> None:
            async with gate:
                r = await post_score(client, who, game, 1)
                assert r.status_code == 200, r.text

        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(write(p) for p in players for _ in range(250)))
        elapsed = asyncio.get_running_loop().time() - started
        expected = sorted(((p.id, 250) for p in players), key=lambda t: t[0])
        pushes = 0
        while sorted(ranked(board)) != expected:
            msg = await recv_until(ws, lambda m: m["type"] in ("diff", "snapshot"))
            pushes += 1
            board = apply(board, msg)
        # At most one push per tick: the count follows the burst's duration, not its size.
        ticks = elapsed / (server.settings.tick_ms / 1000)
        assert pushes <= ticks + 3 and pushes < 1000 / 3, (pushes, elapsed)
        assert server.services is not None
        stored = await read_board(server.services.redis, server.settings.redis_prefix, game)
        assert ranked(board) == stored
