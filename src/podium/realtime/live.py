"""Top pages from memory: a watched board's window, as of the hub's last tick.

The hub keeps the top rows of every board it has subscribers for, current to each tick
(every board change carries the whole top, its reached times and the board's total).
An HTTP top page of such a board is built from that window with no Redis call: the same
entries, ranks, names, times and cursor as the index would give, `source: "live"`.
"""

from __future__ import annotations

from datetime import date, datetime

import msgspec

from podium.boards.members import member
from podium.boards.ranks import Entry, Page, encode_cursor, ms_to_dt
from podium.realtime.coalesce import TopWindow


class LiveRow(msgspec.Struct, array_like=True, frozen=True):
    user_id: int
    username: str
    score: int
    reached_seq: int
    reached_ms: int


class LiveTop(msgspec.Struct, frozen=True):
    """A board's top window as one tick left it: exact, named, with the board's total."""

    board: str
    seq: int
    total: int
    rows: tuple[LiveRow, ...]


def live_top(top: TopWindow) -> LiveTop | None:
    """The window's pushed state as a LiveTop; None when it cannot make exact pages
    (a time or reached_seq it was not told, the total unknown, names not yet current)."""
    if top.total < 0 or len(top.pushed) != len(top.current):
        return None
    rows = []
    for row, (uid, value), reached, at in zip(
        top.pushed, top.current, top.reached, top.at, strict=True
    ):
        if row.user_id != uid or row.score != value or reached < 0 or at <= 0:
            return None
        rows.append(LiveRow(uid, row.username, value, reached, at))
    return LiveTop(top.board, top.seq, top.total, tuple(rows))


def renamed(live: LiveTop, user_id: int, username: str) -> LiveTop:
    """`live` with a user's new display name."""
    rows = tuple(
        msgspec.structs.replace(row, username=username) if row.user_id == user_id else row
        for row in live.rows
    )
    return msgspec.structs.replace(live, rows=rows)


def servable(live: LiveTop, limit: int) -> bool:
    """Whether the window holds the whole page: `limit` rows, or the whole board."""
    return limit <= len(live.rows) or len(live.rows) >= live.total


def live_page(
    live: LiveTop,
    game: str,
    period: str,
    start: date,
    limit: int,
    competition: bool,
    as_of: datetime,
) -> Page:
    """The first `limit` rows of `live` as the index's page would be (see ranks.top_page)."""
    rows = live.rows[:limit]
    entries = []
    prev_value: int | None = None
    prev_rank = 0
    for pos, row in enumerate(rows):
        rank = pos + 1
        # Competition ranks: nobody ranks better than the first row of the board.
        if competition and prev_value is not None and row.score == prev_value:
            rank = prev_rank
        entries.append(Entry(rank, row.user_id, row.username, row.score, ms_to_dt(row.reached_ms)))
        prev_value, prev_rank = row.score, rank
    next_cursor = None
    if rows and len(rows) < live.total:
        last = rows[-1]
        next_cursor = encode_cursor(
            live.board, len(rows), member(last.reached_seq, last.user_id, last.reached_ms)
        )
    return Page(game, period, start, live.total, entries, next_cursor, "live", as_of)
