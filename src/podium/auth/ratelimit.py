"""Fixed-window rate limits shared by every instance.

`hit`/`enforce` count in Redis on every hit (login and registration: rare, exact);
`RateCounters` counts in process and reconciles with Redis per tick (the write path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from podium.errors import rate_limited
from podium.keys import Keys

log = logging.getLogger("podium.ratelimit")


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


class _Count:
    """One (bucket, who) counter for one window: what Redis said, and what it owes."""

    __slots__ = ("ends", "pending", "seconds", "seen")

    def __init__(self, ends: float, seconds: int) -> None:
        self.ends = ends  # when the window ends (Redis's TTL once synced)
        self.seconds = seconds
        self.seen = 0  # the cluster-wide count Redis returned at the last sync
        self.pending = 0  # hits here not yet added in Redis


class RateCounters:
    """Fixed-window limits counted in process, reconciled with Redis every `sync_s`.

    A hit costs no I/O: it is counted here, and every `sync_s` one pipelined round
    trip adds each counter's new hits in Redis (INCRBY, EXPIRE NX, PTTL: the keys and
    windows of `hit`) and learns the cluster-wide count and the window's end back. One
    instance alone is exact; N instances admit at most what the others counted in the
    last `sync_s` on top of the limit.

    Bounded: at most `max_keys` counters live here (a counter goes when its window
    ends); a new counter past that is counted in Redis on the hit, as `hit_many` does.
    With Redis down, each instance keeps enforcing on its own count.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        max_keys: int,
        sync_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._max_keys = max(1, max_keys)
        self._sync_s = sync_s
        self._clock = clock
        self._counts: dict[str, _Count] = {}
        self._task: asyncio.Task[None] | None = None
        self.syncs = 0
        self.sync_errors = 0

    def __len__(self) -> int:
        return len(self._counts)

    async def hit_many(self, counters: list[tuple[str, int, int]]) -> int:
        """Count one hit on each (key, limit, window seconds); 0 or the longest wait.

        Raises RedisError/OSError only for a counter that did not fit here.
        """
        self.start()
        now = self._clock()
        wait = 0
        spill: list[tuple[str, int, int]] = []
        for key, limit, window in counters:
            count = self._counts.get(key)
            if count is None or count.ends <= now:
                if count is None and len(self._counts) >= self._max_keys:
                    spill.append((key, limit, window))
                    continue
                # The window starts with its first hit, here or (once synced) anywhere.
                count = _Count(now + window, window)
                self._counts[key] = count
            count.pending += 1
            if count.seen + count.pending > limit:
                wait = max(wait, max(1, math.ceil(count.ends - now)))
        if spill:
            wait = max(wait, await hit_many(self._redis, spill))
        return wait

    def start(self) -> None:
        """Start syncing (idempotent; the first hit starts it too)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="podium-rate-sync")

    async def stop(self) -> None:
        """Stop syncing, after a last sync of what is owed."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(RedisError, OSError):
                await self.sync()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._sync_s)
            try:
                await self.sync()
            except (RedisError, OSError) as exc:
                # Kept owed: the next sync adds it, if its window still runs. Said once
                # per outage, not 20 times a second.
                if not self.sync_errors:
                    log.warning("rate counters not synced: redis unavailable: %r", exc)
                self.sync_errors += 1
            else:
                if self.sync_errors:
                    log.info("rate counters synced again", extra={"failed": self.sync_errors})
                self.sync_errors = 0

    async def sync(self) -> None:
        """One round trip: add what each counter owes, learn the cluster-wide counts."""
        now = self._clock()
        owed: list[tuple[str, _Count, int]] = []
        for key, count in list(self._counts.items()):
            if count.ends <= now:
                del self._counts[key]  # its window is over, whatever it still owed
            elif count.pending:
                owed.append((key, count, count.pending))
        if not owed:
            return
        for _, count, n in owed:
            count.pending -= n
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, count, n in owed:
                    pipe.incrby(key, n)
                    pipe.expire(key, count.seconds, nx=True)
                    pipe.pttl(key)
                results = await pipe.execute()
        except BaseException:
            for _, count, n in owed:
                count.pending += n
            raise
        self.syncs += 1
        for i, (_, count, _) in enumerate(owed):
            # The total includes this instance's hits just added; those made during
            # the round trip stay owed.
            count.seen = max(count.seen, int(results[3 * i]))
            ttl_ms = results[3 * i + 2]
            if ttl_ms and ttl_ms > 0:
                # Redis's window is the shared one (another instance may have opened it).
                count.ends = now + ttl_ms / 1000
