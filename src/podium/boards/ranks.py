"""Reads: pages, ranks, neighbours and friends of any board.

Each read is O(log N + page) in Redis. While the Redis index is stale (lost data,
rebuilding, unreachable, or an answer that does not parse) the same reads are
answered from PostgreSQL's `board_values`: slower, still correct. PostgreSQL
unreachable is 503. Client values (games, user ids, offsets, cursors) are checked
before any cache or store sees them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Literal

import msgspec

from podium import metrics
from podium.boards.members import GLOBAL, parse_member
from podium.boards.names import fill_missing, usernames
from podium.boards.runtime import Boards
from podium.boards.sources import (
    REDIS_FAILURES,
    Board,
    Ranks,
    Row,
    pg_better_than,
    pg_page,
    pg_ranks,
    pg_times,
    postgres,
    redis_page,
    redis_ranks,
)
from podium.errors import bad_request, invalid, not_found
from podium.periods import parse_period, period_start
from podium.services import Services
from podium.validation import INT64_MAX, MAX_OFFSET, MAX_PAGE_LIMIT, is_slug

MAX_LIMIT = MAX_PAGE_LIMIT
MAX_RADIUS = 50
# A cursor may go past MAX_OFFSET (that is what it is for); this keeps offset + limit
# inside Redis's and PostgreSQL's integers.
MAX_CURSOR_OFFSET = 1_000_000_000
# What keys.member() makes: reached_seq (zero-padded), user id, optional time in ms.
_MEMBER_RE = re.compile(r"\d{15,19}:\d{1,19}(:\d{1,15})?")


class Entry(msgspec.Struct):
    rank: int
    user_id: int
    username: str
    score: int
    achieved_at: datetime | None


# Where a page was read: the hub's in-memory top window of a watched board ("live",
# current to its last tick: `as_of`), the Redis index, or PostgreSQL while the index
# cannot be trusted.
Source = Literal["live", "index", "database"]


class Page(msgspec.Struct):
    game: str
    period: str
    period_start: date
    total: int
    entries: list[Entry]
    next_cursor: str | None
    source: Source = "index"
    # A live page: the time of the hub's tick it is current to.
    as_of: datetime | None = None


class UserRank(msgspec.Struct):
    game: str
    period: str
    period_start: date
    user_id: int
    rank: int | None
    score: int | None
    total: int
    percentile: float | None


# A source of top pages from memory (the realtime hub's windows): the page, or None when
# it does not hold the board current (the index answers instead).
LiveTops = Callable[[Board, int, bool], "Page | None"]


def _check_users(user_ids: list[int]) -> None:
    if not all(1 <= uid <= INT64_MAX for uid in user_ids):
        raise invalid("user id out of range", {"user_id": f"1..{INT64_MAX}"})


# --- board resolution -----------------------------------------------------------------


async def game_descending(boards: Boards, game: str) -> bool:
    """Whether `game` ranks high values first; 404 for an unknown game."""
    if game == GLOBAL:
        return True
    if not is_slug(game):  # before the cache and the query: they never see such a name
        raise not_found("no such game")
    with postgres():
        found = await boards.games.get(game)
    if found is None:
        raise not_found(f"no game {game!r}")
    return found.order == "desc"


async def resolve_board(
    services: Services, boards: Boards, game: str, period: str = "all", at: date | None = None
) -> Board:
    p = parse_period(period)
    today = services.clock.today()
    day = at or today
    if p != "all" and (today - day).days > services.settings.retention_days:
        raise not_found(f"period boards are kept for {services.settings.retention_days} days")
    descending = await game_descending(boards, game)
    return Board(game, p, period_start(p, day), descending)


def _index_ready(boards: Boards) -> bool:
    return boards.index.ready


def ms_to_dt(ms: int | None) -> datetime | None:
    """A member's reached time (ms since the epoch) as `achieved_at`."""
    return datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None


# --- cursors ---------------------------------------------------------------------------


class _Cursor(msgspec.Struct, array_like=True):
    """What a cursor carries. A client can forge one: each field has a bound, so a
    forged offset is a 400 and never a negative or int64-wide OFFSET or ZRANGE."""

    board: Annotated[str, msgspec.Meta(max_length=128)]
    offset: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX - MAX_PAGE_LIMIT)]
    member: Annotated[str, msgspec.Meta(max_length=256)]


def encode_cursor(board: str, offset: int, member: str) -> str:
    raw = msgspec.msgpack.encode(_Cursor(board, offset, member))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, board: str) -> _Cursor:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = msgspec.msgpack.decode(raw, type=_Cursor)
    except (ValueError, msgspec.DecodeError):
        raise bad_request(
            "malformed cursor", {"cursor": "not a cursor this server issued"}
        ) from None
    if value.board != board:
        raise bad_request("cursor belongs to another board", {"cursor": "use it on its board"})
    # Cursors are not signed: its offset and member are client values like any other.
    if not 0 <= value.offset <= MAX_CURSOR_OFFSET or (
        value.member and _MEMBER_RE.fullmatch(value.member) is None
    ):
        raise bad_request("malformed cursor", {"cursor": "not a cursor this server issued"})
    return value


