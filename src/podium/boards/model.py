"""Games: their rules (order, operator, policy, bounds), storage and a short-lived cache."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from podium.boards.writer import is_unavailable
from podium.errors import unavailable

Order = Literal["desc", "asc"]
Operator = Literal["best", "sum", "last", "decr"]
Policy = Literal["client", "actions", "authoritative"]

SLUG_RE = re.compile(r"^[a-z0-9-]{1,40}$")
RESERVED_IDS = frozenset({"global"})
# Redis scores are doubles: every integer up to 2^53 - 1 in magnitude is exact.
MAX_ABS_SCORE = 2**53 - 1
# How long another instance may serve a game's old rules after a change.
CACHE_TTL_S = 1.0


class Game(msgspec.Struct, kw_only=True):
    id: str
    name: str
    order: Order
    operator: Operator
    policy: Policy
    min_score: int | None
    max_score: int | None
    max_delta: int | None
    delta_window_s: int
    hmac_key: str | None
    created_at: datetime

    @property
    def descending(self) -> bool:
        return self.order == "desc"

    def public(self) -> GameOut:
        return GameOut(
            id=self.id,
            name=self.name,
            order=self.order,
            operator=self.operator,
            policy=self.policy,
            min_score=self.min_score,
            max_score=self.max_score,
            max_delta=self.max_delta,
            delta_window_s=self.delta_window_s,
            signed=self.hmac_key is not None,
            created_at=self.created_at,
        )


class GameOut(msgspec.Struct, kw_only=True):
    """A game as the API shows it: the HMAC key never leaves the server."""

    id: str
    name: str
    order: Order
    operator: Operator
    policy: Policy
    min_score: int | None
    max_score: int | None
    max_delta: int | None
    delta_window_s: int
    signed: bool
    created_at: datetime


GAME_COLS = (
    "id, name, sort_order, operator, policy, min_score, max_score, max_delta,"
    " delta_window_s, hmac_key, created_at"
)


def game_of(row: asyncpg.Record) -> Game:
    return Game(
        id=row["id"],
        name=row["name"],
        order=row["sort_order"],
        operator=row["operator"],
        policy=row["policy"],
        min_score=row["min_score"],
        max_score=row["max_score"],
        max_delta=row["max_delta"],
        delta_window_s=row["delta_window_s"],
        hmac_key=row["hmac_key"],
        created_at=row["created_at"],
    )


class GameExists(Exception):
    pass


async def insert_game(db: asyncpg.Pool | asyncpg.Connection, game: Game) -> Game:
    try:
        row = await db.fetchrow(
            "INSERT INTO games (id, name, sort_order, operator, policy, min_score, max_score,"
            " max_delta, delta_window_s, hmac_key) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
            f" RETURNING {GAME_COLS}",
            game.id,
            game.name,
            game.order,
            game.operator,
            game.policy,
            game.min_score,
            game.max_score,
            game.max_delta,
            game.delta_window_s,
            game.hmac_key,
        )
    except asyncpg.UniqueViolationError:
        raise GameExists(game.id) from None
    assert row is not None
    return game_of(row)


async def fetch_game(db: asyncpg.Pool | asyncpg.Connection, game_id: str) -> Game | None:
    row = await db.fetchrow(f"SELECT {GAME_COLS} FROM games WHERE id = $1", game_id)
    return game_of(row) if row else None


async def list_games(db: asyncpg.Pool | asyncpg.Connection) -> list[Game]:
    rows = await db.fetch(f"SELECT {GAME_COLS} FROM games ORDER BY id")
    return [game_of(r) for r in rows]


async def update_game(
    db: asyncpg.Pool | asyncpg.Connection, game_id: str, changes: dict[str, object]
) -> Game | None:
    """Set the given columns (names are checked by the caller's fixed whitelist)."""
    columns = list(changes)
    sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(columns))
    row = await db.fetchrow(
        f"UPDATE games SET {sets} WHERE id = $1 RETURNING {GAME_COLS}",
        game_id,
        *[changes[c] for c in columns],
    )
    return game_of(row) if row else None


class GameCache:
    """Games by id for the write path, each entry trusted for CACHE_TTL_S seconds.

    A change made on this instance is seen at once (`forget`); other instances see it
    within the TTL. Order and operator never change, so only bounds may lag.
    """

    def __init__(self, pool: asyncpg.Pool, ttl: float = CACHE_TTL_S) -> None:
        self.pool = pool
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Game | None]] = {}

    async def get(self, game_id: str) -> Game | None:
        now = time.monotonic()
        hit = self._entries.get(game_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        try:
            game = await fetch_game(self.pool, game_id)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # PostgreSQL is down: reads served from Redis need only the game's order,
            # which never changes, so a known game keeps resolving; an unknown one is 503.
            if hit is not None:
                return hit[1]
            raise unavailable("the game store is unavailable") from None
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[game_id] = (now, game)
        return game

    def forget(self, game_id: str) -> None:
        self._entries.pop(game_id, None)
