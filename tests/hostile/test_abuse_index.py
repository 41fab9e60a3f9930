"""The Redis index under races and hostile values: voids, rebuilds, store failures.

Races are made deterministic with real sockets: a TCP proxy in front of Valkey holds one
instance's apply in flight while the other instance acts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from podium.boards import index as index_module
from podium.boards.index import BoardIndex
from podium.boards.members import board_id
from podium.boards.scripts import source
from podium.embedded import EmbeddedPostgres, EmbeddedValkey
from podium.keys import Keys
from podium.periods import EPOCH
from podium.settings import Settings
from tests.boards_helpers import create_game, post_score, read_board
from tests.conftest import (
    Account,
    RunningApp,
    Stores,
    drop_test_state,
    make_admin,
    make_settings,
    register_and_login,
    running_app,
)
from tests.test_rebuild import assert_index_matches_log, private_valkey  # noqa: F401
from tests.ws_helpers import open_ws, recv, recv_until


class HoldingProxy:
    """A TCP proxy to Valkey. Armed, it holds the first connection that sends `marker`
    (from that command on) until `release` is set; while `cutting`, it drops every
    connection that sends `marker` instead. Everything else flows."""

    def __init__(self, target_url: str, marker: bytes) -> None:
        parts = self._target = urlsplit(target_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.marker = marker
        self.armed = False
        self.cutting = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> HoldingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        # Same credentials and database as the target: only the address changes.
        t = self._target
        auth = f"{t.username or ''}:{t.password}@" if t.password else ""
        self.url = urlunsplit((t.scheme, f"{auth}127.0.0.1:{port}", t.path, t.query, ""))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        up = asyncio.create_task(self._pipe(reader, up_writer, hold=True))
        down = asyncio.create_task(self._pipe(up_reader, writer, hold=False))
        self._tasks |= {up, down}
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()
        self._tasks -= {up, down}

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if hold and self.cutting and self.marker in data:
                    return  # the command never reaches Valkey: the client sees the cut
                if hold and self.armed and self.marker in data:
                    self.armed = False
                    self.held.set()
                    await self.release.wait()
                writer.write(data)
                await writer.drain()


APPLY_SHA = hashlib.sha1(source("apply").encode()).hexdigest().encode()


@contextlib.asynccontextmanager
async def instance_behind_proxy(
    settings: Settings,
) -> AsyncIterator[tuple[RunningApp, HoldingProxy]]:
    """A second instance on the same stores whose Redis traffic passes the proxy."""
    assert settings.redis_url
    async with HoldingProxy(settings.redis_url, APPLY_SHA) as proxy:
        async with running_app(msgspec.structs.replace(settings, redis_url=proxy.url)) as app:
            yield app, proxy


async def test_void_racing_an_inflight_batch_keeps_the_player_off_the_board(
    server: RunningApp,
    settings: Settings,
    client: httpx.AsyncClient,
    admin: Account,
    player: Account,
) -> None:
    """Finding 1: A commits a batch of the player, the void on B lands in Redis first,
    then A's apply arrives: the voided player must not come back."""
    assert server.services is not None
    game = (await create_game(client, admin, operator="sum"))["id"]
    async with (
        instance_behind_proxy(settings) as (a, proxy),
        httpx.AsyncClient(base_url=a.url + "/api/v1", timeout=30) as http_a,
    ):
        assert a.services is not None
        proxy.armed = True
        write = asyncio.create_task(post_score(http_a, player, game, 50))
        async with asyncio.timeout(10):
            await proxy.held.wait()  # committed in PostgreSQL, its Redis apply in flight
        r = await client.post(f"/admin/users/{player.id}/void", headers=admin.headers)
        assert r.status_code == 200, r.text
        proxy.release.set()
        assert (await write).status_code == 200
        index: BoardIndex = a.podium.boards.index
        assert not index.stale  # the apply ran (and was refused), it did not fail
        assert await read_board(server.services.redis, settings.redis_prefix, game) == []
        await assert_index_matches_log(server)


PLAYERS = 24