class _Rows(msgspec.Struct):
    """A page's rows as read, before names and ranks are put on them."""

    total: int
    rows: list[Row]
    first: int
    source: Source
    names: dict[int, str] = {}
    better: int = -1  # members strictly better than the first row (-1: unknown)
    found: bool = True  # the around user is on the board


async def _page_rows(
    services: Services,
    boards: Boards,
    board: Board,
    offset: int,
    limit: int,
    cursor: str | None,
    competition: bool = False,
) -> _Rows:
    after = None
    if cursor is not None:
        c = decode_cursor(cursor, board.id)
        offset, after = c.offset, c.member
    if _index_ready(boards):
        try:
            got = await redis_page(
                services, boards.page_script, board, offset, limit, after, competition=competition
            )
            return _Rows(got.total, got.rows, got.first, "index", got.names, got.better)
        except REDIS_FAILURES:
            metrics.REDIS_ERRORS.inc()
    total, rows, first = await pg_page(services, board, offset, limit)
    return _Rows(total, rows, first, "database")


async def _around_rows(
    services: Services, boards: Boards, board: Board, user_id: int, radius: int
) -> _Rows:
    if _index_ready(boards):
        try:
            got = await redis_page(
                services, boards.page_script, board, 0, 0, around=(user_id, radius)
            )
            return _Rows(got.total, got.rows, got.first, "index", got.names, found=got.found)
        except REDIS_FAILURES:
            metrics.REDIS_ERRORS.inc()
    _, ranks = await pg_ranks(services, board, [user_id])
    rank = ranks[user_id][0]
    if rank is None:
        return _Rows(0, [], 0, "database", found=False)
    start = max(0, rank - 1 - radius)
    total, rows, first = await pg_page(services, board, start, rank - 1 - start + radius + 1)
    return _Rows(total, rows, first, "database")


async def board_ranks(
    services: Services, boards: Boards, board: Board, user_ids: list[int]
) -> tuple[int, Ranks]:
    """(total, {user_id: (rank or None, score or None)}) in one round trip."""
    if _index_ready(boards):
        try:
            return await redis_ranks(services, boards.ranks_script, board, user_ids)
        except REDIS_FAILURES:
            metrics.REDIS_ERRORS.inc()
    return await pg_ranks(services, board, user_ids)


# --- public reads ---------------------------------------------------------------------------


async def _entries(
    services: Services,
    boards: Boards,
    board: Board,
    got: _Rows,
    competition: bool,
) -> list[Entry]:
    rows = got.rows
    ids = [r[1] for r in rows]
    if got.source == "index":
        names = await fill_missing(services, got.names, ids)
    else:
        names = await usernames(services, ids)
    untimed = [r[1] for r in rows if r[3] is None]
    times = await pg_times(services, board, untimed) if untimed else {}
    entries = []
    prev_value: int | None = None
    prev_rank = 0
    for pos, uid, value, ms, _ in rows:
        rank = pos + 1
        if competition:
            if prev_value is None:
                rank = await _competition_rank(services, boards, board, value, got) + 1
            elif value == prev_value:
                rank = prev_rank
        achieved = ms_to_dt(ms) if ms is not None else times.get(uid)
        entries.append(Entry(rank, uid, names.get(uid, f"user{uid}"), value, achieved))
        prev_value, prev_rank = value, rank
    return entries


async def _competition_rank(
    services: Services, boards: Boards, board: Board, value: int, got: _Rows
) -> int:
    """How many members rank strictly better than the first row (`value`)."""
    if got.better >= 0:
        return got.better
    if got.first == 0:
        return 0
    return await pg_better_than(services, board, value)


async def top_page(
    services: Services,
    boards: Boards,
    game: str,
    period: str = "all",
    at: date | None = None,
    offset: int = 0,
    limit: int = 10,
    competition: bool = False,
    cursor: str | None = None,
    live: LiveTops | None = None,
) -> Page:
    """A page of a board, best first; a top page from `live` when it has it current."""
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid("limit out of range", {"limit": f"1..{MAX_LIMIT}"})
    if not 0 <= offset <= MAX_OFFSET:
        raise invalid("offset out of range", {"offset": f"0..{MAX_OFFSET}"})
    board = await resolve_board(services, boards, game, period, at)
    if live is not None and offset == 0 and cursor is None:
        page = live(board, limit, competition)
        if page is not None:
            metrics.LIVE_PAGES.inc()
            return page
    got = await _page_rows(services, boards, board, offset, limit, cursor, competition)
    entries = await _entries(services, boards, board, got, competition)
    next_cursor = None
    rows = got.rows
    if rows and got.first + len(rows) < got.total:
        next_cursor = encode_cursor(board.id, got.first + len(rows), rows[-1][4])
    return Page(game, board.period, board.start, got.total, entries, next_cursor, got.source)


