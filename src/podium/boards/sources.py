"""Where a read's rows come from: the Redis index, or PostgreSQL's `board_values`.

The Redis reads raise one of `REDIS_FAILURES` for anything they cannot trust (Redis
down, no epoch, a value that does not parse): the caller then asks PostgreSQL. The
PostgreSQL reads raise 503 when it is unreachable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date, datetime
from importlib import resources

import asyncpg
import msgspec
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from podium import metrics
from podium.boards.members import board_id, from_zscore, parse_member
from podium.errors import ApiError, unavailable
from podium.services import Services
from podium.store.db import is_unavailable
from podium.validation import Period

RANKS_LUA = (resources.files("podium.boards") / "lua" / "ranks.lua").read_text()

# (position, user_id, value, reached_ms or None, member ("" from PostgreSQL))
Row = tuple[int, int, int, int | None, str]
Ranks = dict[int, tuple[int | None, int | None]]


class Board(msgspec.Struct, frozen=True):
    """A resolved board: its id, and whether higher values rank first."""

    game: str
    period: Period
    start: date
    descending: bool

    @property
    def id(self) -> str:
        return board_id(self.game, self.period, self.start)


class Untrusted(Exception):
    """Redis answered, but not with an index we may trust (no epoch, foreign values)."""


# Any of these from a Redis read sends the read to PostgreSQL.
REDIS_FAILURES = (RedisError, OSError, TimeoutError, Untrusted)


@contextlib.contextmanager
def postgres() -> Iterator[None]:
    """PostgreSQL unreachable: 503, never 500."""
    try:
        yield
    except ApiError:
        raise
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        metrics.POSTGRES_ERRORS.inc()
        raise unavailable("the score store is unavailable") from None


# --- Redis -----------------------------------------------------------------------------


class RedisPage(msgspec.Struct):
    """What page.lua answers: the board's total, the rows, and their cached names."""

    total: int
    rows: list[Row]
    first: int
    names: dict[int, str]
    # Members strictly better than the first row (competition ranking), or -1.
    better: int = -1
    # The around user is on the board (always True for a plain page).
    found: bool = True


async def redis_page(
    services: Services,
    script: AsyncScript,
    board: Board,
    offset: int,
    limit: int,
    after: str | None = None,
    *,
    competition: bool = False,
    around: tuple[int, int] | None = None,
) -> RedisPage:
    """A page, its total and its names in one call (page.lua). `after` (a cursor's
    member) moves `offset` to the row after that member while it is still on the board;
    `around` (user id, radius) makes the page that user's neighbourhood."""
    keys = services.keys
    key = keys.zset(board.id)
    user, radius = around if around is not None else ("", 0)
    packed = await script(
        keys=[key, keys.members(board.id), keys.epoch, keys.names],
        args=[offset, limit, after or "", "1" if competition else "0", user, radius],
    )
    try:
        raw = msgspec.msgpack.decode(packed)
        total = int(raw[0])
        if total < 0:
            raise Untrusted("no epoch, or an entry that does not parse")
        first = int(raw[1])
        if first < 0:
            return RedisPage(total, [], 0, {}, found=False)
        better = int(raw[2])
        rows: list[Row] = []
        names: dict[int, str] = {}
        for i, j in enumerate(range(3, len(raw), 3)):
            member, score, name = raw[j], raw[j + 1], raw[j + 2]
            _, uid, ms = parse_member(member)
            rows.append((first + i, uid, from_zscore(float(score), board.descending), ms, member))
            if isinstance(name, str):
                names[uid] = name
    except (ValueError, IndexError, TypeError, OverflowError, msgspec.DecodeError) as exc:
        raise Untrusted(f"an answer that does not parse: {exc}") from None
    return RedisPage(total, rows, first, names, better)


