"""A rebuild's bulk load: `board_values` read in big chunks, written aside in bulk.

PostgreSQL formats each row as the text Redis stores (board id, member, zscore,
version), in board order, so this process only slices the rows into per-board groups;
load.lua then writes a group with one HMGET (the version guard against live writes
dual-written aside meanwhile), one ZADD and one HSET. Three stages overlap: PostgreSQL
reads the next chunk while this process slices one and Redis applies the one before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from itertools import chain
from operator import itemgetter

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from podium.boards.members import GLOBAL, MEMBER_SEQ_WIDTH
from podium.boards.scripts import BulkGroup, Scripts, expire_at

FETCH_ROWS = 20_000  # rows per PostgreSQL fetch
GROUP_ROWS = 1_000  # rows of one board per group: Lua unpacks a group's lists on its stack
IN_FLIGHT = 2  # load.lua calls sent and not yet answered
RETRIES = 3  # tries of a call Redis did not answer in time (a stall: AOF fsync, swap)

# The same text as members.member / to_zscore / apply.lua's versions: the member's time is
# Python's int(reached_at.timestamp() * 1000) (a float8 product, truncated), exactly.
# Columns: board, period, period_start, user, zscore, member, "member|version".
_SEQ = "bv.reached_seq::text"
BULK_SQL = f"""
SELECT bv.game_id || ':' || bv.period || ':' || to_char(bv.period_start, 'YYYY-MM-DD'),
       bv.period, bv.period_start, bv.user_id::text,
       (CASE WHEN bv.game_id = '{GLOBAL}' OR coalesce(g.sort_order, 'desc') = 'desc'
             THEN -bv.value ELSE bv.value END)::text,
       m.member, m.member || '|' || bv.last_seq
FROM board_values bv LEFT JOIN games g ON g.id = bv.game_id,
     LATERAL (SELECT lpad({_SEQ}, greatest({MEMBER_SEQ_WIDTH}, length({_SEQ})), '0') || ':'
              || bv.user_id || ':'
              || trunc(extract(epoch FROM bv.reached_at)::float8 * 1000)::bigint AS member) m
ORDER BY bv.game_id, bv.period, bv.period_start, bv.user_id
"""
_ZPAIR, _HPAIR = itemgetter(4, 5), itemgetter(3, 6)


def groups_of(records: Sequence[asyncpg.Record], retention_days: int) -> Iterator[BulkGroup]:
    """Slice rows in board order into per-board groups of at most GROUP_ROWS."""
    start, n = 0, len(records)
    while start < n:
        board = records[start][0]
        end = min(n, start + GROUP_ROWS)
        # A board's rows are contiguous: when the last one is of this board, all are.
        if records[end - 1][0] != board:
            end = start + 1
            while records[end][0] == board:
                end += 1
        part = records[start:end]
        first = part[0]
        yield (
            board,
            str(expire_at(first[1], first[2], retention_days)),
            [r[3] for r in part],
            list(chain.from_iterable(map(_ZPAIR, part))),
            list(chain.from_iterable(map(_HPAIR, part))),
        )
        start = end


def calls_of(groups: Iterator[BulkGroup], rows: int) -> Iterator[list[BulkGroup]]:
    """Pack groups into calls of at most `rows` rows (a group bigger than that is split)."""
    call: list[BulkGroup] = []
    size = 0
    for group in groups:
        board, expireat, users, zpairs, hpairs = group
        for i in range(0, len(users), rows):
            pairs = slice(2 * i, 2 * (i + rows))
            piece = (board, expireat, users[i : i + rows], zpairs[pairs], hpairs[pairs])
            if size and size + len(piece[2]) > rows:
                yield call
                call, size = [], 0
            call.append(piece)
            size += len(piece[2])
    if call:
        yield call


async def _send(scripts: Scripts, call: list[BulkGroup], gen: str) -> int:
    """One load.lua call, tried again when Redis does not answer in time: a call is
    idempotent (a row already written has its version, and is refused the second time)."""
    for attempt in range(RETRIES):
        try:
            return await scripts.load_bulk(call, gen)
        except (RedisTimeout, RedisConnectionError):
            if attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")


async def load_aside(
    pool: asyncpg.Pool,
    scripts: Scripts,
    retention_days: int,
    gen: str,
    rows_per_call: int,
    progress: Callable[[int], Awaitable[object]] | None = None,
) -> int:
    """Write every `board_values` row (one snapshot) to rebuild `gen`'s boards aside.

    `progress` is awaited after each call is sent, with the rows sent so far. Returns
    the rows read.
    """
    chunks: asyncio.Queue[Sequence[asyncpg.Record] | BaseException | None] = asyncio.Queue(2)

    async def read() -> None:
        try:
            async with pool.acquire() as conn, conn.transaction(readonly=True):
                cursor = await conn.cursor(BULK_SQL)
                while chunk := await cursor.fetch(FETCH_ROWS):
                    await chunks.put(chunk)
            await chunks.put(None)
        except Exception as exc:
            await chunks.put(exc)

    reader = asyncio.create_task(read(), name="podium-rebuild-read")
    sent: deque[asyncio.Future[int]] = deque()
    done = 0
    try:
        while (chunk := await chunks.get()) is not None:
            if isinstance(chunk, BaseException):
                raise chunk
            for call in calls_of(groups_of(chunk, retention_days), rows_per_call):
                while len(sent) >= IN_FLIGHT:
                    await sent.popleft()
                sent.append(asyncio.ensure_future(_send(scripts, call, gen)))
                done += sum(len(group[2]) for group in call)
                if progress is not None:
                    await progress(done)
        while sent:
            await sent.popleft()
        await reader
    finally:
        reader.cancel()
        for future in sent:
            future.cancel()
        # Collect what was cut short, so no failure of theirs is left unretrieved.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(reader, *sent, return_exceptions=True)
    return done