class TopRows(msgspec.Struct):
    """The top of a board as a hub's window takes it: entries, each row's reached_seq
    (-1 unknown: PostgreSQL's rows carry no member) and reached time as the member holds
    it (ms, 0 unknown), and the total."""

    total: int
    entries: list[Entry]
    reached: list[int]
    at: list[int]
    source: Source


async def top_rows(
    services: Services, boards: Boards, game: str, period: str, start: date, limit: int
) -> TopRows:
    """The first `limit` rows of a board (ordinal ranks), for a hub's top window."""
    board = await resolve_board(services, boards, game, period, start)
    got = await _page_rows(services, boards, board, 0, limit, None)
    entries = await _entries(services, boards, board, got, False)
    reached = [parse_member(r[4])[0] if r[4] else -1 for r in got.rows]
    at = [r[3] or 0 for r in got.rows]
    return TopRows(got.total, entries, reached, at, got.source)


def percentile(rank: int | None, total: int) -> float | None:
    """Share of the board ranked at or below the user, in percent (the top is 100)."""
    if rank is None or total <= 0:
        return None
    return round((total - rank + 1) * 100.0 / total, 2)


async def user_rank(
    services: Services,
    boards: Boards,
    game: str,
    user_id: int,
    period: str = "all",
    at: date | None = None,
) -> UserRank:
    _check_users([user_id])
    board = await resolve_board(services, boards, game, period, at)
    total, ranks = await board_ranks(services, boards, board, [user_id])
    rank, score = ranks[user_id]
    return UserRank(
        game, board.period, board.start, user_id, rank, score, total, percentile(rank, total)
    )


async def ranks_of(
    services: Services, boards: Boards, board: str, user_ids: list[int]
) -> dict[int, tuple[int | None, int | None, int]]:
    """uid -> (rank, score, total) on a board id, one round trip (for my-score batches)."""
    from podium.boards.members import parse_board_id

    game, period, start = parse_board_id(board)
    descending = await game_descending(boards, game)
    total, ranks = await board_ranks(
        services, boards, Board(game, period, start, descending), user_ids
    )
    return {uid: (r, s, total) for uid, (r, s) in ranks.items()}


async def around(
    services: Services,
    boards: Boards,
    game: str,
    user_id: int,
    radius: int = 5,
    period: str = "all",
    at: date | None = None,
) -> Page:
    """The user and up to `radius` neighbours above and below, clipped at the ends."""
    if not 0 <= radius <= MAX_RADIUS:
        raise invalid("radius out of range", {"radius": f"0..{MAX_RADIUS}"})
    _check_users([user_id])
    board = await resolve_board(services, boards, game, period, at)
    got = await _around_rows(services, boards, board, user_id, radius)
    if not got.found:
        raise not_found("the user is not on this board")
    entries = await _entries(services, boards, board, got, False)
    return Page(game, board.period, board.start, got.total, entries, None, got.source)


class MemberRank(msgspec.Struct):
    rank: int
    user_id: int
    username: str
    score: int
    global_rank: int


class MembersPage(msgspec.Struct):
    game: str
    period: str
    period_start: date
    total: int
    entries: list[MemberRank]
    missing: list[int]


async def members(
    services: Services,
    boards: Boards,
    game: str,
    user_ids: list[int],
    period: str = "all",
    at: date | None = None,
) -> MembersPage:
    """A friends board: the given users ranked among themselves, with their board ranks."""
    _check_users(user_ids)
    board = await resolve_board(services, boards, game, period, at)
    total, ranks = await board_ranks(services, boards, board, user_ids)
    present = sorted(
        (r, uid, s) for uid, (r, s) in ranks.items() if r is not None and s is not None
    )
    names = await usernames(services, [uid for _, uid, _ in present])
    entries = [
        MemberRank(i + 1, uid, names.get(uid, f"user{uid}"), score, rank)
        for i, (rank, uid, score) in enumerate(present)
    ]
    missing = [uid for uid, (r, _) in ranks.items() if r is None]
    return MembersPage(game, board.period, board.start, total, entries, missing)


async def boards_of_user(services: Services, boards: Boards, user_id: int) -> list[UserRank]:
    """Every all-time board the user is on (global included), plus this period's boards."""
    _check_users([user_id])
    with postgres():
        rows = await services.pool.fetch(
            "SELECT game_id, period, period_start FROM board_values WHERE user_id = $1"
            " AND (period = 'all' OR period_start = CASE period"
            "   WHEN 'day' THEN $2::date"
            "   WHEN 'week' THEN $2::date - (extract(isodow FROM $2::date)::int - 1)"
            "   ELSE date_trunc('month', $2::date)::date END)"
            " ORDER BY game_id = 'global' DESC, game_id, period",
            user_id,
            services.clock.today(),
        )
    out = []
    for r in rows:
        descending = await game_descending(boards, r["game_id"])
        board = Board(r["game_id"], r["period"], r["period_start"], descending)
        total, ranks = await board_ranks(services, boards, board, [user_id])
        rank, score = ranks[user_id]
        out.append(
            UserRank(
                board.game,
                board.period,
                board.start,
                user_id,
                rank,
                score,
                total,
                percentile(rank, total),
            )
        )
    return out
