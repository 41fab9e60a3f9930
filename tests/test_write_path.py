"""The write path end to end: periods, ties, concurrency, pub/sub diffs, void, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import httpx
import pytest
import redis.asyncio as aioredis

from podium.boards.members import board_id
from podium.embedded import EmbeddedPostgres
from podium.keys import Keys
from podium.protocol import board_change_decoder
from podium.settings import Settings
from tests.boards_helpers import create_game, post_score, read_board
from tests.conftest import (
    Account,
    RunningApp,
    Stores,
    make_admin,
    make_settings,
    register_and_login,
    running_app,
)


@pytest.fixture
def settings(stores: Stores) -> Settings:
    # 100 concurrent writes on one user must not trip the per-user rate limit.
    return make_settings(
        stores, writes_per_second_per_user=10_000, writes_per_second_per_ip=100_000
    )


def redis_of(server: RunningApp) -> aioredis.Redis:
    assert server.services is not None
    return server.services.redis


async def next_message(pubsub: aioredis.client.PubSub, timeout: float = 5.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
            if msg is not None:
                return msg


@pytest.fixture
async def board_sub(server: RunningApp) -> AsyncIterator[aioredis.client.PubSub]:
    pubsub = redis_of(server).pubsub()
    try:
        yield pubsub
    finally:
        await pubsub.aclose()


async def test_period_boundaries(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    assert server.services is not None
    game = (await create_game(client, admin, operator="sum"))["id"]
    prefix = server.settings.redis_prefix
    redis = redis_of(server)
    moments = [
        datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC),  # Sunday: week of Nov 23
        datetime(2026, 11, 30, 0, 0, 0, tzinfo=UTC),  # Monday: new day and week
        datetime(2026, 12, 1, 0, 0, 0, tzinfo=UTC),  # new month, same week
    ]
    for moment, score in zip(moments, (10, 5, 7), strict=True):
        server.services.clock.set(lambda m=moment: m)
        r = await post_score(client, player, game, score)
        assert r.status_code == 200, r.text
    server.services.clock.set(None)

    async def value(period: str, start: date) -> list[tuple[int, int]]:
        return await read_board(redis, prefix, game, True, period, start)  # type: ignore[arg-type]

    assert await value("all", date(1970, 1, 1)) == [(player.id, 22)]
    assert await value("day", date(2026, 11, 29)) == [(player.id, 10)]
    assert await value("day", date(2026, 11, 30)) == [(player.id, 5)]
    assert await value("day", date(2026, 12, 1)) == [(player.id, 7)]
    assert await value("week", date(2026, 11, 23)) == [(player.id, 10)]
    assert await value("week", date(2026, 11, 30)) == [(player.id, 12)]
    assert await value("month", date(2026, 11, 1)) == [(player.id, 15)]
    assert await value("month", date(2026, 12, 1)) == [(player.id, 7)]
    # The global board follows the same periods.
    assert await read_board(redis, prefix, "global", True, "week", date(2026, 11, 30)) == [
        (player.id, 12)
    ]
    # Period boards expire at their end plus the retention window; all-time never.
    keys = Keys(prefix)
    day_end = datetime(2026, 12, 2, tzinfo=UTC).timestamp() + 400 * 86400
    assert await redis.expiretime(keys.zset(board_id(game, "day", date(2026, 12, 1)))) == day_end
    assert await redis.expiretime(keys.zset(board_id(game, "all", date(1970, 1, 1)))) == -1
    # The log keeps the write time and the period rows in PostgreSQL agree.
    rows = await server.services.pool.fetch(
        "SELECT period, period_start, value FROM board_values WHERE game_id = $1"
        " AND period = 'month' ORDER BY period_start",
        game,
    )
    assert [(r["period_start"], r["value"]) for r in rows] == [
        (date(2026, 11, 1), 15),
        (date(2026, 12, 1), 7),
    ]


@pytest.mark.parametrize("operator", ["best", "last"])
async def test_ties_first_to_reach_ranks_higher(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, operator: str
) -> None:
    assert server.services is not None
    game = (await create_game(client, admin, operator=operator))["id"]
    a, b, c = [await register_and_login(client) for _ in range(3)]
    # All in the same second: the order of acceptance breaks the tie.
    moment = datetime(2026, 5, 5, 12, 0, 0, tzinfo=UTC)
    server.services.clock.set(lambda: moment)
    for who in (a, b, c):
        assert (await post_score(client, who, game, 100)).status_code == 200
    # Equal scores again never overtake.
    for who in (c, b, a):
        r = await post_score(client, who, game, 100)
        assert r.json()["delta"] == 0
    redis, prefix = redis_of(server), server.settings.redis_prefix
    assert await read_board(redis, prefix, game) == [(a.id, 100), (b.id, 100), (c.id, 100)]
    r = await post_score(client, c, game, 101)
    assert r.json()["rank"] == 1 and r.json()["previous_rank"] == 3
    assert [u for u, _ in await read_board(redis, prefix, game)] == [c.id, a.id, b.id]
    server.services.clock.set(None)


async def test_concurrent_sum_writers_lose_nothing(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin, operator="sum"))["id"]
    responses = await asyncio.gather(*(post_score(client, player, game, n) for n in range(1, 101)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses][:3]
    assert max(r.json()["score"] for r in responses) == 5050
    assert sorted(r.json()["delta"] for r in responses) == list(range(1, 101))
    assert await read_board(redis_of(server), server.settings.redis_prefix, game) == [
        (player.id, 5050)
    ]
    assert server.services is not None
    n = await server.services.pool.fetchval(
        "SELECT count(*) FROM score_events WHERE game_id = $1", game
    )
    assert n == 100


async def test_write_publishes_top10_diff(
    server: RunningApp,
    client: httpx.AsyncClient,
    admin: Account,
    board_sub: aioredis.client.PubSub,
) -> None:
    game = (await create_game(client, admin))["id"]
    a, b = await register_and_login(client), await register_and_login(client)
    board = board_id(game, "all", date(1970, 1, 1))
    await board_sub.subscribe(Keys(server.settings.redis_prefix).channel(board))
    await post_score(client, a, game, 10)
    first = board_change_decoder.decode((await next_message(board_sub))["data"])
    assert first.board == board and first.seq == 1
    assert first.top == [(a.id, 10, first.top[0][2])]
    assert first.entered == [a.id] and first.changed == [a.id]
    big = 2**53 - 1
    await post_score(client, b, game, big)
    second = board_change_decoder.decode((await next_message(board_sub))["data"])
    assert second.seq == 2
    assert [(u, v) for u, v, _ in second.top] == [(b.id, big), (a.id, 10)]
    assert second.entered == [b.id] and second.moved == [a.id] and second.left == []


async def test_void_removes_user_everywhere_and_publishes(
    server: RunningApp,
    client: httpx.AsyncClient,
    admin: Account,
    board_sub: aioredis.client.PubSub,
) -> None:
    assert server.services is not None
    g1 = (await create_game(client, admin))["id"]
    g2 = (await create_game(client, admin, operator="sum"))["id"]
    cheat, honest = await register_and_login(client), await register_and_login(client)
    for game in (g1, g2):
        assert (await post_score(client, cheat, game, 1000)).status_code == 200
        assert (await post_score(client, honest, game, 5)).status_code == 200
    keys = Keys(server.settings.redis_prefix)
    await board_sub.subscribe(keys.channel(board_id("global", "all", date(1970, 1, 1))))

    r = await client.post(f"/admin/users/{cheat.id}/void", headers=honest.headers)
    assert r.status_code == 403
    r = await client.post(f"/admin/users/{cheat.id}/void", headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.json()["voided_events"] == 2
    change = board_change_decoder.decode((await next_message(board_sub))["data"])
    assert change.left == [cheat.id] and change.changed == [cheat.id]
    assert [u for u, _, _ in change.top] == [honest.id]

    redis, prefix = redis_of(server), server.settings.redis_prefix
    for game in (g1, g2, "global"):
        assert [u for u, _ in await read_board(redis, prefix, game)] == [honest.id]
    # No member left, only a tombstone at the removed row's version (see apply.lua).
    entry = await redis.hget(keys.members(board_id(g1, "all", date(1970, 1, 1))), cheat.id)
    assert entry is not None and entry.startswith(b"|")
    voided = await server.services.pool.fetchval(
        "SELECT count(*) FROM score_events WHERE user_id = $1 AND voided_at IS NOT NULL", cheat.id
    )
    assert voided == 2
    r = await post_score(client, admin, g1, 1)  # others still write
    assert r.status_code == 200
    assert (await client.post("/admin/users/999999/void", headers=admin.headers)).status_code == 404


async def test_voided_user_cannot_write(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    assert (await post_score(client, player, game, 3)).status_code == 200
    assert (await client.post(f"/admin/users/{player.id}/void", headers=admin.headers)).is_success
    r = await post_score(client, player, game, 4)
    assert r.status_code == 403 and r.json()["error"]["code"] == "voided"
    assert await read_board(redis_of(server), server.settings.redis_prefix, game) == []


async def _board_state(redis: aioredis.Redis, prefix: str) -> dict[bytes, object]:
    state: dict[bytes, object] = {}
    for pattern in ("b:*", "m:*", "seq:*"):
        async for key in redis.scan_iter(match=f"{prefix}{pattern}"):
            kind = await redis.type(key)
            if kind == b"zset":
                state[key] = await redis.zrange(key, 0, -1, withscores=True)
            elif kind == b"hash":
                state[key] = await redis.hgetall(key)
            else:
                state[key] = await redis.get(key)
    return state


async def test_postgres_down_gives_503_and_leaves_redis_alone(
    stores: Stores, tmp_path: object
) -> None:
    from pathlib import Path

    pg = EmbeddedPostgres(Path(str(tmp_path)) / "pg", durable=False)
    await asyncio.to_thread(pg.start)
    settings = make_settings(stores, database_url=pg.url)
    try:
        async with (
            running_app(settings) as app,
            httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=30) as http,
        ):
            admin = await make_admin(app, http)
            player = await register_and_login(http)
            game = (await create_game(http, admin))["id"]
            assert (await post_score(http, player, game, 7)).status_code == 200
            before = await _board_state(redis_of(app), settings.redis_prefix)
            assert before
            await asyncio.to_thread(pg.stop)
            for score in (8, 9):
                r = await post_score(http, player, game, score)
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "unavailable"
            assert await _board_state(redis_of(app), settings.redis_prefix) == before
    finally:
        await asyncio.to_thread(pg.stop)
        redis = aioredis.Redis.from_url(stores.redis_url)
        keys = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
