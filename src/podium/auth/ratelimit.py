"""Fixed-window rate limits counted in Redis, shared by every instance."""

from __future__ import annotations

import redis.asyncio as aioredis

from podium.errors import rate_limited
from podium.keys import Keys


async def hit(redis: aioredis.Redis, key: str, limit: int, window: int) -> int:
    """Count one hit; return 0 when allowed, else the seconds until the window resets."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, window, nx=True)
        pipe.ttl(key)
        count, _, ttl = await pipe.execute()
    if count > limit:
        return ttl if ttl and ttl > 0 else window
    return 0


async def hit_many(redis: aioredis.Redis, counters: list[tuple[str, int, int]]) -> int:
    """Count one hit on each (key, limit, window) in one round trip; 0 or the longest wait."""
    async with redis.pipeline(transaction=True) as pipe:
        for key, _, window in counters:
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
            pipe.ttl(key)
        results = await pipe.execute()
    wait = 0
    for i, (_, limit, window) in enumerate(counters):
        count, ttl = results[3 * i], results[3 * i + 2]
        if count > limit:
            wait = max(wait, ttl if ttl and ttl > 0 else window)
    return wait


async def enforce(
    redis: aioredis.Redis, keys: Keys, bucket: str, who: str, limit: int, window: int
) -> None:
    """Raise 429 with Retry-After when `who` is over `limit` hits per `window` seconds."""
    retry = await hit(redis, keys.rate(bucket, who), limit, window)
    if retry:
        raise rate_limited(retry)
