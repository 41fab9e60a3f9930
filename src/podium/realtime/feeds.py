"""The boards this process watches: who watches what, and the page and rank messages.

A `Feed` is one board's top window and its watchers; a `PageWatch` is the sockets of
one page of it. The hub (`podium.realtime.hub`) owns them and drives them per tick.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

from podium.boards.members import board_id
from podium.boards.ranks import Page
from podium.protocol import PageMsg, PageRow, RankMsg, SeedPage, SeedRow, encode_text
from podium.realtime.coalesce import TopWindow
from podium.realtime.live import LiveTop
from podium.realtime.session import Session
from podium.validation import Period

PageKey = tuple[int, int]  # (offset, limit)


class PageWatch:
    """Sockets watching one page of one board, and the last page sent to them."""

    def __init__(self, sub: str) -> None:
        self.sub = sub
        # session -> shapes it wants ("typed" and/or "seed")
        self.watchers: dict[Session, set[str]] = {}
        self.last: tuple[Any, ...] | None = None
        self.texts: dict[str, str] = {}


class Feed:
    """One board watched by this process."""

    def __init__(self, game: str, period: Period, start: date) -> None:
        self.board = board_id(game, period, start)
        self.game = game
        self.period = period
        self.start = start
        self.top = TopWindow(self.board, game, period, start)
        self.watchers: set[Session] = set()
        self.pages: dict[PageKey, PageWatch] = {}
        self.mine: dict[int, set[Session]] = {}
        self.last_rank: dict[int, tuple[int | None, int | None, int]] = {}
        self.refs = 0
        self.loaded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.dirty = False
        # Publish time of the oldest change waiting for the next push (pub/sub lag).
        self.published_ms = 0
        self.refresh_due = False
        # After a failed page/rank re-read (a store outage): not before this monotonic time.
        self.refresh_after = 0.0
        self.reload_due = False
        # The broker generation this feed's read is good for (0: not subscribed yet).
        self.generation = 0
        # The top as the last tick left it, for top pages from memory (None: none).
        self.live: LiveTop | None = None

    @property
    def key(self) -> str:
        return self.board


def page_text(feed: Feed, sub: str, key: PageKey, page: Page, shape: str) -> str:
    """A page of `feed` as the `shape` its watchers asked for ("typed" or "seed")."""
    if shape == "seed":
        return encode_text(
            SeedPage(
                result=[
                    SeedRow(
                        rank=e.rank,
                        user_id=e.user_id,
                        player=e.username,
                        score=e.score,
                        date=(e.achieved_at or datetime.now(UTC)).date(),
                    )
                    for e in page.entries
                ],
                total_count=page.total,
            )
        )
    return encode_text(
        PageMsg(
            sub=sub,
            board=feed.board,
            game=feed.game,
            period=feed.period,
            period_start=feed.start,
            seq=feed.top.seq,
            offset=key[0],
            limit=key[1],
            total=page.total,
            entries=[
                PageRow(
                    rank=e.rank,
                    user_id=e.user_id,
                    username=e.username,
                    score=e.score,
                    achieved_at=e.achieved_at,
                )
                for e in page.entries
            ],
        )
    )


def rank_text(feed: Feed, state: tuple[int | None, int | None, int]) -> str:
    """A my-score message: (rank, score, total) on `feed`'s board."""
    rank, score, total = state
    return encode_text(
        RankMsg(game=feed.game, period=feed.period, rank=rank, score=score, total=total)
    )
