"""The Lua scripts of the boards layer, registered once per Redis client.

`register_script` runs EVALSHA and loads the script again if Redis lost it (restart,
SCRIPT FLUSH), so callers never handle NOSCRIPT themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from podium.boards.members import member, to_zscore
from podium.keys import Keys
from podium.periods import period_end
from podium.validation import Period


@cache
def source(name: str) -> str:
    return (resources.files("podium.boards") / "lua" / f"{name}.lua").read_text()


@cache
def layout(prefix: str) -> bytes:
    """The key layout the scripts build board keys from (ARGV[1] of apply and swap)."""
    return msgspec.msgpack.encode(Keys(prefix).layout())


class BoardRow(tuple[Any, ...]):
    """One board row for apply.lua: (board, member, zscore, last_seq, desc, expireat).

    `member` "" removes the user from the board.
    """

    __slots__ = ()

    def __new__(
        cls, board: str, member_: str, zscore: int, last_seq: int, desc: bool, expireat: int
    ) -> BoardRow:
        return super().__new__(
            cls, (board, member_, str(zscore), str(last_seq), "1" if desc else "0", str(expireat))
        )


@lru_cache(maxsize=65536)
def expire_at(period: Period, start: date, retention_days: int) -> int:
    """Unix time when a period board may go: its end plus the retention window."""
    end = period_end(period, start)
    if end is None:
        return 0
    moment = datetime.combine(end + timedelta(days=retention_days), time(), UTC)
    return int(moment.timestamp())


def set_row(
    board: str,
    period: Period,
    start: date,
    user_id: int,
    value: int,
    reached_seq: int,
    last_seq: int,
    desc: bool,
    retention_days: int,
    reached_at_ms: int | None = None,
) -> BoardRow:
    return BoardRow(
        board,
        member(reached_seq, user_id, reached_at_ms),
        to_zscore(value, desc),
        last_seq,
        desc,
        expire_at(period, start, retention_days),
    )


class ApplyEvent(tuple[Any, ...]):
    """(all_board, user_id, rows): the rows one event changed, in order."""

    __slots__ = ()

    def __new__(cls, all_board: str, user_id: int, rows: Sequence[BoardRow]) -> ApplyEvent:
        return super().__new__(cls, (all_board, user_id, rows))


# One board's rows for load.lua: (board, expireat, users, zpairs, hpairs), all as text:
# zpairs is [zscore, member, ...] and hpairs [user, "member|version", ...], per user.
BulkGroup = tuple[str, str, list[str], list[str], list[str]]


class Scripts:
    """The boards' Lua scripts bound to one Redis client and key prefix."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.prefix = prefix
        self.layout = layout(prefix)
        self._apply: AsyncScript = redis.register_script(source("apply"))
        self._swap: AsyncScript = redis.register_script(source("swap"))
        self._lease: AsyncScript = redis.register_script(source("lease"))
        self._load: AsyncScript = redis.register_script(source("load"))

    def argv(self, publish: bool, events: Sequence[ApplyEvent]) -> list[str | bytes]:
        packed = msgspec.msgpack.encode([(board, str(user), rows) for board, user, rows in events])
        return [self.layout, "1" if publish else "0", packed]

    async def apply(
        self, events: Sequence[ApplyEvent], *, publish: bool = True
    ) -> list[tuple[int | None, int | None]]:
        """Apply the events' rows; return each event's (rank_before, rank_after)."""
        packed = await self._apply(keys=[], args=self.argv(publish, events))
        raw = msgspec.msgpack.decode(packed)
        out: list[tuple[int | None, int | None]] = []
        for j in range(0, len(raw), 2):
            out.append((int(raw[j]) or None, int(raw[j + 1]) or None))
        return out

    async def load(self, events: Sequence[ApplyEvent], gen: str) -> None:
        """Apply the events' rows to rebuild `gen`'s boards aside (error: lease lost)."""
        await self._apply(keys=[], args=[*self.argv(False, events), gen])

    async def load_bulk(self, groups: Sequence[BulkGroup], gen: str) -> int:
        """Write rows to rebuild `gen`'s boards aside, many per call (load.lua); return how
        many were written (an error if the lease is lost)."""
        return int(
            await self._load(keys=[], args=[self.layout, gen, msgspec.msgpack.encode(groups)])
        )

    async def swap(self, gen: str, epoch: str, live_boards: Sequence[str]) -> int:
        """Install rebuild `gen`'s boards; the board count, or -1 if its lease was lost."""
        packed = msgspec.msgpack.encode(list(live_boards))
        return int(
            await self._swap(
                keys=[], args=[self.layout, gen, epoch, packed, Keys(self.prefix).aside(gen).prefix]
            )
        )

    async def lease(self, key: str, token: str, ttl_ms: int) -> bool:
        """Renew our lease on `key` for `ttl_ms` (0 releases it); False if not ours."""
        return bool(await self._lease(keys=[key], args=[token, ttl_ms]))
