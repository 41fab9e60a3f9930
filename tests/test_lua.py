"""apply.lua run directly against the real Valkey: guards, ranks, diffs, exact integers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from podium.boards.members import member
from podium.boards.scripts import ApplyEvent, BoardRow, Scripts
from podium.keys import Keys
from podium.protocol import BoardChange, board_change_decoder
from tests.conftest import Stores

BIG = 2**53 - 1


@pytest.fixture
async def redis(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(stores.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def scripts(redis: aioredis.Redis) -> AsyncIterator[Scripts]:
    prefix = f"lua{uuid.uuid4().hex[:8]}:"
    yield Scripts(redis, prefix)
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
    if keys:
        await redis.delete(*keys)


def row(board: str, user: int, value: int, seq: int, desc: bool = True, expireat: int = 0):
    return BoardRow(board, member(seq, user), -value if desc else value, seq, desc, expireat)


def ev(board: str, user: int, *rows: BoardRow) -> ApplyEvent:
    return ApplyEvent(board, user, list(rows))


class Listener:
    def __init__(self, redis: aioredis.Redis, channel: str) -> None:
        self.pubsub = redis.pubsub()
        self.channel = channel

    async def __aenter__(self) -> Listener:
        await self.pubsub.subscribe(self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pubsub.aclose()

    async def next(self, timeout: float = 5.0) -> BoardChange:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if msg is not None:
                    return board_change_decoder.decode(msg["data"])

    async def nothing(self) -> bool:
        msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        return msg is None


async def test_apply_sets_member_hash_and_ranks(redis: aioredis.Redis, scripts: Scripts) -> None:
    keys = Keys(scripts.prefix)
    b = "g:all:1970-01-01"
    ranks = await scripts.apply([ev(b, 1, row(b, 1, 10, 1)), ev(b, 2, row(b, 2, 20, 2))])
    assert ranks == [(None, 1), (None, 1)]
    assert await redis.zrange(keys.zset(b), 0, -1, withscores=True) == [
        (member(2, 2).encode(), -20.0),
        (member(1, 1).encode(), -10.0),
    ]
    assert await redis.hget(keys.members(b), "1") == f"{member(1, 1)}|1".encode()
    ranks = await scripts.apply([ev(b, 1, row(b, 1, 30, 3))])
    assert ranks == [(2, 1)]
    assert await redis.get(keys.seq(b)) == b"2"
    # An event that changed no row still reports the user's rank.
    assert await scripts.apply([ev(b, 2)]) == [(2, 2)]


async def test_older_rows_are_skipped(redis: aioredis.Redis, scripts: Scripts) -> None:
    keys = Keys(scripts.prefix)
    b = "g:all:1970-01-01"
    async with Listener(redis, keys.channel(b)) as listener:
        await scripts.apply([ev(b, 1, row(b, 1, 50, 5))])
        assert (await listener.next()).seq == 1
        # A batch applied late (another instance) with an older version changes nothing.
        await scripts.apply([ev(b, 1, row(b, 1, 40, 4))])
        assert await listener.nothing()
        assert await redis.zscore(keys.zset(b), member(5, 1)) == -50.0
        assert await redis.zcard(keys.zset(b)) == 1
        assert await redis.get(keys.seq(b)) == b"1"


async def test_diff_entered_left_moved_changed(redis: aioredis.Redis, scripts: Scripts) -> None:
    keys = Keys(scripts.prefix)
    b = "g:all:1970-01-01"
    await scripts.apply([ev(b, u, row(b, u, 100 - u, u)) for u in range(1, 12)])
    async with Listener(redis, keys.channel(b)) as listener:
        # User 11 (rank 11) jumps to first; user 10 drops out of the top 10.
        await scripts.apply([ev(b, 11, row(b, 11, 1000, 20))])
        change = await listener.next()
    assert change.seq == 2
    assert [u for u, _, _ in change.top] == [11, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert change.top[0] == (11, 1000, 20)
    assert change.entered == [11] and change.left == [10] and change.changed == [11]
    assert change.moved == [1, 2, 3, 4, 5, 6, 7, 8, 9]


async def test_integers_near_2_pow_53_are_exact(redis: aioredis.Redis, scripts: Scripts) -> None:
    keys = Keys(scripts.prefix)
    desc, asc = "d:all:1970-01-01", "a:all:1970-01-01"
    async with Listener(redis, keys.channel(desc)) as ld, Listener(redis, keys.channel(asc)) as la:
        await scripts.apply(
            [
                ev(desc, 1, row(desc, 1, BIG, 1), row(asc, 1, -BIG, 1, desc=False)),
                ev(desc, 2, row(desc, 2, BIG - 1, BIG - 2), row(asc, 2, -BIG + 1, 2, desc=False)),
            ]
        )
        d, a = await ld.next(), await la.next()
    assert d.top == [(1, BIG, 1), (2, BIG - 1, BIG - 2)]
    assert a.top == [(1, -BIG, 1), (2, -BIG + 1, 2)]
    assert await redis.zscore(keys.zset(desc), member(1, 1)) == float(-BIG)


async def test_remove_and_quiet_load(redis: aioredis.Redis, scripts: Scripts) -> None:
    keys = Keys(scripts.prefix)
    b = "g:day:2026-01-02"
    await scripts.apply(
        [ev("", u, row(b, u, u, u, expireat=2_000_000_000)) for u in (1, 2)], publish=False
    )
    assert await redis.get(keys.seq(b)) is None  # a quiet load neither counts nor publishes
    assert await redis.expiretime(keys.zset(b)) == 2_000_000_000
    assert await redis.expiretime(keys.members(b)) == 2_000_000_000
    async with Listener(redis, keys.channel(b)) as listener:
        await scripts.apply([ev("", 2, BoardRow(b, "", 0, 0, True, 2_000_000_000))])
        change = await listener.next()
    assert change.left == [2] and change.changed == [2] and change.top == [(1, 1, 1)]
    # Not deleted: a tombstone at the version it removed (see the void tests below).
    assert await redis.hget(keys.members(b), "2") == b"|2"
    assert await redis.zcard(keys.zset(b)) == 1
    assert await redis.expiretime(keys.seq(b)) == 2_000_000_000


def gone(board: str, user: int, last_seq: int, expireat: int = 0) -> BoardRow:
    """The void of `user` on `board`, whose deleted row was at version `last_seq`."""
    return BoardRow(board, "", 0, last_seq, True, expireat)


async def test_void_leaves_a_tombstone_an_older_apply_cannot_pass(
    redis: aioredis.Redis, scripts: Scripts
) -> None:
    keys = Keys(scripts.prefix)
    b = "g:all:1970-01-01"
    await scripts.apply([ev(b, 1, row(b, 1, 50, 5)), ev(b, 2, row(b, 2, 10, 6))])
    await scripts.apply([ev(b, 1, gone(b, 1, 5))])
    assert await redis.zcard(keys.zset(b)) == 1
    # A batch that committed before the void is applied late (another instance).
    await scripts.apply([ev(b, 1, row(b, 1, 50, 5)), ev(b, 1, row(b, 1, 40, 4))])
    assert await redis.zrange(keys.zset(b), 0, -1) == [member(6, 2).encode()]
    assert await scripts.apply([ev(b, 1)]) == [(None, None)]
    # A later legitimate write (newer version) still lands.
    await scripts.apply([ev(b, 1, row(b, 1, 70, 9))])
    assert await redis.zrange(keys.zset(b), 0, -1) == [member(9, 1).encode(), member(6, 2).encode()]


async def test_void_before_the_stale_apply_still_guards(
    redis: aioredis.Redis, scripts: Scripts
) -> None:
    keys = Keys(scripts.prefix)
    b = "g:day:2026-01-02"
    async with Listener(redis, keys.channel(b)) as listener:
        # The void's apply runs first: Redis never saw the user's row on this board.
        await scripts.apply([ev("", 1, gone(b, 1, 5, expireat=2_000_000_000))])
        await scripts.apply([ev("", 1, row(b, 1, 50, 5, expireat=2_000_000_000))])
        assert await listener.nothing()  # nothing visible changed: no push, no seq
    assert await redis.zcard(keys.zset(b)) == 0
    assert await redis.get(keys.seq(b)) is None
    # The tombstone goes with its board.
    assert await redis.expiretime(keys.members(b)) == 2_000_000_000


async def test_an_older_void_does_not_remove_a_newer_row(
    redis: aioredis.Redis, scripts: Scripts
) -> None:
    keys = Keys(scripts.prefix)
    b = "g:all:1970-01-01"
    await scripts.apply([ev(b, 1, row(b, 1, 50, 8))])
    await scripts.apply([ev(b, 1, gone(b, 1, 5))])
    assert await redis.zrange(keys.zset(b), 0, -1) == [member(8, 1).encode()]
    # The same version: the void removed exactly the row Redis holds.
    await scripts.apply([ev(b, 1, gone(b, 1, 8))])
    assert await redis.zcard(keys.zset(b)) == 0


async def test_rebuild_aside_then_swap(redis: aioredis.Redis, scripts: Scripts) -> None:
    """apply.lua writes aside while a rebuild holds the lease; swap.lua installs it all."""
    keys = Keys(scripts.prefix)
    b, old = "g:all:1970-01-01", "gone:all:1970-01-01"
    await scripts.apply([ev(b, 1, row(b, 1, 10, 1)), ev(old, 1, row(old, 1, 5, 2))])
    with pytest.raises(ResponseError):  # no lease: a load may not write aside
        await scripts.load([ev("", 1, row(b, 1, 10, 1))], "gen1")
    await redis.set(f"{scripts.prefix}rebuild-lock", "gen1")
    # The snapshot (load) and a write during the rebuild, in either order, converge.
    await scripts.apply([ev(b, 2, row(b, 2, 30, 5))])
    await scripts.load([ev("", 1, row(b, 1, 10, 1)), ev("", 2, row(b, 2, 20, 3))], "gen1")
    assert await redis.zcard(keys.zset(b)) == 2  # live boards untouched by the load
    assert await scripts.swap("gen2", "e", [b, old]) == -1  # not the lease's rebuild
    async with Listener(redis, keys.channel(b)) as lb, Listener(redis, keys.channel(old)) as lo:
        assert await scripts.swap("gen1", "e", [b, old]) == 2
        assert (await lb.next()).resync
        assert (await lo.next()).resync
    assert await redis.zrange(keys.zset(b), 0, -1) == [member(5, 2).encode(), member(1, 1).encode()]
    assert await redis.get(keys.seq(b)) == b"3"  # kept and bumped: 2 applies + the swap
    assert not await redis.exists(keys.zset(old), keys.members(old))
    assert not await redis.exists(f"{scripts.prefix}rebuild-lock", f"{scripts.prefix}r:gen1:boards")
    assert await redis.get(keys.epoch) == b"e"
    # The lease is gone: applies write live only again.
    await scripts.apply([ev(b, 3, row(b, 3, 1, 9))])
    assert [k async for k in redis.scan_iter(match=f"{scripts.prefix}r:*")] == []


# A history of one board: per user, sets at rising versions, and voids that remove the
# row at the version of the user's last set. Applied in any order, the board converges
# to the history's end: a stale version never gets through.
histories = st.lists(
    st.tuples(st.integers(1, 3), st.booleans(), st.integers(1, 100)), min_size=1, max_size=12
)


@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories, data=st.data())
async def test_any_apply_order_converges_to_the_last_version(
    redis: aioredis.Redis,
    scripts: Scripts,
    history: list[tuple[int, bool, int]],
    data: st.DataObject,
) -> None:
    keys = Keys(scripts.prefix)
    b = f"h{uuid.uuid4().hex[:8]}:all:1970-01-01"
    ops: list[tuple[int, BoardRow]] = []
    last: dict[int, int] = {}
    for version, (user, void, value) in enumerate(history, start=1):
        if void:
            if user in last:
                ops.append((user, gone(b, user, last[user])))
        else:
            last[user] = version
            ops.append((user, row(b, user, value, version)))
    shuffled = data.draw(st.permutations(ops))

    async def final(order: list[tuple[int, BoardRow]]) -> tuple[object, object]:
        await redis.delete(keys.zset(b), keys.members(b))
        for user, r in order:
            await scripts.apply([ev("", user, r)], publish=False)
        return (
            await redis.zrange(keys.zset(b), 0, -1, withscores=True),
            await redis.hgetall(keys.members(b)),
        )

    assert await final(shuffled) == await final(ops)
