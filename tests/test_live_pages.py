"""HTTP top pages served from the hub's window of a watched board: exact, current to the
tick, and never used while the window may be behind."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection

from podium.boards import names, ranks
from podium.protocol import BoardChange, encode_board_change
from podium.services import Services
from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp, register_and_login
from tests.ws_helpers import open_ws, recv, recv_until

BIG = 2**53 - 1


def _apply(board: dict[int, dict], msg: dict) -> dict[int, dict]:
    if msg["type"] == "snapshot":
        return {e["user_id"]: e for e in msg["entries"]}
    for uid in msg["left"]:
        board.pop(uid, None)
    for row in msg["upserts"]:
        board[row["user_id"]] = row
    return board


class Watcher:
    """A scoreboard socket and the top it was pushed."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.board: dict[int, dict] = {}
        self.seq = -1

    async def take(self, msg: dict) -> dict:
        if msg["type"] in ("snapshot", "diff"):
            self.board = _apply(self.board, msg)
            self.seq = msg["seq"]
        return msg

    async def until_top(self, expected: list[tuple[int, int]]) -> None:
        """Wait for the push that makes the top `expected` [(user, score)]."""
        while self.ranked() != expected:
            await self.take(await recv(self.ws))

    def ranked(self) -> list[tuple[int, int]]:
        rows = sorted(self.board.values(), key=lambda e: e["rank"])
        return [(e["user_id"], e["score"]) for e in rows]


