"""What the hub reads from the boards: the top, a page, my-score ranks, names.

The hub's own logic (who watches what, one read per distinct page per tick, one
push per board) needs none of it to be real: tests hand the hub a fake `Reads`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Protocol

import msgspec
from redis.exceptions import RedisError

from podium.boards.names import usernames
from podium.boards.ranks import Page, ranks_of, top_page, top_rows
from podium.boards.runtime import Boards
from podium.protocol import Row
from podium.services import Services
from podium.validation import Period

RankState = tuple[int | None, int | None, int]  # (rank, score, total)


class TopRead(msgspec.Struct):
    """A board's seq and its top rows; with the board's total and each row's reached_seq
    and reached time (ms) when known, so the window can serve top pages itself."""

    seq: int
    rows: list[Row]
    total: int = -1
    reached: list[int] = []
    at: list[int] = []


class Reads(Protocol):
    async def top(self, board: str, game: str, period: Period, start: date, limit: int) -> TopRead:
        """The board's seq and its top `limit` rows."""
        ...

    async def page(
        self, game: str, period: Period, start: date, offset: int, limit: int
    ) -> Page: ...

    async def ranks(self, board: str, user_ids: list[int]) -> dict[int, RankState]: ...

    async def names(self, user_ids: Iterable[int]) -> dict[int, str]: ...


class BoardReads:
    """`Reads` from Redis and PostgreSQL, through podium.boards."""

    def __init__(self, services: Services, boards: Boards) -> None:
        self.services = services
        self.boards = boards
        self.keys = services.keys

    async def top(self, board: str, game: str, period: Period, start: date, limit: int) -> TopRead:
        # Seq first, then the rows: a change in between is folded on top of this read
        # (every change carries the whole top), so the window converges either way.
        try:
            raw = await self.services.redis.get(self.keys.seq(board))
        except RedisError:
            # Redis is down: the rows come from PostgreSQL; the broker's reconnection
            # re-reads this board (with its real seq) once Redis is back.
            raw = None
        got = await top_rows(self.services, self.boards, game, period, start, limit)
        rows = [
            Row(rank=e.rank, user_id=e.user_id, username=e.username, score=e.score)
            for e in got.entries
        ]
        if got.source != "index":  # PostgreSQL's rows: no members, so no page from memory
            return TopRead(int(raw or 0), rows)
        return TopRead(int(raw or 0), rows, got.total, got.reached, got.at)

    async def page(self, game: str, period: Period, start: date, offset: int, limit: int) -> Page:
        return await top_page(
            self.services, self.boards, game, period, at=start, offset=offset, limit=limit
        )

    async def ranks(self, board: str, user_ids: list[int]) -> dict[int, RankState]:
        return await ranks_of(self.services, self.boards, board, user_ids)

    async def names(self, user_ids: Iterable[int]) -> dict[int, str]:
        return await usernames(self.services, user_ids)