async def redis_ranks(
    services: Services, script: AsyncScript, board: Board, user_ids: list[int]
) -> tuple[int, Ranks]:
    keys = services.keys
    result = await script(
        keys=[keys.zset(board.id), keys.members(board.id), keys.epoch], args=user_ids
    )
    ranks: Ranks = {}
    try:
        total = int(result[0])
        if total < 0:
            raise Untrusted("no epoch, or an entry that does not parse")
        for i, uid in enumerate(user_ids):
            rank, score = int(result[1 + 2 * i]), result[2 + 2 * i]
            if rank < 0:
                ranks[uid] = (None, None)
            else:
                ranks[uid] = (rank + 1, from_zscore(float(score), board.descending))
    except (ValueError, IndexError, TypeError, OverflowError) as exc:
        raise Untrusted(f"an answer that does not parse: {exc}") from None
    return total, ranks


# --- PostgreSQL ------------------------------------------------------------------------


def _order_sql(board: Board) -> str:
    return "value DESC, reached_seq" if board.descending else "value ASC, reached_seq"


_BOARD_WHERE = "game_id = $1 AND period = $2 AND period_start = $3"


async def _pg_total(conn: asyncpg.Connection, board: Board) -> int:
    """How many rows the board has."""
    sql = f"SELECT count(*) FROM board_values WHERE {_BOARD_WHERE}"
    return int(await conn.fetchval(sql, board.game, board.period, board.start))


async def pg_page(
    services: Services, board: Board, offset: int, limit: int
) -> tuple[int, list[Row], int]:
    args = (board.game, board.period, board.start)
    with postgres():
        async with services.pool.acquire() as conn:
            total = await _pg_total(conn, board)
            rows = await conn.fetch(
                f"SELECT user_id, value, reached_seq, reached_at FROM board_values"
                f" WHERE {_BOARD_WHERE}"
                f" ORDER BY {_order_sql(board)} OFFSET $4 LIMIT $5",
                *args,
                offset,
                limit,
            )
    out = []
    for i, r in enumerate(rows):
        ms = int(r["reached_at"].timestamp() * 1000) if r["reached_at"] else None
        out.append((offset + i, r["user_id"], r["value"], ms, ""))
    return total, out, offset


async def pg_ranks(services: Services, board: Board, user_ids: list[int]) -> tuple[int, Ranks]:
    better = ">" if board.descending else "<"
    args = (board.game, board.period, board.start)
    with postgres():
        async with services.pool.acquire() as conn:
            total = await _pg_total(conn, board)
            rows = await conn.fetch(
                f"SELECT b.user_id, b.value, (SELECT count(*) FROM board_values o WHERE"
                f" o.game_id = $1 AND o.period = $2 AND o.period_start = $3 AND (o.value"
                f" {better} b.value OR (o.value = b.value AND o.reached_seq < b.reached_seq))"
                f") AS better FROM board_values b WHERE b.game_id = $1 AND b.period = $2"
                f" AND b.period_start = $3 AND b.user_id = ANY($4::bigint[])",
                *args,
                user_ids,
            )
    ranks: Ranks = {uid: (None, None) for uid in user_ids}
    for r in rows:
        ranks[r["user_id"]] = (int(r["better"]) + 1, int(r["value"]))
    return total, ranks


async def pg_times(services: Services, board: Board, user_ids: list[int]) -> dict[int, datetime]:
    """`achieved_at` of members stored without their time (rare: see apply.lua)."""
    if not user_ids:
        return {}
    try:
        rows = await services.pool.fetch(
            f"SELECT user_id, reached_at FROM board_values WHERE {_BOARD_WHERE}"
            " AND user_id = ANY($4::bigint[])",
            board.game,
            board.period,
            board.start,
            user_ids,
        )
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        return {}  # PostgreSQL down: the page still comes from Redis, without these times
    return {r["user_id"]: r["reached_at"] for r in rows}


async def pg_better_than(services: Services, board: Board, value: int) -> int:
    """How many rows rank strictly better than `value`."""
    better = ">" if board.descending else "<"
    with postgres():
        count = await services.pool.fetchval(
            f"SELECT count(*) FROM board_values WHERE {_BOARD_WHERE} AND value {better} $4",
            board.game,
            board.period,
            board.start,
            value,
        )
    return int(count)
