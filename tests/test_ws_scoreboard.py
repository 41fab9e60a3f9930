"""/ws/v1/scoreboard: a snapshot on connect, then coalesced diffs with the board's seq."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from podium.boards.members import board_id, member, to_zscore
from podium.keys import Keys
from podium.periods import EPOCH
from podium.protocol import BoardChange, encode_board_change
from podium.settings import Settings
from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp, Stores, make_settings, register_and_login
from tests.ws_helpers import closed_with, open_ws, recv, recv_until, send, ws_url


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
    return make_settings(
        stores, writes_per_second_per_user=100_000, writes_per_second_per_ip=100_000
    )


async def test_burst_coalesces(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    game = (await create_game(client, admin, operator="sum"))["id"]
    players = list(await asyncio.gather(*(register_and_login(client) for _ in range(4))))
    writers = [await open_ws(server, "add-score", p) for p in players]
    async with await open_ws(server, "scoreboard", players[0], game=game) as ws:
        board = apply({}, await recv(ws))
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def burst(adder: ClientConnection, n: int, window: int = 10) -> None:
            for _ in range(n // window):
                for _ in range(window):
                    event = str(uuid.uuid4())
                    body = {"type": "score", "game": game, "event_id": event, "score": 1}
                    await send(adder, body)
                for _ in range(window):
                    reply = await recv(adder, timeout=20)
                    assert reply["type"] == "ack", reply

        # 1,000 writes: 250 per player, ten at a time in flight on each of four sockets.
        await asyncio.gather(*(burst(w, 250) for w in writers))
        elapsed = loop.time() - started
        expected = sorted(((p.id, 250) for p in players), key=lambda t: t[0])
        pushes = 0
        while sorted(ranked(board)) != expected:
            msg = await recv_until(ws, lambda m: m["type"] in ("diff", "snapshot"))
            pushes += 1
            board = apply(board, msg)
        # At most one push per tick: the count follows the burst's duration, not its size.
        ticks = elapsed / (server.settings.tick_ms / 1000)
        assert pushes <= ticks + 3 and pushes < 1000 / 5, (pushes, elapsed)
        # The last push equals the board as the HTTP API reads it.
        r = await client.get(f"/leaderboards/{game}", headers=players[0].headers)
        assert r.status_code == 200, r.text
        http_rows = [(e["user_id"], e["score"], e["username"]) for e in r.json()["entries"]]
        pushed = sorted(board.values(), key=lambda e: e["rank"])
        assert [(e["user_id"], e["score"], e["username"]) for e in pushed] == http_rows
    for w in writers:
        await w.close()


async def publish_top(server: RunningApp, game: str, top: list[tuple[int, int]]) -> int:
    """Write a board's top straight into Redis and announce it, as the write path does."""
    assert server.services is not None
    redis, keys = server.services.redis, Keys(server.settings.redis_prefix)
    board = board_id(game, "all", EPOCH)
    seq = int(await redis.incr(keys.seq(board)))
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.zset(board))
        for uid, value in top:
            pipe.zadd(keys.zset(board), {member(seq, uid, 0): to_zscore(value, True)})
        await pipe.execute()
    change = BoardChange(board=board, seq=seq, top=[(u, v, seq) for u, v in top])
    await redis.publish(keys.channel(board), encode_board_change(change))
    return seq


@pytest.mark.parametrize("ending", ["snapshot", "slow"])
async def test_a_client_that_stops_reading_delays_nobody(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account, ending: str
) -> None:
    assert server.services is not None
    game = (await create_game(client, admin))["id"]
    hub = server.podium.realtime.hub
    # "slow": behind for more than 0.2 s is too long; "snapshot": 5 s is never reached.
    slow_after = 0.2 if ending == "slow" else 5.0
    hub.limits = msgspec.structs.replace(hub.limits, queue_size=4, slow_after=slow_after)
    users = list(range(10_000_001, 10_000_011))
    # Long display names make each push ~80 KB, so the stalled socket's buffers fill fast.
    await server.services.redis.hset(
        server.services.keys.names, mapping={uid: f"n{uid}" + "x" * 8000 for uid in users}
    )
    # The stalled client: a tiny receive buffer, and it reads nothing.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    raw.connect(("127.0.0.1", server.port))
    raw.setblocking(False)
    slow = await connect(
        ws_url(server, "scoreboard", game=game),
        sock=raw,
        additional_headers=player.headers,
        max_queue=1,
        max_size=2**22,
        compression=None,
    )
    fast = await open_ws(server, "scoreboard", player, game=game)
    try:
        assert (await recv(fast))["type"] == "snapshot"
        loop = asyncio.get_running_loop()
        slowest = 0.0
        final: list[tuple[int, int]] = []
        for step in range(400):
            final = [(uid, 1000 * step + 10 - i) for i, uid in enumerate(users)]
            seq = await publish_top(server, game, final)
            started = loop.time()
            await recv_until(fast, lambda m, s=seq: m.get("seq") == s, timeout=2)
            slowest = max(slowest, loop.time() - started)
            lagging = [s for s in hub.sessions if s.dropped]
            if ending == "snapshot" and lagging and step > 5:
                break
            if ending == "slow" and any(s.close_code == 4009 for s in hub.sessions):
                break
        assert lagging or ending == "slow", "the stalled socket never fell behind"
        # The fast socket got every change within a couple of ticks meanwhile.
        assert slowest < 1.0, slowest
        # The stalled client wakes up: after the diffs it missed, a fresh snapshot.
        messages = []
        try:
            async with asyncio.timeout(5):
                while True:
                    messages.append(json.loads(await slow.recv()))
                    if messages[-1].get("seq") == seq:
                        break
        except ConnectionClosed:
            assert slow.close_code == 4009 and ending == "slow"
            return
        assert ending == "snapshot"
        assert messages[-1]["type"] == "snapshot"
        assert ranked(apply({}, messages[-1])) == final
        kinds = [m["type"] for m in messages]
        assert kinds[0] == "snapshot" and "diff" in kinds
    finally:
        await slow.close()
        await fast.close()


async def test_period_rollover_closes_period_sockets_4010(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    assert server.services is not None
    game = (await create_game(client, admin))["id"]
    day = await open_ws(server, "scoreboard", player, game=game, period="day")
    forever = await open_ws(server, "scoreboard", player, game=game)
    try:
        assert (await recv(day))["period"] == "day"
        assert (await recv(forever))["period"] == "all"
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        server.services.clock.set(lambda: tomorrow)
        assert await closed_with(day) == 4010
        await send(forever, {"type": "ping"})
        assert (await recv(forever))["type"] == "pong"
        # Reconnecting lands on the new day's board.
        async with await open_ws(server, "scoreboard", player, game=game, period="day") as ws:
            assert (await recv(ws))["period_start"] == tomorrow.date().isoformat()
    finally:
        server.services.clock.set(None)
        await day.close()
        await forever.close()
