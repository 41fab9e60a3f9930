"""Write limits counted in process and reconciled with Redis per tick (auth/ratelimit.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from podium.auth.ratelimit import RateCounters
from podium.embedded import free_port
from tests.conftest import Stores


@pytest.fixture
async def redis(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(stores.redis_url)
    yield client
    await client.aclose()


class Clock:
    def __init__(self, now: float = 1_000_000.5) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def counters(redis: aioredis.Redis, clock: Clock, max_keys: int = 100) -> RateCounters:
    # A long sync period: the tests call sync() themselves, as the tick would.
    return RateCounters(redis, max_keys, 3600, clock=clock)


async def test_one_instance_counts_exactly_without_a_round_trip_per_hit(
    redis: aioredis.Redis,
) -> None:
    key, clock = f"t{uuid.uuid4().hex}:rl:write:1", Clock()
    rates = counters(redis, clock)
    try:
        waits = [await rates.hit_many([(key, 3, 1)]) for _ in range(5)]
        assert waits == [0, 0, 0, 1, 1]
        assert await redis.exists(key) == 0  # nothing sent yet
        await rates.sync()
        assert int(await redis.get(key)) == 5
        assert 0 < await redis.pttl(key) <= 1000
        # The next window starts afresh.
        clock.now += 1
        assert await rates.hit_many([(key, 3, 1)]) == 0
    finally:
        await rates.stop()


async def test_the_limit_holds_across_instances_after_one_sync(redis: aioredis.Redis) -> None:
    key, clock = f"t{uuid.uuid4().hex}:rl:write:1", Clock()
    a, b = counters(redis, clock), counters(redis, clock)
    try:
        assert [await a.hit_many([(key, 5, 60)]) for _ in range(3)] == [0, 0, 0]
        await a.sync()
        assert await b.hit_many([(key, 5, 60)]) == 0
        await b.sync()  # b learns the cluster-wide 4
        assert await b.hit_many([(key, 5, 60)]) == 0
        wait = await b.hit_many([(key, 5, 60)])
        assert 1 <= wait <= 60
    finally:
        await a.stop()
        await b.stop()


async def test_the_local_table_is_bounded_and_past_it_redis_counts(
    redis: aioredis.Redis,
) -> None:
    prefix, clock = f"t{uuid.uuid4().hex}:rl:write-ip:", Clock()
    rates = counters(redis, clock, max_keys=2)
    try:
        for i in range(10):
            assert await rates.hit_many([(f"{prefix}{i}", 1, 1)]) == 0
        assert len(rates) == 2
        # Counted in Redis on the hit: the eighth address's second hit is refused.
        assert int(await redis.get(f"{prefix}7")) == 1
        assert await rates.hit_many([(f"{prefix}7", 1, 1)]) == 1
        # A window's counters go at its end, and the room with them.
        clock.now += 1
        await rates.sync()
        assert len(rates) == 0
    finally:
        await rates.stop()


async def test_with_redis_down_each_instance_keeps_its_own_count() -> None:
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    clock = Clock()
    rates = counters(dead, clock, max_keys=1)
    try:
        assert [await rates.hit_many([("rl:write:1", 2, 1)]) for _ in range(3)] == [0, 0, 1]
        with pytest.raises((RedisError, OSError)):
            await rates.sync()
        # What was owed stays owed for the next sync, and still counts here.
        assert await rates.hit_many([("rl:write:1", 2, 1)]) == 1
        # A counter that did not fit needs Redis: the caller decides (writes fail open).
        with pytest.raises((RedisError, OSError)):
            await rates.hit_many([("rl:write:2", 2, 1)])
    finally:
        await rates.stop()
        await dead.aclose()
