"""The broker (cross-instance fan-out) against a real Redis, and the in-process one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from podium.realtime.broker import RESYNC, LocalBroker, RedisBroker
from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp, Stores
from tests.ws_helpers import open_ws, recv


@pytest.fixture
async def redis(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(stores.redis_url)
    yield client
    await client.aclose()


async def next_event(events: AsyncIterator[object], timeout: float = 5.0) -> object:
    return await asyncio.wait_for(anext(events), timeout)


async def numsub(redis: aioredis.Redis, channel: str) -> int:
    return dict(await redis.pubsub_numsub(channel))[channel.encode()]


async def kill_connection(redis: aioredis.Redis, broker: RedisBroker) -> None:
    """Drop the broker's connection the way Redis drops a subscriber that lags."""
    assert broker._writer is not None
    host, port = broker._writer.get_extra_info("sockname")[:2]
    await redis.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")


async def test_redis_broker_subscribes_once_and_reconnects(
    stores: Stores, redis: aioredis.Redis
) -> None:
    broker = RedisBroker(stores.redis_url, redis)
    events = broker.listen().__aiter__()
    a, b = f"t:{uuid.uuid4().hex}:a", f"t:{uuid.uuid4().hex}:b"
    try:
        assert await next_event(events) is RESYNC  # connected
        assert await broker.subscribe(a) is True
        assert await broker.subscribe(a) is True
        assert await broker.subscribe(b) is True
        assert (await numsub(redis, a), await numsub(redis, b)) == (1, 1)
        await broker.publish(a, b"one")
        assert await next_event(events) == (a, b"one")
        # The last local subscriber leaves the channel; not before.
        await broker.unsubscribe(a)
        await redis.publish(a, b"still")
        assert await next_event(events) == (a, b"still")
        await broker.unsubscribe(a)
        await broker.unsubscribe(b)
        await broker.subscribe(b)
        await redis.publish(a, b"gone")
        await redis.publish(b, b"two")
        assert await next_event(events) == (b, b"two")
        assert await numsub(redis, a) == 0
        # Dropped by Redis: reconnect, resubscribe, and say RESYNC.
        generation = broker.generation
        await kill_connection(redis, broker)
        assert await next_event(events) is RESYNC
        assert broker.generation == generation + 1 and broker.reconnects == 1
        await redis.publish(b, b"three")
        assert await next_event(events) == (b, b"three")
    finally:
        await broker.close()
    assert await numsub(redis, b) == 0


async def test_redis_broker_waits_for_redis(redis: aioredis.Redis) -> None:
    from podium.embedded import free_port

    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", redis, connect_timeout=0.2)
    events = broker.listen().__aiter__()
    try:
        # Nobody listens there: subscribing is remembered, not confirmed, and no crash.
        assert await broker.subscribe("x") is False
        with pytest.raises(TimeoutError):
            await next_event(events, timeout=0.3)
        assert not broker.connected.is_set()
    finally:
        await broker.close()


async def test_local_broker() -> None:
    broker = LocalBroker(maxsize=3)
    events = broker.listen().__aiter__()
    assert await next_event(events) is RESYNC
    await broker.publish("nobody", b"x")
    assert await broker.subscribe("c") is True
    await broker.publish("c", b"1")
    assert await next_event(events) == ("c", b"1")
    # A consumer that falls behind loses the backlog and is told to resync.
    for i in range(5):
        await broker.publish("c", str(i).encode())
    # Queue of 3: the 4th publish overflows (drop, RESYNC), the 5th follows it.
    assert [await next_event(events) for _ in range(2)] == [RESYNC, ("c", b"4")]
    await broker.unsubscribe("c")
    await broker.publish("c", b"late")
    assert broker.channels == set()


async def test_hub_resyncs_each_socket_once_after_a_dropped_subscription(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    assert server.services is not None
    game = (await create_game(client, admin))["id"]
    assert (await post_score(client, player, game, 3)).status_code == 200
    sockets = [await open_ws(server, "scoreboard", player, game=game) for _ in range(3)]
    try:
        for ws in sockets:
            assert (await recv(ws))["type"] == "snapshot"
        broker = server.podium.realtime.hub.broker
        await kill_connection(server.services.redis, broker)
        for ws in sockets:
            snap = await recv(ws)
            assert snap["type"] == "snapshot"
            assert [(e["user_id"], e["score"]) for e in snap["entries"]] == [(player.id, 3)]
        assert (await post_score(client, player, game, 4)).status_code == 200
        for ws in sockets:
            diff = await recv(ws)  # the very next message: no second snapshot
            assert diff["type"] == "diff" and diff["upserts"][0]["score"] == 4
    finally:
        for ws in sockets:
            await ws.close()
