"""Redis is an index of the log: it always equals a recomputation from `score_events`,
after any workload, after `podium rebuild`, and after Redis loses its data."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from podium.auth.tokens import hash_service_secret, new_service_secret
from podium.boards.index import BoardIndex
from podium.boards.members import board_id, member, to_zscore
from podium.cli import cmd_rebuild
from podium.embedded import EmbeddedValkey
from podium.keys import Keys
from podium.periods import starts_for
from tests.boards_helpers import create_game, post_score
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

GAMES = [("best", "desc"), ("sum", "desc"), ("last", "asc"), ("decr", "desc"), ("best", "asc")]
BASE = datetime(2026, 1, 28, 12, tzinfo=UTC)

Zsets = dict[str, set[tuple[bytes, float]]]


def _next(op: str, desc: bool, old: int | None, value: int) -> int:
    if op == "best":
        if old is None:
            return value
        return max(old, value) if desc else min(old, value)
    if op == "sum":
        return (old or 0) + value
    if op == "last":
        return value
    return (old or 0) - value


async def recompute(pool: asyncpg.Pool) -> Zsets:
    """Every board, computed in Python from the non-void events of the log."""
    events = await pool.fetch(
        "SELECT e.seq, e.user_id, e.game_id, e.input, e.created_at, g.operator, g.sort_order"
        " FROM score_events e JOIN games g ON g.id = e.game_id"
        " WHERE e.voided_at IS NULL ORDER BY e.seq"
    )
    state: dict[tuple[str, str, object, int], tuple[int, int, int]] = {}
    desc_of: dict[str, bool] = {"global": True}
    for e in events:
        desc = e["sort_order"] == "desc"
        desc_of[e["game_id"]] = desc
        ms = int(e["created_at"].timestamp() * 1000)
        for period, start in starts_for(e["created_at"]).items():
            key = (e["game_id"], period, start, e["user_id"])
            old = state.get(key)
            new = _next(e["operator"], desc, old[0] if old else None, e["input"])
            if old is not None and old[0] == new:
                continue
            state[key] = (new, e["seq"], ms)
            if desc:
                gkey = ("global", period, start, e["user_id"])
                gold = state.get(gkey)
                delta = new - (old[0] if old else 0)
                unchanged = gold is not None and delta == 0
                reached = (gold[1], gold[2]) if unchanged else (e["seq"], ms)  # type: ignore[index]
                state[gkey] = ((gold[0] if gold else 0) + delta, *reached)
    boards: Zsets = {}
    for (game, period, start, user), (value, reached, reached_ms) in state.items():
        board = board_id(game, period, start)  # type: ignore[arg-type]
        score = float(to_zscore(value, desc_of[game]))
        boards.setdefault(board, set()).add((member(reached, user, reached_ms).encode(), score))
    return boards


async def redis_boards(redis: aioredis.Redis, prefix: str) -> Zsets:
    keys = Keys(prefix)
    boards: Zsets = {}
    async for key in redis.scan_iter(match=keys.zset("*")):
        board = key.decode().removeprefix(keys.zset(""))
        boards[board] = set(await redis.zrange(key, 0, -1, withscores=True))
    return boards


async def assert_index_matches_log(server: RunningApp) -> None:
    assert server.services is not None
    expected = await recompute(server.services.pool)
    actual = await redis_boards(server.services.redis, server.settings.redis_prefix)
    assert actual == expected


Op = tuple[int, int, int, int]  # user, game, score (or -1000 = void the user), day offset
ops = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, len(GAMES) - 1),
        st.one_of(st.integers(-20, 100), st.just(-1000)),
        st.integers(0, 40),
    ),
    min_size=1,
    max_size=25,
)


@hsettings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(workload=ops)
async def test_random_workload_then_rebuild_equals_log(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, workload: list[Op]
) -> None:
    assert server.services is not None
    games = [(await create_game(client, admin, operator=o, order=d))["id"] for o, d in GAMES]
    users = [await register_and_login(client) for _ in range(4)]
    for user, game, score, day in workload:
        if score == -1000:
            r = await client.post(f"/admin/users/{users[user].id}/void", headers=admin.headers)
            assert r.status_code == 200
            continue
        server.services.clock.set(lambda d=day: BASE + timedelta(days=d, seconds=d))
        r = await post_score(client, users[user], games[game], score)
        assert r.status_code in (200, 403), r.text
    server.services.clock.set(None)
    await assert_index_matches_log(server)
    index: BoardIndex = server.podium.boards.index
    assert await index.rebuild()
    assert index.ready
    await assert_index_matches_log(server)


async def test_cli_rebuild_restores_deleted_boards(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    assert server.services is not None
    game = (await create_game(client, admin, operator="sum"))["id"]
    for score in (3, 4):
        assert (await post_score(client, player, game, score)).status_code == 200
    keys = Keys(server.settings.redis_prefix)
    redis = server.services.redis
    await redis.delete(keys.zset(board_id(game, "all", starts_for(BASE)["all"])))
    await redis.set(f"{server.settings.redis_prefix}names", "kept")  # another layer's key
    await asyncio.to_thread(cmd_rebuild, argparse.Namespace(), server.settings)
    await assert_index_matches_log(server)
    assert await redis.get(f"{server.settings.redis_prefix}names") == b"kept"
    assert await redis.exists(keys.epoch)


async def _wait_ready(index: BoardIndex, redis: aioredis.Redis, epoch: str) -> None:
    async with asyncio.timeout(10):
        while not (index.ready and await redis.exists(epoch)):
            await asyncio.sleep(0.05)


@pytest.fixture
async def private_valkey(tmp_path: Path) -> EmbeddedValkey:
    valkey = EmbeddedValkey(tmp_path / "valkey", persist=False)
    await asyncio.to_thread(valkey.start)
    yield valkey  # type: ignore[misc]
    await asyncio.to_thread(valkey.stop)


async def test_flushall_rebuilds_on_its_own_without_losing_writes(
    stores: Stores, private_valkey: EmbeddedValkey
) -> None:
    settings = make_settings(stores, redis_url=private_valkey.url)
    async with (
        running_app(settings) as app,
        httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=10) as http,
    ):
        assert app.services is not None
        admin = await make_admin(app, http)
        players = [await register_and_login(http) for _ in range(3)]
        game = (await create_game(http, admin, operator="sum"))["id"]
        for n, p in enumerate(players):
            assert (await post_score(http, p, game, n + 1)).status_code == 200
        index: BoardIndex = app.podium.boards.index
        redis, epoch = app.services.redis, Keys(settings.redis_prefix).epoch
        rebuilds = index.rebuilds
        await redis.flushall()
        # Writes go on while the watcher notices and rebuilds; none may be lost.
        admin_token = admin.headers  # the denylist check needs no keys: an empty Redis is fine
        results = await asyncio.gather(
            *(post_score(http, p, game, 10) for p in players),
            post_score(http, admin_token, game, 100),
        )
        assert all(r.status_code == 200 for r in results)
        async with asyncio.timeout(10):
            while index.rebuilds == rebuilds:
                await asyncio.sleep(0.05)
        await _wait_ready(index, redis, epoch)
        await assert_index_matches_log(app)
        values = await redis.zrange(
            Keys(settings.redis_prefix).zset(board_id(game, "all", starts_for(BASE)["all"])),
            0,
            -1,
            withscores=True,
        )
        assert sorted(-s for _, s in values) == [11, 12, 13, 100]
    await drop_test_state(settings)


async def test_redis_down_writes_commit_then_replay(
    stores: Stores, private_valkey: EmbeddedValkey
) -> None:
    settings = make_settings(stores, redis_url=private_valkey.url)
    async with (
        running_app(settings) as app,
        httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=30) as http,
    ):
        assert app.services is not None
        admin = await make_admin(app, http)
        player = await register_and_login(http)
        game = (await create_game(http, admin, policy="authoritative", operator="sum"))["id"]
        secret = new_service_secret("srv")
        await app.services.pool.execute(
            "INSERT INTO service_credentials (name, secret_hash, games) VALUES ($1, $2, $3)",
            "srv",
            hash_service_secret(secret),
            [game],
        )
        service = {"Authorization": f"Bearer {secret}"}
        assert (await post_score(http, service, game, 5, user_id=player.id)).status_code == 200
        index: BoardIndex = app.podium.boards.index
        await asyncio.to_thread(private_valkey.stop)
        # Redis is down: the write is durable, acknowledged, without ranks.
        r = await post_score(http, service, game, 7, user_id=player.id)
        assert r.status_code == 200, r.text
        assert r.json()["score"] == 12 and r.json()["rank"] is None
        assert not index.ready
        restarted = EmbeddedValkey(private_valkey.data_dir, persist=False, port=private_valkey.port)
        await asyncio.to_thread(restarted.start)
        try:
            await _wait_ready(index, app.services.redis, Keys(settings.redis_prefix).epoch)
            await assert_index_matches_log(app)
        finally:
            await asyncio.to_thread(restarted.stop)
    await drop_test_state(msgspec.structs.replace(settings, redis_url=stores.redis_url))
