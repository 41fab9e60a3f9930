"""Board ids, and the members and scores of a board's zset (its keys: podium/keys.py)."""

from __future__ import annotations

from datetime import date

from podium.periods import parse_period
from podium.validation import Period

GLOBAL = "global"
MEMBER_SEQ_WIDTH = 15


# Not memoised: callers pass client-named games before they are known to exist, and a
# cache keyed by them would let unknown ids pin memory; formatting costs less than a lookup.
def board_id(game: str, period: Period, start: date) -> str:
    return f"{game}:{period}:{start.isoformat()}"


def parse_board_id(board: str) -> tuple[str, Period, date]:
    game, period, start = board.split(":")
    return game, parse_period(period), date.fromisoformat(start)


def member(reached_seq: int, user_id: int, reached_at_ms: int | None = None) -> str:
    """Zset member: equal scores sort by member bytes, so the earlier value ranks first.

    The optional third part, the time the value was reached (ms since epoch), lets a
    page show `achieved_at` without a database read.
    """
    base = f"{reached_seq:0{MEMBER_SEQ_WIDTH}d}:{user_id}"
    return base if reached_at_ms is None else f"{base}:{reached_at_ms}"


def parse_member(raw: bytes | str) -> tuple[int, int, int | None]:
    """(reached_seq, user_id, reached_at_ms or None) of a zset member."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    parts = text.split(":")
    return int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) > 2 else None


def to_zscore(value: int, descending: bool) -> int:
    """Zsets rank ascending: store -value where higher is better."""
    return -value if descending else value


def from_zscore(score: float, descending: bool) -> int:
    value = int(score)
    return -value if descending else value
