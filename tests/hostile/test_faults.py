"""The fault pass: stores and instances fail while writers write and subscribers watch.

Each scenario runs two `podium serve` processes on a private Valkey and PostgreSQL (the
pass kills them, so never the machine's servers), with HTTP and add-score writers,
readers, scoreboard / scores / my-score subscribers and a socket that reconnects again
and again, spread over both instances. After the fault and the recovery it asserts:
every acknowledged write is in the log, the Redis boards equal a recomputation from the
log, every subscriber's view converges to them, no request or handshake got a 500 (503
is fine while a store is down), and every socket either stayed open or got a documented
close code. Each scenario prints one `FAULT PASS {...}` line: writes acknowledged vs
logged, the faults injected, what the clients saw, warnings in the servers' logs.
The last two tests pin the bugs the pass found, one each, on an in-process app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from podium.bench.harness import Env
from podium.keys import Keys
from podium.store.db import create_pool
from tests.boards_helpers import create_game, post_score, read_board
from tests.conftest import (
    RunningApp,
    Stores,
    make_admin,
    make_settings,
    register_and_login,
    running_app,
)
from tests.hostile.faults_support import (
    CLOSES_ON_CRASH,
    CLOSES_ON_STORE_FAULT,
    FaultStores,
    Load,
)
from tests.test_rebuild import recompute, redis_boards
from tests.ws_helpers import open_ws, recv

# (operator, order) of the two games the load writes to.
GAMES = (("sum", "desc"), ("best", "asc"))
STEADY_ACKS = 20  # acknowledged writes before a fault, and again after the recovery
HTTP_OK = {200, 503}  # 503 while a store is down; anything else (a 500) fails the pass
WS_ERRORS_OK = {"unavailable"}
HANDSHAKE_OK = {503}  # refused while a store is down, like any request


@pytest.fixture(scope="module")
def fault_stores() -> Iterator[FaultStores]:
    # Not under pytest's basetemp: another pytest session starting meanwhile resets
    # /tmp/pytest-of-<user> to 0700, and the restarted PostgreSQL (its own system user
    # when run as root) could no longer reach its data dir.
    base = Path(tempfile.mkdtemp(prefix="podium-faults-"))
    stores = FaultStores(base)
    try:
        stores.start()
        yield stores
    finally:
        stores.stop()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Cluster:
    env: Env
    stores: FaultStores
    load: Load
    games: list[str]
    desc: dict[str, bool]


@pytest.fixture
async def cluster(fault_stores: FaultStores) -> AsyncIterator[Cluster]:
    # A scenario that failed half-way may have left a store down: the next one starts whole.
    if fault_stores.valkey.proc is None or fault_stores.valkey.proc.poll() is not None:
        await asyncio.to_thread(fault_stores.restart_valkey)
    if fault_stores.postgres.proc is None or fault_stores.postgres.proc.poll() is not None:
        await asyncio.to_thread(fault_stores.restart_postgres)
    fault_stores.faults.clear()
    async with Env(
        instances=2, redis_url=fault_stores.redis_url, database_url=fault_stores.database_url
    ) as env:
        writers = await env.users(6)
        (watcher,) = await env.users(1)
        games, desc = [], {}
        for operator, order in GAMES:
            game = await env.game(operator=operator, order=order)
            games.append(game)
            desc[game] = order == "desc"
        load = Load(env.servers, writers, watcher, games, subscribers=6)
        try:
            yield Cluster(env, fault_stores, load, games, desc)
        finally:
            await load.close()


async def _steady(load: Load) -> None:
    """Until the load has this many more acknowledged writes."""
    target = len(load.seen.acked) + STEADY_ACKS
    await load.wait_for(lambda seen: len(seen.acked) >= target, timeout=90)


async def _through_outage(load: Load, writes: int = 10) -> None:
    """Until `writes` more writes were attempted: the fault is seen by the writers."""
    target = load.seen.sent + writes
    await load.wait_for(lambda seen: seen.sent >= target, timeout=60)


async def _boards_equal_log(cl: Cluster, redis: aioredis.Redis, pool: object) -> None:
    prefix = cl.env.env["PODIUM_REDIS_PREFIX"]
    epoch = Keys(prefix).epoch
    # The instances notice the loss and rebuild on their own; poll the stores until then.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(90):
            while True:
                expected = await recompute(pool)  # type: ignore[arg-type]
                if await redis.exists(epoch) and await redis_boards(redis, prefix) == expected:
                    return
                await asyncio.sleep(0.2)
    assert await redis.exists(epoch), "no rebuild completed"
    assert await redis_boards(redis, prefix) == await recompute(pool)  # type: ignore[arg-type]


def _rank_of(board: list[tuple[int, int]], user_id: int) -> dict[str, int | None]:
    """What `my-score` should say for `user_id` on a board read from Redis."""
    for i, (uid, value) in enumerate(board):
        if uid == user_id:
            return {"rank": i + 1, "score": value, "total": len(board)}
    return {"rank": None, "score": None, "total": len(board)}


def _server_log(env: Env) -> dict[str, int]:
    """Warnings and errors in the instances' logs (JSON lines), by event: a store
    failing is logged (reported for the reader), a client never sees it (asserted)."""
    found: Counter[str] = Counter()
    for log in env.tmp.glob("server-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                found[line[:80]] += 1  # a traceback line printed outside the logger
                continue
            found[f"{record.get('level')}: {str(record.get('event'))[:80]}"] += 1
    return dict(found)


async def settle_and_check(
    cl: Cluster, name: str, allowed_closes: set[int], capsys: pytest.CaptureFixture[str]
) -> None:
    load, seen = cl.load, cl.load.seen
    await load.stop_writers()
    prefix = cl.env.env["PODIUM_REDIS_PREFIX"]
    pool = await create_pool(
        cl.stores.database_url, schema=cl.env.env["PODIUM_DB_SCHEMA"], min_size=1, max_size=2
    )
    redis = aioredis.Redis.from_url(cl.stores.redis_url)
    try:
        logged = {str(r["event_id"]) for r in await pool.fetch("SELECT event_id FROM score_events")}
        report = {
            "scenario": name,
            "faults": cl.stores.faults,
            "acked": len(seen.acked),
            "logged": len(logged),
            **seen.summary(),
            "server_log": _server_log(cl.env),
        }
        with capsys.disabled():
            print(f"\nFAULT PASS {json.dumps(report)}")
        assert not seen.acked - logged, "acknowledged writes missing from the log"
        # A store outage is a warning per event; an error line (or a bare traceback) in
        # the servers' logs means something was not mapped.
        levels = ("warning:", "info:", "debug:")
        errors = {k: n for k, n in report["server_log"].items() if not k.startswith(levels)}
        assert not errors, errors
        await _boards_equal_log(cl, redis, pool)
        full = {g: await read_board(redis, prefix, g, cl.desc[g]) for g in cl.games}
        tops = {g: rows[:10] for g, rows in full.items()}
        ranks = [_rank_of(full[g], account.id) for g, account, _ in load.ranks]
        # Every subscriber ends up showing the boards (a gap makes it resync with since).

        def converged(_: object) -> bool:
            return (
                all(board.top() == tops[game] for game, board, _ in load.boards)
                and all(page.get("entries") == tops[game] for game, page in load.pages)
                and all(view == want for (_, _, view), want in zip(load.ranks, ranks, strict=True))
            )

        with contextlib.suppress(TimeoutError):
            await load.wait_for(converged, timeout=30)
        views: list[object] = [(g, b.top()) for g, b, _ in load.boards]
        views += [(g, p.get("entries")) for g, p in load.pages]
        views += [view for _, _, view in load.ranks]
        assert converged(None), {"expected": tops, "ranks": ranks, "subscribers": views}
    finally:
        await pool.close()
        await redis.aclose()
    assert set(seen.http_status) <= HTTP_OK, seen.http_status
    assert set(seen.ws_errors) <= WS_ERRORS_OK, seen.ws_errors
    assert set(seen.closes) <= allowed_closes, seen.closes
    assert set(seen.read_status) <= HTTP_OK, seen.read_status
    assert set(seen.handshake_refusals) <= HANDSHAKE_OK, seen.handshake_refusals


async def test_valkey_killed_and_restarted_empty(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    load = cluster.load
    await load.start()
    await _steady(load)
    await asyncio.to_thread(cluster.stores.crash_valkey)
    await _through_outage(load)
    await asyncio.to_thread(cluster.stores.restart_valkey)
    await _steady(load)
    await settle_and_check(cluster, "valkey SIGKILL + restart empty", CLOSES_ON_STORE_FAULT, capsys)


async def test_flushall(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    load = cluster.load
    await load.start()
    await _steady(load)
    redis = aioredis.Redis.from_url(cluster.stores.redis_url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()
    cluster.stores.faults.append("FLUSHALL")
    await _steady(load)
    await settle_and_check(cluster, "FLUSHALL", CLOSES_ON_STORE_FAULT, capsys)


async def test_postgres_killed_and_restarted(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    load = cluster.load
    await load.start()
    await _steady(load)
    await asyncio.to_thread(cluster.stores.crash_postgres)
    await _through_outage(load)
    await asyncio.to_thread(cluster.stores.restart_postgres)
    await _steady(load)
    await settle_and_check(cluster, "postgres SIGKILL + restart", CLOSES_ON_STORE_FAULT, capsys)


async def test_instance_killed_clients_move_with_one_snapshot(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    load = cluster.load
    await load.start()
    await load.wait_for(
        lambda seen: (
            all(holder[0] is not None for _, _, holder in load.boards)
            and seen.snapshots >= len(load.boards)
        )
    )
    await _steady(load)
    victim = cluster.env.servers[1]
    assert victim.proc is not None
    port = int(victim.url.rsplit(":", 1)[1])
    on_victim = sum(1 for _, _, ws in load.boards if ws[0] and ws[0].remote_address[1] == port)
    victim.proc.kill()  # SIGKILL: no close frames, no shutdown
    load.lose(victim)
    cluster.stores.faults.append("instance SIGKILL")
    await asyncio.to_thread(victim.proc.wait, 10)
    await load.wait_for(lambda seen: len(seen.resumed) >= on_victim and all(seen.resumed))
    await _steady(load)
    await settle_and_check(cluster, "instance SIGKILL", CLOSES_ON_CRASH, capsys)
    assert on_victim >= 1
    # Each socket that came back (with `since`) got exactly one snapshot or `synced`.
    assert all(len(got) == 1 for got in load.seen.resumed), load.seen.resumed


async def test_flushall_while_postgres_is_down(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redis loses its data while the log cannot be read: the rebuild has to wait for
    PostgreSQL and still happen."""
    load = cluster.load
    await load.start()
    await _steady(load)
    await asyncio.to_thread(cluster.stores.crash_postgres)
    redis = aioredis.Redis.from_url(cluster.stores.redis_url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()
    cluster.stores.faults.append("FLUSHALL")
    await _through_outage(load)
    await asyncio.to_thread(cluster.stores.restart_postgres)
    await _steady(load)
    await settle_and_check(cluster, "FLUSHALL while postgres down", CLOSES_ON_STORE_FAULT, capsys)


# --- the findings, one focused test each (in-process app on the same private stores) ---


@contextlib.asynccontextmanager
async def _app_on(stores: FaultStores) -> AsyncIterator[tuple[RunningApp, httpx.AsyncClient]]:
    settings = make_settings(Stores(stores.redis_url, stores.database_url))
    async with (
        running_app(settings) as app,
        httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=30) as http,
    ):
        yield app, http


