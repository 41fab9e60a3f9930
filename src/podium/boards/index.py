"""Redis as an index derived from PostgreSQL: rebuild, and notice when it is lost.

`board_values` (PostgreSQL) is the truth. A rebuild takes a lease (`rebuild-lock`,
its value the rebuild's generation), builds every board aside from one snapshot of
`board_values` (in bulk: boards/bulk.py), and swaps them in with one script
(swap.lua): no instance ever reads a half-built board. While the lease is held, every
apply also writes its rows to the boards aside (apply.lua), with the same version
guards as the bulk load, so no write acknowledged during the rebuild is lost and
voids (tombstones) win over the snapshot in either order. The `epoch` key is set by
the swap: its absence means Redis lost its data (restart without persistence,
FLUSHALL) or an instance missed a write, and every instance then reads PostgreSQL
until the next swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import redis.asyncio as aioredis

from podium.boards.bulk import load_aside
from podium.boards.members import GLOBAL, board_id
from podium.boards.scripts import ApplyEvent, Scripts, set_row
from podium.keys import Keys

log = logging.getLogger("podium.index")

LOAD_CHUNK = 2000  # rows per apply.lua call (load_rows)
BULK_CHUNK = 4000  # rows per load.lua call (a rebuild's bulk load)
CHECK_INTERVAL_S = 1.0
LOCK_TTL_MS = 30_000

_ROWS_SQL = (
    "SELECT bv.game_id, bv.period, bv.period_start, bv.user_id, bv.value, bv.reached_seq,"
    " bv.reached_at, bv.last_seq, coalesce(g.sort_order, 'desc') = 'desc' AS descending"
    " FROM board_values bv LEFT JOIN games g ON g.id = bv.game_id"
)


class RebuildBusy(Exception):
    """Another rebuild holds the lease."""


class LeaseLost(Exception):
    """This rebuild stalled past its lease; another may have started: it installs nothing."""


def _event(record: asyncpg.Record, retention_days: int) -> tuple[str, ApplyEvent]:
    game = record["game_id"]
    desc = True if game == GLOBAL else record["descending"]
    board = board_id(game, record["period"], record["period_start"])
    row = set_row(
        board,
        record["period"],
        record["period_start"],
        record["user_id"],
        record["value"],
        record["reached_seq"],
        record["last_seq"],
        desc,
        retention_days,
        int(record["reached_at"].timestamp() * 1000),
    )
    return board, ApplyEvent("", record["user_id"], [row])


async def load_rows(
    pool: asyncpg.Pool,
    scripts: Scripts,
    retention_days: int,
    users: Sequence[int] | None = None,
    *,
    publish: bool = False,
    progress: Callable[[], Awaitable[object]] | None = None,
    aside: str | None = None,
) -> set[str]:
    """Apply `board_values` rows (all, or those of `users`) to Redis; return the boards.

    With `aside` (a rebuild's generation) the rows go to that rebuild's boards aside.
    """
    boards: set[str] = set()
    sql = _ROWS_SQL if users is None else _ROWS_SQL + " WHERE bv.user_id = ANY($1::bigint[])"
    args = () if users is None else (list(users),)
    applying: asyncio.Task[object] | None = None
    try:
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            cursor = await conn.cursor(sql, *args)
            while chunk := await cursor.fetch(LOAD_CHUNK):
                events = []
                for record in chunk:
                    board, event = _event(record, retention_days)
                    boards.add(board)
                    events.append(event)
                # Redis runs one chunk while this process reads and formats the next.
                if applying is not None:
                    await applying
                step = (
                    scripts.load(events, aside)
                    if aside is not None
                    else scripts.apply(events, publish=publish)
                )
                applying = asyncio.ensure_future(step)
                if progress is not None:
                    await progress()
        if applying is not None:
            await applying
    finally:
        if applying is not None and not applying.done():
            applying.cancel()
    return boards


class _Lease:
    """The rebuild lease, renewed as the rebuild goes (a dead rebuild loses it)."""

    def __init__(self, redis: aioredis.Redis, scripts: Scripts, prefix: str) -> None:
        self.redis = redis
        self.scripts = scripts
        self.key = Keys(prefix).rebuild_lock
        self.gen = uuid.uuid4().hex
        self._renewed = 0.0

    async def acquire(self) -> None:
        if not await self.redis.set(self.key, self.gen, nx=True, px=LOCK_TTL_MS):
            raise RebuildBusy
        self._renewed = time.monotonic()

    async def keep(self) -> None:
        """Renew when a third of the lease has gone; raise LeaseLost if it is not ours."""
        if time.monotonic() - self._renewed < LOCK_TTL_MS / 3000:
            return
        if not await self.scripts.lease(self.key, self.gen, LOCK_TTL_MS):
            raise LeaseLost
        self._renewed = time.monotonic()

    async def release(self) -> None:
        await self.scripts.lease(self.key, self.gen, 0)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


async def _drop_aside(redis: aioredis.Redis, prefix: str, gen: str) -> None:
    """Drop the boards rebuild `gen` built aside."""
    aside = Keys(prefix).aside(gen)
    boards = [_text(b) for b in await redis.smembers(aside.aside_boards)]
    for i in range(0, len(boards), 500):
        chunk = boards[i : i + 500]
        await redis.unlink(*(key for b in chunk for key in (aside.zset(b), aside.members(b))))
    await redis.unlink(aside.aside_boards)


async def _drop_leftovers(redis: aioredis.Redis, prefix: str, gen: str) -> None:
    """Record `gen` as the rebuild under way; drop what a dead earlier one built aside."""
    old = await redis.set(Keys(prefix).rebuild_aside, gen, get=True)
    if isinstance(old, bytes) and old.decode() != gen:
        await _drop_aside(redis, prefix, old.decode())


async def _live_boards(redis: aioredis.Redis, prefix: str, lease: _Lease) -> list[str]:
    found: list[str] = []
    live = Keys(prefix).zset("")
    async for key in redis.scan_iter(match=f"{live}*", count=1000):
        found.append(_text(key).removeprefix(live))
        if len(found) % 1000 == 0:
            await lease.keep()
    return found


async def rebuild(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    prefix: str,
    retention_days: int,
    progress: Callable[[int], Awaitable[object]] | None = None,
) -> int:
    """Recreate every board from `board_values`; return how many boards were built.

    `progress` is awaited as the load goes, with the board rows loaded so far.

    Raises RebuildBusy when another rebuild holds the lease. Only board keys (`b:`,
    `m:`) are replaced: names, denylists and rate limits stay. Board seqs are kept and
    bumped, so a subscriber never sees a seq go backwards, and each board gets one
    `resync` message, after the swap.
    """
    scripts = Scripts(redis, prefix)
    lease = _Lease(redis, scripts, prefix)
    await lease.acquire()
    swapped = False

    async def step(rows: int) -> None:
        await lease.keep()
        if progress is not None:
            await progress(rows)

    try:
        await _drop_leftovers(redis, prefix, lease.gen)
        # Boards created after this scan are in the snapshot below (committed before
        # the lease) or written aside by their apply (after it): the swap has them all.
        live = await _live_boards(redis, prefix, lease)
        await load_aside(pool, scripts, retention_days, lease.gen, BULK_CHUNK, progress=step)
        epoch = f"{int(time.time())}:{lease.gen[:8]}"
        count = await scripts.swap(lease.gen, epoch, live)
        if count < 0:
            raise LeaseLost
        swapped = True
        return count
    finally:
        if not swapped:
            # Writes stop going aside once the lease is gone; then its boards can go.
            with contextlib.suppress(Exception):
                await lease.release()
                await _drop_aside(redis, prefix, lease.gen)


class BoardIndex:
    """The state of this process's view of the Redis index, and its loss watcher."""

    def __init__(
        self, pool: asyncpg.Pool, redis: aioredis.Redis, prefix: str, retention_days: int
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.prefix = prefix
        self.retention_days = retention_days
        self.keys = Keys(prefix)
        self.stale = False
        self.rebuilding = False
        self._epoch_seen = False
        self._task: asyncio.Task[None] | None = None
        self.rebuilds = 0
        self.last_count = 0

    @property
    def ready(self) -> bool:
        """True when reads may trust Redis."""
        return self._epoch_seen and not self.stale and not self.rebuilding

    def mark_stale(self) -> None:
        """A Redis apply failed: the index misses a committed write until rebuilt."""
        self.stale = True

    async def start(self) -> None:
        # A fresh system builds its (empty) index now; a big rebuild is left to the
        # watcher so startup does not wait for it (reads use PostgreSQL meanwhile).
        with contextlib.suppress(Exception):
            if await self.redis.exists(self.keys.epoch):
                self._epoch_seen = True
            elif await self.pool.fetchval("SELECT NOT EXISTS (SELECT 1 FROM board_values)"):
                await self.rebuild()
        self._task = asyncio.create_task(self._watch(), name="podium-index-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check(self) -> None:
        """One look: rebuild when Redis lost the index or a write missed it."""
        if not self.stale and await self.redis.exists(self.keys.epoch):
            self._epoch_seen = True
            return
        self._epoch_seen = False
        if self.stale:
            # This instance missed a write: no instance may trust Redis until the swap.
            await self.redis.delete(self.keys.epoch)
        await self.rebuild()

    async def rebuild(self) -> bool:
        """Rebuild unless another instance is at it; return whether this one did."""
        self.rebuilding = True
        # Failures from here on are covered by this rebuild only if they commit before
        # its snapshot; a later failure marks the index stale again.
        was_stale, self.stale = self.stale, False
        try:
            count = await rebuild(self.pool, self.redis, self.prefix, self.retention_days)
        except RebuildBusy:
            self.stale = self.stale or was_stale
            return False
        except BaseException:
            self.stale = True
            raise
        finally:
            self.rebuilding = False
        self.rebuilds += 1
        self.last_count = count
        self._epoch_seen = True
        log.info("index rebuilt", extra={"boards": count})
        return True

    async def _watch(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._epoch_seen = False
                log.warning("index check failed: %s", exc)
            await asyncio.sleep(CHECK_INTERVAL_S)
