"""Redis as an index derived from PostgreSQL: rebuild, and notice when it is lost.

`board_values` (PostgreSQL) is the truth; the Redis boards are rebuilt from it with
the same version-guarded apply.lua the writer uses, so writes landing during a
rebuild converge. The `epoch` key is set after a complete build: its absence means
Redis lost its data (restart without persistence, FLUSHALL). While the index is
stale or rebuilding, `ready` is False and reads go to PostgreSQL.
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

from podium.boards.keys import GLOBAL, BoardKeys, board_id
from podium.boards.scripts import ApplyEvent, Scripts, set_row
from podium.protocol import BoardChange, board_change_encoder

log = logging.getLogger("podium.index")

LOAD_CHUNK = 2000
CHECK_INTERVAL_S = 1.0
LOCK_TTL_MS = 30_000

_ROWS_SQL = (
    "SELECT bv.game_id, bv.period, bv.period_start, bv.user_id, bv.value, bv.reached_seq,"
    " bv.reached_at, bv.last_seq, coalesce(g.sort_order, 'desc') = 'desc' AS descending"
    " FROM board_values bv LEFT JOIN games g ON g.id = bv.game_id"
)


def void_gen_key(prefix: str) -> str:
    """Bumped by every void: a rebuild that overlapped one loads again."""
    return f"{prefix}void-gen"


def rebuild_lock_key(prefix: str) -> str:
    return f"{prefix}rebuild-lock"


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
) -> set[str]:
    """Apply `board_values` rows (all, or those of `users`) to Redis; return the boards."""
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
                applying = asyncio.ensure_future(scripts.apply(events, publish=publish))
                if progress is not None:
                    await progress()
        if applying is not None:
            await applying
    finally:
        if applying is not None and not applying.done():
            applying.cancel()
    return boards


async def _scan_delete(redis: aioredis.Redis, pattern: str) -> set[str]:
    found: set[str] = set()
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await redis.unlink(*batch)
            found.update(k.decode() for k in batch)
            batch = []
    if batch:
        await redis.unlink(*batch)
        found.update(k.decode() for k in batch)
    return found


async def rebuild(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    prefix: str,
    retention_days: int,
    progress: Callable[[], Awaitable[object]] | None = None,
) -> int:
    """Recreate every board from `board_values`; return how many boards were built.

    Only board keys (`b:`, `m:`) are deleted: names, denylists and rate limits stay.
    Board seqs are kept and bumped, so a subscriber never sees a seq go backwards.
    """
    keys = BoardKeys(prefix)
    scripts = Scripts(redis, prefix)
    while True:
        gen = await redis.get(void_gen_key(prefix))
        old = await _scan_delete(redis, f"{prefix}b:*")
        await _scan_delete(redis, f"{prefix}m:*")
        boards = await load_rows(pool, scripts, retention_days, progress=progress)
        if await redis.get(void_gen_key(prefix)) == gen:
            break
        log.info("a void overlapped the rebuild; loading again")
    boards |= {k.removeprefix(f"{prefix}b:") for k in old}
    await redis.set(keys.epoch, f"{int(time.time())}:{uuid.uuid4().hex[:8]}")
    for board in sorted(boards):
        seq = await redis.incr(keys.seq(board))
        await redis.publish(
            keys.channel(board),
            board_change_encoder.encode(BoardChange(board=board, seq=seq, resync=True)),
        )
    return len(boards)


class BoardIndex:
    """The state of this process's view of the Redis index, and its loss watcher."""

    def __init__(
        self, pool: asyncpg.Pool, redis: aioredis.Redis, prefix: str, retention_days: int
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.prefix = prefix
        self.retention_days = retention_days
        self.keys = BoardKeys(prefix)
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
        await self.rebuild()

    async def rebuild(self) -> bool:
        """Rebuild unless another instance is at it; return whether this one did."""
        token = uuid.uuid4().hex
        lock = rebuild_lock_key(self.prefix)
        if not await self.redis.set(lock, token, nx=True, px=LOCK_TTL_MS):
            return False
        self.rebuilding = True
        # Failures from here on are covered by this rebuild only if they commit before
        # its snapshot; a later failure marks the index stale again.
        self.stale = False
        try:
            count = await rebuild(
                self.pool,
                self.redis,
                self.prefix,
                self.retention_days,
                # A long rebuild keeps its lock; a dead one loses it within the TTL.
                progress=lambda: self.redis.pexpire(lock, LOCK_TTL_MS),
            )
            self.rebuilds += 1
            self.last_count = count
            self._epoch_seen = True
            log.info("index rebuilt", extra={"boards": count})
            return True
        except BaseException:
            self.stale = True
            raise
        finally:
            self.rebuilding = False
            with contextlib.suppress(Exception):
                if await self.redis.get(lock) == token.encode():
                    await self.redis.delete(lock)

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