async def _postgres_back(stores: FaultStores) -> None:
    if stores.postgres.proc is not None and stores.postgres.proc.poll() is not None:
        await asyncio.to_thread(stores.restart_postgres)


async def test_postgres_down_known_games_still_read_from_redis(fault_stores: FaultStores) -> None:
    """Was: every read and scoreboard handshake of a game not looked up in the last
    second was a 500 (an unmapped ConnectionRefusedError in the game lookup)."""
    async with _app_on(fault_stores) as (app, http):
        assert app.services is not None
        admin = await make_admin(app, http)
        player = await register_and_login(http)
        game = (await create_game(http, admin))["id"]
        assert (await post_score(http, player, game, 7)).status_code == 200
        # A first read caches the display names (a name never read needs PostgreSQL).
        assert (await http.get(f"/leaderboards/{game}", headers=player.headers)).status_code == 200
        # Every lookup goes to PostgreSQL, as each one does once the cache's 1 s passed.
        app.podium.boards.games.ttl = 0
        await asyncio.to_thread(fault_stores.crash_postgres)
        try:
            r = await http.get(f"/leaderboards/{game}", headers=player.headers)
            assert r.status_code == 200, r.text
            assert [e["score"] for e in r.json()["entries"]] == [7]
            r = await http.get("/leaderboards/never-seen", headers=player.headers)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "unavailable"
            ws = await open_ws(app, "scoreboard", player, game=game)
            try:
                snapshot = await recv(ws)
                assert snapshot["type"] == "snapshot" and snapshot["entries"][0]["score"] == 7
            finally:
                await ws.close()
        finally:
            await _postgres_back(fault_stores)


async def test_postgres_down_while_index_rebuilds_reads_are_503(
    fault_stores: FaultStores,
) -> None:
    """Was: with Redis lost and PostgreSQL down, reads fell back to `board_values` and
    the connection error came out as a 500."""
    async with _app_on(fault_stores) as (app, http):
        admin = await make_admin(app, http)
        player = await register_and_login(http)
        game = (await create_game(http, admin))["id"]
        assert (await post_score(http, player, game, 7)).status_code == 200
        await asyncio.to_thread(fault_stores.crash_postgres)
        redis = aioredis.Redis.from_url(fault_stores.redis_url)
        try:
            await redis.flushall()
            # Redis answers from the emptied index until the watcher notices (≤ 1 s);
            # from then on reads go to PostgreSQL, which is down.
            path = f"/leaderboards/{game}"
            async with asyncio.timeout(15):
                r = await http.get(path, headers=player.headers)
                while r.status_code == 200:
                    r = await http.get(path, headers=player.headers)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "unavailable"
        finally:
            await redis.aclose()
            await _postgres_back(fault_stores)