async def _page(client: httpx.AsyncClient, who: Account, game: str, **params: Any) -> dict:
    r = await client.get(f"/leaderboards/{game}", params=params, headers=who.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _services(server: RunningApp) -> Services:
    assert server.services is not None
    return server.services


async def _index_page(server: RunningApp, game: str, limit: int, competition: bool) -> dict:
    """The same page read from the Redis index (no window asked)."""
    page = await ranks.top_page(
        _services(server), server.podium.boards, game, limit=limit, competition=competition
    )
    out = msgspec.to_builtins(page)
    assert isinstance(out, dict)
    return out


def _rows(page: dict) -> dict:
    return {k: v for k, v in page.items() if k not in ("source", "as_of")}


async def _seed(
    client: httpx.AsyncClient, admin: Account, n: int = 12
) -> tuple[str, list[Account], list[int]]:
    game = (await create_game(client, admin))["id"]
    players = [await register_and_login(client) for _ in range(n)]
    # Ties (a later equal value ranks below), the largest exact values, and more rows
    # than the window holds.
    scores = [BIG - 1, 500, 500, 500, 40, 30, 20, 10, 9, 8, 7, BIG][:n]
    return game, players, scores


async def test_live_top_page_equals_the_index_page(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    game, players, scores = await _seed(client, admin)
    async with await open_ws(server, "scoreboard", admin, game=game) as ws:
        watcher = Watcher(ws)
        await watcher.take(await recv(ws))
        for p, s in zip(players, scores, strict=True):
            assert (await post_score(client, p, game, s)).status_code == 200
        await post_score(client, players[0], game, BIG)  # a tie at 2^53 - 1, reached later
        expected = await _index_page(server, game, 10, False)
        await watcher.until_top([(e["user_id"], e["score"]) for e in expected["entries"]])

        for limit in (1, 3, 10):
            for competition in (False, True):
                params = {"limit": limit, "ranking": "competition" if competition else "ordinal"}
                live = await _page(client, admin, game, **params)
                assert live["source"] == "live", (limit, competition)
                assert datetime.fromisoformat(live["as_of"])
                index = await _index_page(server, game, limit, competition)
                assert index["source"] == "index" and index["as_of"] is None
                assert _rows(live) == _rows(index), (limit, competition)
        live = await _page(client, admin, game)
        assert live["total"] == 12 and [e["score"] for e in live["entries"][:2]] == [BIG, BIG]
        assert [e["rank"] for e in live["entries"][:4]] == [1, 2, 3, 4]
        competition = await _page(client, admin, game, ranking="competition")
        assert [e["rank"] for e in competition["entries"][:6]] == [1, 1, 3, 3, 3, 6]
        # The cursor of a live page goes on where the index's would.
        rest = await _page(client, admin, game, cursor=live["next_cursor"])
        assert rest["source"] == "index" and [e["rank"] for e in rest["entries"]] == [11, 12]
        # More rows than the window holds, or a page further down: the index.
        assert (await _page(client, admin, game, limit=11))["source"] == "index"
        assert (await _page(client, admin, game, offset=1))["source"] == "index"
        assert (await _page(client, admin, game, period="day"))["source"] == "index"
    assert server.podium.realtime.hub.feeds == {}
    assert (await _page(client, admin, game))["source"] == "index"  # nobody watches it


async def test_live_page_is_current_after_the_tick(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    game, players, scores = await _seed(client, admin, 3)
    async with await open_ws(server, "scoreboard", admin, game=game) as ws:
        watcher = Watcher(ws)
        await watcher.take(await recv(ws))
        for p, s in zip(players, scores, strict=True):
            await post_score(client, p, game, s)
        await watcher.until_top(
            [(players[0].id, BIG - 1), (players[1].id, 500), (players[2].id, 500)]
        )
        first = await _page(client, admin, game)
        assert first["source"] == "live" and first["total"] == 3 and first["next_cursor"] is None
        newcomer = await register_and_login(client)
        await post_score(client, newcomer, game, 600)
        await watcher.until_top(
            [
                (players[0].id, BIG - 1),
                (newcomer.id, 600),
                (players[1].id, 500),
                (players[2].id, 500),
            ]
        )
        page = await _page(client, admin, game)
        assert page["source"] == "live" and page["total"] == 4
        assert page["entries"][1]["user_id"] == newcomer.id
        assert page["entries"][1]["username"] == newcomer.username
        assert datetime.fromisoformat(page["as_of"]) >= datetime.fromisoformat(first["as_of"])
        assert _rows(page) == _rows(await _index_page(server, game, 10, False))


async def test_stale_window_falls_back(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    game, players, scores = await _seed(client, admin, 4)
    hub = server.podium.realtime.hub
    index = server.podium.boards.index
    async with await open_ws(server, "scoreboard", admin, game=game) as ws:
        watcher = Watcher(ws)
        await watcher.take(await recv(ws))
        for p, s in zip(players, scores, strict=True):
            await post_score(client, p, game, s)
        expected = await _index_page(server, game, 10, False)
        await watcher.until_top([(e["user_id"], e["score"]) for e in expected["entries"]])
        assert (await _page(client, admin, game))["source"] == "live"

        # A resync asked (a rebuild, a void): the index until the window is re-read (on
        # the next tick: asked here with no await in between, so no tick runs first).
        board = await ranks.resolve_board(_services(server), server.podium.boards, game)
        assert hub.live_page(board, 10, False) is not None
        message = encode_board_change(BoardChange(board=board.id, seq=0, resync=True))
        hub.deliver((hub.keys.channel(board.id), message))
        assert hub.live_page(board, 10, False) is None
        await recv_until(ws, lambda m: m["type"] == "snapshot")  # re-read on the next tick
        assert (await _page(client, admin, game))["source"] == "live"

        # The index cannot be trusted (a write missed it): PostgreSQL, not the window.
        index.mark_stale()
        page = await _page(client, admin, game)
        assert page["source"] == "database" and _rows(page) == _rows(expected)

        # Redis loses everything of ours (FLUSHALL, scoped to this test's prefix): the
        # rebuild swaps the boards back in and resyncs; then the window serves again.
        redis = _services(server).redis
        keys = [k async for k in redis.scan_iter(match=f"{server.settings.redis_prefix}*")]
        await redis.delete(*keys)
        await index.check()
        await recv_until(ws, lambda m: m["type"] == "snapshot")
        page = await _page(client, admin, game)
        assert page["source"] == "live" and _rows(page) == _rows(expected)


async def test_rename_shows_on_the_next_page(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    game, players, scores = await _seed(client, admin, 3)
    services = _services(server)
    async with await open_ws(server, "scoreboard", admin, game=game) as ws:
        watcher = Watcher(ws)
        await watcher.take(await recv(ws))
        for p, s in zip(players, scores, strict=True):
            await post_score(client, p, game, s)
        await watcher.until_top(
            [(players[0].id, BIG - 1), (players[1].id, 500), (players[2].id, 500)]
        )
        assert (await _page(client, admin, game))["entries"][1]["username"] == players[1].username

        new_name = f"renamed{players[1].id}"
        await services.pool.execute(
            "UPDATE users SET username = $1 WHERE id = $2", new_name, players[1].id
        )
        await names.renamed(services, players[1].id, new_name)
        # Pub/sub keeps publish order on the one connection: once this write's push is
        # here, the rename before it has reached the hub.
        await post_score(client, players[2], game, 501)
        await watcher.until_top(
            [(players[0].id, BIG - 1), (players[2].id, 501), (players[1].id, 500)]
        )
        assert watcher.board[players[1].id]["username"] == new_name  # the diff carries it too
        page = await _page(client, admin, game)
        assert page["source"] == "live"
        assert page["entries"][2]["username"] == new_name
        assert _rows(page) == _rows(await _index_page(server, game, 10, False))
    async with await open_ws(server, "scoreboard", admin, game=game) as ws:
        snapshot = await recv(ws)
        assert {e["user_id"]: e["username"] for e in snapshot["entries"]}[players[1].id] == new_name
