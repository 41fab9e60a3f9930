"""The in-process denylist: token checks without Redis, and never a forgotten denial."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import redis.asyncio as aioredis

from podium.auth.denylist import Denylist
from podium.keys import Keys
from tests.conftest import (
    RunningApp,
    Stores,
    drop_test_state,
    make_admin,
    make_settings,
    running_app,
)
from tests.conftest import register_and_login as register


@pytest.fixture
async def redis(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(stores.redis_url)
    yield client
    await client.aclose()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a state the event loop reaches by itself (a reconnection, a reload)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_a_miss_is_trusted_only_while_the_copy_is_complete() -> None:
    clock = Clock()
    deny = Denylist(Keys("t:"), size=2, clock=clock)
    # Before the first reload nothing is known: the guard asks Redis.
    assert deny.check("j", "fam", 1) is None
    deny._live = True  # as after a reload
    assert deny.check("j", "fam", 1) == (False, False)
    deny.add("fam", ttl=10)
    deny.add("user:1", ttl=10)
    assert deny.check("j", "fam", 1) == (True, True)
    assert deny.check("j", "other", 2) == (False, False)
    # A token without a family is only judged by Redis.
    assert deny.check("j", "", 2) is None
    # Entries expire with their Redis TTL.
    clock.now += 11
    assert deny.check("j", "fam", 1) == (False, False)
    # Past the bound a denial is not kept here, so no miss is trusted any more.
    deny.add("a", ttl=10)
    deny.add("b", ttl=10)
    deny.add("c", ttl=10)
    assert not deny.trusted and deny.check("j", "x", 3) is None
    # A lost channel: nothing trusted until the next reload.
    deny = Denylist(Keys("t:"), size=10, clock=clock)
    deny._live = True
    deny.lost()
    assert deny.check("j", "fam", 1) is None
    # Service credentials are refused by PostgreSQL on every request, not here.
    deny.add("service:arena", ttl=10)
    assert len(deny) == 0


async def test_a_reload_reads_every_deny_key_with_its_ttl(redis: aioredis.Redis) -> None:
    keys, clock = Keys(f"t{uuid.uuid4().hex[:8]}:"), Clock()
    await redis.set(keys.deny_family("fam"), "1", ex=30)
    await redis.set(keys.deny_user(7), "1", ex=30)
    await redis.set(keys.deny_jti("j1"), "1", ex=2)
    deny = Denylist(keys, size=10, clock=clock)
    try:
        assert await deny.resync(redis) is True
        assert deny.check("j1", "fam", 7) == (True, True)
        assert deny.check("j1", "other", 8) == (True, False)
        clock.now += 3  # the jti's key is gone from Redis by now, and from here
        assert deny.check("j1", "other", 8) == (False, False)
        # Over the bound, a reload does not make the copy trusted.
        small = Denylist(keys, size=2, clock=clock)
        assert await small.resync(redis) is False
        assert small.check("j1", "other", 8) is None
    finally:
        await redis.delete(keys.deny_family("fam"), keys.deny_user(7), keys.deny_jti("j1"))


async def _mget_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


async def test_a_trusted_denylist_checks_tokens_without_redis(
    stores: Stores, redis: aioredis.Redis
) -> None:
    settings = make_settings(stores)
    try:
        async with (
            running_app(settings) as app,
            httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=10) as http,
        ):
            denylist = app.podium.services.denylist
            await until(lambda: denylist.trusted)
            player = await register(http)
            before = await _mget_calls(redis)
            for _ in range(5):
                assert (await http.get("/auth/me", headers=player.headers)).status_code == 200
            assert await _mget_calls(redis) == before
            # This instance denies its own logout before it answers.
            assert (await http.post("/auth/logout", headers=player.headers)).status_code == 204
            assert (await http.get("/auth/me", headers=player.headers)).status_code == 401
            assert await _mget_calls(redis) == before
    finally:
        await drop_test_state(settings)


async def test_an_instance_that_lost_the_channel_still_denies(
    stores: Stores, redis: aioredis.Redis
) -> None:
    """CLIENT KILL TYPE pubsub: revocations announced meanwhile are never heard, yet
    the instance refuses them (from Redis until it resynced, from its reload after)."""
    settings = make_settings(stores)
    try:
        async with (
            running_app(settings) as first,
            running_app(settings) as second,
            httpx.AsyncClient(base_url=first.url + "/api/v1", timeout=10) as http,
        ):
            deny: Denylist = second.podium.services.denylist
            await until(lambda: deny.trusted and first.podium.services.denylist.trusted)
            leaver, cheat, later = [await register(http) for _ in range(3)]
            admin_token = await _admin(first, http)
            on_second = f"{second.url}/api/v1/auth/me"
            for who in (leaver, cheat, later):
                assert (await http.get(on_second, headers=who.headers)).status_code == 200

            losses = deny.losses
            await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            await until(lambda: deny.losses > losses)
            # Revoked on the first instance while the second may not be listening.
            assert (await http.post("/auth/logout", headers=leaver.headers)).status_code == 204
            r = await http.post(f"/admin/users/{cheat.id}/void", headers=admin_token)
            assert r.status_code == 200, r.text
            assert (await http.get(on_second, headers=leaver.headers)).status_code == 401
            r = await http.get(on_second, headers=cheat.headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "voided", r.text

            # Resynced: the reload brought both denials, and the channel works again.
            await until(lambda: deny.trusted)
            assert deny.reloads >= 2
            assert (await http.get(on_second, headers=leaver.headers)).status_code == 401
            assert (await http.get(on_second, headers=cheat.headers)).status_code == 403
            assert (await http.post("/auth/logout", headers=later.headers)).status_code == 204
            family = second.podium.services.tokens.decode(later.access_token)["fam"]
            await until(lambda: deny.check("", family, later.id) == (True, False))
            assert (await http.get(on_second, headers=later.headers)).status_code == 401
    finally:
        await drop_test_state(settings)


async def _admin(app: RunningApp, http: httpx.AsyncClient) -> dict[str, str]:
    return (await make_admin(app, http)).headers