async def test_a_rebuild_on_a_is_invisible_to_reads_on_b(
    server: RunningApp,
    settings: Settings,
    client: httpx.AsyncClient,
    admin: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding 2: between any two chunks of A's rebuild, B reads the whole board; a write
    acknowledged during the rebuild is in it afterwards; B's subscribers get one resync
    after the swap and never see a seq go backwards."""
    assert server.services is not None
    game = (await create_game(client, admin))["id"]
    players = [await register_and_login(client) for _ in range(PLAYERS)]
    values = {p.id: 100 + n for n, p in enumerate(players)}
    for p in players:
        assert (await post_score(client, p, game, values[p.id])).status_code == 200
    # Every board row of the log (4 periods x game and global) in chunks of 5.
    monkeypatch.setattr(index_module, "LOAD_CHUNK", 5)
    monkeypatch.setattr(index_module, "BULK_CHUNK", 5)
    async with (
        running_app(settings) as b,
        httpx.AsyncClient(base_url=b.url + "/api/v1", timeout=30) as http_b,
        await open_ws(b, "scoreboard", admin, game=game) as board,
    ):
        first = await recv(board)
        assert first["type"] == "snapshot"
        reads: list[tuple[list[tuple[int, int]], int]] = []
        wrote = False

        async def between_chunks(_rows: int = 0) -> None:
            nonlocal wrote
            page = await http_b.get(f"/leaderboards/{game}?limit=200", headers=admin.headers)
            assert page.status_code == 200, page.text
            body = page.json()
            want = sorted(values.items(), key=lambda kv: -kv[1])
            got = [(e["user_id"], e["score"]) for e in body["entries"]]
            reads.append((got, body["total"]))
            assert (got, body["total"]) == (want, PLAYERS)
            if len(reads) == 3 and not wrote:
                wrote = True  # a write on A while A rebuilds: acknowledged, so kept
                r = await post_score(client, players[0], game, 1000)
                assert r.status_code == 200, r.text
                values[players[0].id] = 1000

        count = await index_module.rebuild(
            server.services.pool,
            server.services.redis,
            settings.redis_prefix,
            settings.retention_days,
            progress=between_chunks,
        )
        assert count >= 8 and len(reads) >= 8 and wrote
        await between_chunks()
        await assert_index_matches_log(server)
        seen = [first]
        seen.append(await recv_until(board, lambda m: m["type"] == "snapshot"))
        # One resync only: the next push is the diff of the next write, from its seq.
        assert (await post_score(client, players[1], game, 2000)).status_code == 200
        seen.append(await recv_until(board, lambda m: m["type"] != "pong"))
        assert seen[-1]["type"] == "diff" and seen[-1]["prev_seq"] == seen[-2]["seq"]
        seqs = [m["seq"] for m in seen]
        assert seqs == sorted(set(seqs)), seqs


async def _two_on_a_board(client: httpx.AsyncClient, admin: Account) -> tuple[str, list[Account]]:
    game = (await create_game(client, admin))["id"]
    players = [await register_and_login(client) for _ in range(2)]
    for n, p in enumerate(players):
        assert (await post_score(client, p, game, 10 * (n + 1))).status_code == 200
    return game, players


async def test_redis_values_that_do_not_parse_are_not_trusted(
    server: RunningApp, settings: Settings, client: httpx.AsyncClient, admin: Account
) -> None:
    """Finding 3: a foreign zset member or members-hash entry sends the read to
    PostgreSQL, which has the truth."""
    assert server.services is not None
    game, (low, high) = await _two_on_a_board(client, admin)
    keys = Keys(settings.redis_prefix)
    board = board_id(game, "all", EPOCH)
    redis = server.services.redis
    await redis.zadd(keys.zset(board), {"not-a-member": -1e9})
    r = await client.get(f"/leaderboards/{game}", headers=admin.headers)
    assert r.status_code == 200, r.text
    assert [(e["user_id"], e["score"]) for e in r.json()["entries"]] == [
        (high.id, 20),
        (low.id, 10),
    ]
    await redis.zrem(keys.zset(board), "not-a-member")
    await redis.hset(keys.members(board), str(high.id), "garbage")
    r = await client.get(f"/leaderboards/{game}/users/{high.id}", headers=admin.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["rank"], r.json()["score"]) == (1, 20)


def _cursor(board: str, offset: int, member: str) -> str:
    raw = msgspec.msgpack.encode([board, offset, member])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_hostile_read_values_are_refused_before_any_store(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    """Finding 4: forged cursors, ids and offsets out of range, non-slug games: a clear
    4xx, never a 500 and never a page with made-up ranks."""
    game, (low, _) = await _two_on_a_board(client, admin)
    board = board_id(game, "all", EPOCH)
    h = admin.headers
    for cursor in (_cursor(board, -3, "nope"), _cursor(board, 0, "x" * 300)):
        r = await client.get(f"/leaderboards/{game}", params={"cursor": cursor}, headers=h)
        assert r.status_code == 400, r.text
    r = await client.get(f"/leaderboards/{game}", params={"offset": 10**30}, headers=h)
    assert r.status_code == 422, r.text
    for path in (f"/leaderboards/{game}/users/{2**64}", f"/leaderboards/{game}/around/{2**64}"):
        r = await client.get(path, headers=h)
        assert r.status_code == 404, (path, r.text)  # an id that cannot exist: no such user
    r = await client.get(f"/leaderboards/{game}/members", params={"ids": f"{low.id},-5"}, headers=h)
    assert r.status_code == 422, r.text
    for bad in ("a%00b", "A" * 500, "UPPER"):
        r = await client.get(f"/leaderboards/{bad}", headers=h)
        assert r.status_code == 404, (bad, r.text)
    r = await client.post(f"/admin/users/{2**63}/void", headers=h)
    assert r.status_code == 404, r.text


async def test_reads_with_postgres_down_are_503_never_500(stores: Stores, tmp_path: Path) -> None:
    """Finding 3: PostgreSQL unreachable: what Redis can answer it answers, the rest is 503."""
    pg = EmbeddedPostgres(tmp_path / "pg", durable=False)
    await asyncio.to_thread(pg.start)
    settings = make_settings(stores, database_url=pg.url)
    try:
        async with (
            running_app(settings) as app,
            httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=30) as http,
        ):
            admin = await make_admin(app, http)
            game, (low, high) = await _two_on_a_board(http, admin)
            assert (await http.get(f"/leaderboards/{game}", headers=admin.headers)).is_success
            await asyncio.to_thread(pg.stop)
            r = await http.get(f"/users/{high.id}/ranks", headers=admin.headers)
            assert r.status_code == 503, r.text
            for path in (
                f"/leaderboards/{game}",
                f"/leaderboards/{game}/users/{low.id}",
                f"/leaderboards/{game}/around/{low.id}",
                f"/leaderboards/{game}/members?ids={low.id},{high.id}",
            ):
                r = await http.get(path, headers=admin.headers)
                assert r.status_code in (200, 503), (path, r.text)
    finally:
        await asyncio.to_thread(pg.stop)  # its data dir goes with tmp_path
        redis = aioredis.Redis.from_url(stores.redis_url)
        keys = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def test_reads_with_redis_down_come_from_postgres(
    stores: Stores,
    private_valkey: EmbeddedValkey,  # noqa: F811 (the fixture, imported above)
) -> None:
    """Finding 3: every Redis failure falls back to PostgreSQL, with the same answers."""
    settings = make_settings(stores, redis_url=private_valkey.url)
    async with (
        running_app(settings) as app,
        httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=30) as http,
    ):
        admin = await make_admin(app, http)
        game, (low, high) = await _two_on_a_board(http, admin)
        paths = (
            f"/leaderboards/{game}?ranking=competition",
            f"/leaderboards/{game}/users/{low.id}",
            f"/leaderboards/{game}/around/{low.id}",
            f"/leaderboards/{game}/members?ids={low.id},{high.id}",
            f"/users/{high.id}/ranks",
        )
        before = [(await http.get(p, headers=admin.headers)).json() for p in paths]
        await asyncio.to_thread(private_valkey.stop)
        for path, want in zip(paths, before, strict=True):
            r = await http.get(path, headers=admin.headers)
            assert r.status_code == 200, (path, r.text)
            got = r.json()
            # A page says where it was read: the same rows, now from PostgreSQL.
            if "source" in want:
                assert (want.pop("source"), got.pop("source")) == ("index", "database"), path
            assert got == want, path
    await drop_test_state(msgspec.structs.replace(settings, redis_url=stores.redis_url))


async def test_an_instance_that_missed_a_write_stops_every_instance_trusting_redis(
    server: RunningApp,
    settings: Settings,
    client: httpx.AsyncClient,
    admin: Account,
    player: Account,
) -> None:
    """Finding 2 (the other half): A's apply fails while another rebuild holds the lease,
    so A cannot rebuild yet; B must not go on serving the Redis board that lacks A's
    acknowledged write."""
    assert server.services is not None
    game = (await create_game(client, admin, operator="sum"))["id"]
    assert (await post_score(client, player, game, 5)).status_code == 200
    # Another instance's rebuild (a foreign lease): A's own rebuild has to wait.
    await server.services.redis.set(Keys(settings.redis_prefix).rebuild_lock, "someone-else")
    async with (
        instance_behind_proxy(settings) as (a, proxy),
        httpx.AsyncClient(base_url=a.url + "/api/v1", timeout=30) as http_a,
    ):
        proxy.cutting = True
        r = await post_score(http_a, player, game, 7)
        assert r.status_code == 200, r.text  # durable in PostgreSQL: acknowledged
        proxy.cutting = False
        async with asyncio.timeout(10):
            while True:
                page = await client.get(f"/leaderboards/{game}", headers=player.headers)
                assert page.status_code == 200, page.text
                if [e["score"] for e in page.json()["entries"]] == [12]:
                    break
                await asyncio.sleep(0.05)


async def test_a_void_during_a_rebuild_wins_over_its_snapshot(
    server: RunningApp,
    settings: Settings,
    client: httpx.AsyncClient,
    admin: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rebuild no longer loads again after a void (void-gen is gone): the void's
    tombstones reach the boards aside, so its rows from the older snapshot stay out."""
    assert server.services is not None
    game = (await create_game(client, admin))["id"]
    players = [await register_and_login(client) for _ in range(6)]
    for n, p in enumerate(players):
        assert (await post_score(client, p, game, n + 1)).status_code == 200
    monkeypatch.setattr(index_module, "LOAD_CHUNK", 4)
    monkeypatch.setattr(index_module, "BULK_CHUNK", 4)
    calls = 0

    async def void_midway(_rows: int = 0) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the snapshot has every row of every player, this one included
            r = await client.post(f"/admin/users/{players[0].id}/void", headers=admin.headers)
            assert r.status_code == 200, r.text

    await index_module.rebuild(
        server.services.pool,
        server.services.redis,
        settings.redis_prefix,
        settings.retention_days,
        progress=void_midway,
    )
    assert calls > 2
    board = await read_board(server.services.redis, settings.redis_prefix, game)
    assert [u for u, _ in board] == [p.id for p in reversed(players[1:])]
    await assert_index_matches_log(server)
