"""The rebuild's bulk load (boards/bulk.py, load.lua): the same boards as the per-row
apply path, version-guarded against live writes, over boards bigger than any chunk."""

from __future__ import annotations

import uuid

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from podium.boards import bulk
from podium.boards import index as index_module
from podium.boards.index import load_rows
from podium.boards.members import board_id, member
from podium.boards.scripts import Scripts
from podium.keys import Keys
from podium.periods import EPOCH
from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp, register_and_login
from tests.test_rebuild import assert_index_matches_log

BIG = 2**53 - 1


async def aside_state(redis: aioredis.Redis, prefix: str, gen: str) -> dict[str, object]:
    """Everything a rebuild `gen` built aside: per board its zset, members hash, expiry."""
    aside = Keys(prefix).aside(gen)
    out: dict[str, object] = {}
    for raw in await redis.smembers(aside.aside_boards):
        board = raw.decode()
        zkey, mkey = aside.zset(board), aside.members(board)
        out[board] = (
            await redis.zrange(zkey, 0, -1, withscores=True),
            await redis.hgetall(mkey),
            await redis.execute_command("EXPIRETIME", zkey),
            await redis.execute_command("EXPIRETIME", mkey),
        )
    return out


async def test_bulk_load_writes_what_the_per_row_apply_writes(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    """Members, scores, versions and expiries as apply.lua writes them, byte for byte:
    PostgreSQL formats them now (long seqs, times before 1970 and on a millisecond,
    2^53, an expired period board, a game without a definition)."""
    assert server.services is not None
    pool, redis = server.services.pool, server.services.redis
    prefix = server.settings.redis_prefix
    asc = (await create_game(client, admin, order="asc"))["id"]
    desc = (await create_game(client, admin))["id"]
    rows = [
        (desc, "all", "1970-01-01", 1, BIG, 10**15 + 7, "2026-01-05 10:00:00.123+00", 10**15 + 9),
        (desc, "all", "1970-01-01", 2, -BIG, 3, "1969-12-31 23:59:59.999500+00", 4),
        (desc, "day", "2026-01-05", 2, 5, 3, "2026-01-05 10:00:00.000001+00", 4),
        (desc, "day", "2020-01-05", 2, 5, 3, "2020-01-05 10:00:00+00", 4),  # past retention
        (asc, "all", "1970-01-01", 1, 7, 11, "2026-02-01 00:00:00.999999+00", 12),
        (asc, "week", "2026-01-26", 3, -7, 1, "2026-01-27 05:06:07.5+00", 2),
        ("global", "month", "2026-01-01", 1, 9, 2, "2026-01-20 01:02:03.004+00", 2),
        ("nogame", "all", "1970-01-01", 4, 1, 1, "2026-01-20 01:02:03+00", 1),
    ]
    await pool.execute("DELETE FROM board_values")
    await pool.executemany(
        "INSERT INTO board_values VALUES ($1, $2, $3::text::date, $4, $5, $6,"
        " $7::text::timestamptz, $8)",
        rows,
    )
    scripts = Scripts(redis, prefix)
    lock = Keys(prefix).rebuild_lock
    await redis.set(lock, "old")
    await load_rows(pool, scripts, server.settings.retention_days, aside="old")
    await redis.set(lock, "new")
    loaded = await bulk.load_aside(pool, scripts, server.settings.retention_days, "new", 3)
    assert loaded == len(rows)
    old, new = await aside_state(redis, prefix, "old"), await aside_state(redis, prefix, "new")
    assert new == old
    assert board_id(desc, "all", EPOCH) in new
    await redis.delete(lock)
    with pytest.raises(ResponseError, match="lease lost"):
        await bulk.load_aside(pool, scripts, server.settings.retention_days, "new", 3)


async def test_load_lua_keeps_newer_live_rows_and_tombstones(server: RunningApp) -> None:
    """Whatever a live apply dual-wrote aside first wins when it is newer (a row or a
    void's tombstone); an older one is replaced and its member leaves the zset."""
    assert server.services is not None
    redis = server.services.redis
    prefix = f"bulk{uuid.uuid4().hex[:8]}:"
    scripts, aside = Scripts(redis, prefix), Keys(prefix).aside("g1")
    await redis.set(Keys(prefix).rebuild_lock, "g1")
    b = "g:all:1970-01-01"
    zkey, mkey = aside.zset(b), aside.members(b)
    await redis.zadd(zkey, {member(9, 1): -90, member(2, 3): -20})
    await redis.hset(
        mkey,
        mapping={"1": f"{member(9, 1)}|9", "2": "|8", "3": f"{member(2, 3)}|2", "4": "|1"},
    )
    users = ["1", "2", "3", "4", "5"]
    zpairs = [x for u in users for x in ("-50", member(5, int(u)))]
    versions = ["5", "8", "5", "5", "5"]
    hpairs = [
        x for u, v in zip(users, versions, strict=True) for x in (u, f"{member(5, int(u))}|{v}")
    ]
    written = await scripts.load_bulk([(b, "0", users, zpairs, hpairs)], "g1")
    assert written == 3  # user 1 (newer row) and 2 (tombstone at that version) refused
    assert await redis.zrange(zkey, 0, -1, withscores=True) == [
        (member(9, 1).encode(), -90.0),
        (member(5, 3).encode(), -50.0),
        (member(5, 4).encode(), -50.0),
        (member(5, 5).encode(), -50.0),
    ]
    assert (await redis.hgetall(mkey))[b"2"] == b"|8"
    assert (await redis.hgetall(mkey))[b"3"] == f"{member(5, 3)}|5".encode()
    assert await redis.sismember(aside.aside_boards, b)
    await redis.delete(*[k async for k in redis.scan_iter(match=f"{prefix}*")])


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every board spans many fetches, groups and calls."""
    monkeypatch.setattr(bulk, "FETCH_ROWS", 7)
    monkeypatch.setattr(bulk, "GROUP_ROWS", 3)
    monkeypatch.setattr(index_module, "BULK_CHUNK", 5)


async def test_live_writes_during_the_bulk_load_win_by_version(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, small_chunks: None
) -> None:
    """A write acknowledged during the load lands on the rebuilt board, whether the
    snapshot's row of that user was loaded before it or is loaded after it."""
    assert server.services is not None
    game = (await create_game(client, admin, operator="sum"))["id"]
    players = [await register_and_login(client) for _ in range(12)]
    for n, p in enumerate(players):
        assert (await post_score(client, p, game, n + 1)).status_code == 200
    calls = 0

    async def write_midway(_rows: int) -> None:
        nonlocal calls
        calls += 1
        # From the first and the last players in turn: rows already loaded (the rows
        # come in user order), and rows still to come.
        step = (calls // 2) % len(players)
        who = players[step] if calls % 2 else players[-1 - step]
        assert (await post_score(client, who, game, 100)).status_code == 200

    await index_module.rebuild(
        server.services.pool,
        server.services.redis,
        server.settings.redis_prefix,
        server.settings.retention_days,
        progress=write_midway,
    )
    assert calls > 4
    await assert_index_matches_log(server)


async def test_a_board_bigger_than_every_chunk_rebuilds_whole(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    """2,500 rows on one board: more than a group, a call and (patched) a fetch."""
    assert server.services is not None
    pool, redis = server.services.pool, server.services.redis
    game = (await create_game(client, admin))["id"]
    await pool.execute("DELETE FROM board_values")
    await pool.execute(
        "INSERT INTO board_values SELECT $1, 'all', '1970-01-01', u, u % 97, u, now(), u"
        " FROM generate_series(1, 2500) u",
        game,
    )
    count = await index_module.rebuild(
        pool, redis, server.settings.redis_prefix, server.settings.retention_days
    )
    assert count >= 1
    keys = Keys(server.settings.redis_prefix)
    board = board_id(game, "all", EPOCH)
    assert await redis.zcard(keys.zset(board)) == 2500
    assert await redis.hlen(keys.members(board)) == 2500
    first = await redis.zrange(keys.zset(board), 0, 0)
    assert first[0].decode().startswith(f"{96:015d}:96:")  # 96 % 97 is the best; earliest


async def test_voided_users_stay_off_after_the_bulk_rebuild(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, small_chunks: None
) -> None:
    assert server.services is not None
    game = (await create_game(client, admin))["id"]
    players = [await register_and_login(client) for _ in range(8)]
    for n, p in enumerate(players):
        assert (await post_score(client, p, game, 10 * (n + 1))).status_code == 200
    cheat = players[-1]
    r = await client.post(f"/admin/users/{cheat.id}/void", headers=admin.headers)
    assert r.status_code == 200, r.text
    await index_module.rebuild(
        server.services.pool,
        server.services.redis,
        server.settings.redis_prefix,
        server.settings.retention_days,
    )
    await assert_index_matches_log(server)
    redis, keys = server.services.redis, Keys(server.settings.redis_prefix)
    async for key in redis.scan_iter(match=keys.members("*")):
        assert not await redis.hexists(key, str(cheat.id))
    r = await client.get(f"/leaderboards/{game}", headers=admin.headers)
    assert [e["user_id"] for e in r.json()["entries"]] == [p.id for p in reversed(players[:-1])]
