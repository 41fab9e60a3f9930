"""Games: their rules (order, operator, policy, bounds), storage and a short-lived cache."""

from __future__ import annotations

import asyncio
import collections
import time
from datetime import datetime
from typing import Literal, TypeVar

import asyncpg
import msgspec

from podium import validation
from podium.store.db import fetchrow_retrying, is_unavailable

V = TypeVar("V")
Order = Literal["desc", "asc"]
Operator = Literal["best", "sum", "last", "decr"]
Policy = Literal["client", "actions", "authoritative"]

RESERVED_IDS = frozenset({"global"})
MAX_ABS_SCORE = validation.MAX_ABS_SCORE
# How long another instance may serve a game's old rules after a change.
CACHE_TTL_S = 1.0
# Games a process keeps at once, and unknown (slug-shaped) ids it remembers as unknown.
CACHE_MAX_GAMES = 4096
CACHE_MAX_MISSES = 1024


class GameFields(msgspec.Struct, kw_only=True):
    """A game's rules, as the server keeps them and the API shows them."""

    id: str
    name: str
    order: Order
    operator: Operator
    policy: Policy
    min_score: int | None
    max_score: int | None
    max_delta: int | None
    delta_window_s: int
    created_at: datetime


class Game(GameFields):
    hmac_key: str | None

    @property
    def descending(self) -> bool:
        return self.order == "desc"

    def public(self) -> GameOut:
        shown = {name: getattr(self, name) for name in GameFields.__struct_fields__}
        return GameOut(**shown, signed=self.hmac_key is not None)


class GameOut(GameFields):
    """A game as the API shows it: the HMAC key never leaves the server."""

    signed: bool


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
    """The game, or None; an id that is not slug-shaped names no game (and no query)."""
    if not validation.is_slug(game_id):
        return None
    query = f"SELECT {GAME_COLS} FROM games WHERE id = $1"
    if isinstance(db, asyncpg.Pool):
        row = await fetchrow_retrying(db, query, game_id)
    else:
        row = await db.fetchrow(query, game_id)
    return game_of(row) if row else None


async def list_games(db: asyncpg.Pool | asyncpg.Connection) -> list[Game]:
    rows = await db.fetch(f"SELECT {GAME_COLS} FROM games ORDER BY id")
    return [game_of(r) for r in rows]


async def update_game(
    db: asyncpg.Pool | asyncpg.Connection, game_id: str, changes: dict[str, object]
) -> Game | None:
    """Set the given columns (names are checked by the caller's fixed whitelist)."""
    if not validation.is_slug(game_id):
        return None
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
    Only slug-shaped ids are looked up (anything else is no game, at no cost); found
    games and unknown slugs live in two bounded LRU maps, so no client input pins memory.
    Concurrent misses of one id share one query. With PostgreSQL unreachable a game seen
    before is served stale rather than failing the read.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        ttl: float = CACHE_TTL_S,
        *,
        max_games: int = CACHE_MAX_GAMES,
        max_misses: int = CACHE_MAX_MISSES,
    ) -> None:
        self.pool = pool
        self.ttl = ttl
        self.max_games = max_games
        self.max_misses = max_misses
        self._games: collections.OrderedDict[str, tuple[float, Game]] = collections.OrderedDict()
        self._misses: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._loading: dict[str, asyncio.Task[Game | None]] = {}
        # Bumped by `forget`: a lookup that started before a change does not store.
        self._generation = 0

    @property
    def size(self) -> int:
        """Entries held (games, remembered misses, lookups in flight)."""
        return len(self._games) + len(self._misses) + len(self._loading)

    async def get(self, game_id: str) -> Game | None:
        if not validation.is_slug(game_id) or game_id in RESERVED_IDS:
            return None
        now = time.monotonic()
        hit = self._games.get(game_id)
        if hit is not None and now - hit[0] < self.ttl:
            self._games.move_to_end(game_id)
            return hit[1]
        missed = self._misses.get(game_id)
        if missed is not None and now - missed < self.ttl:
            return None
        task = self._loading.get(game_id)
        if task is None:
            task = asyncio.create_task(self._load(game_id, now))
            self._loading[game_id] = task
            task.add_done_callback(lambda done: self._loaded(game_id, done))
        # Shielded: one caller giving up does not cancel the others' lookup.
        return await asyncio.shield(task)

    async def _load(self, game_id: str, now: float) -> Game | None:
        generation = self._generation
        try:
            game = await fetch_game(self.pool, game_id)
        except Exception as exc:
            stale = self._games.get(game_id)
            if stale is not None and is_unavailable(exc):
                # A game's order and operator never change: reads served from Redis may
                # go on with the last rules seen while PostgreSQL is away.
                return stale[1]
            raise
        if generation != self._generation:
            pass
        elif game is None:
            self._games.pop(game_id, None)
            _put(self._misses, game_id, now, self.max_misses)
        else:
            self._misses.pop(game_id, None)
            _put(self._games, game_id, (now, game), self.max_games)
        return game

    def _loaded(self, game_id: str, task: asyncio.Task[Game | None]) -> None:
        if self._loading.get(game_id) is task:
            del self._loading[game_id]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have given up

    def forget(self, game_id: str) -> None:
        self._generation += 1
        self._loading.pop(game_id, None)
        self._games.pop(game_id, None)
        self._misses.pop(game_id, None)


def _put(entries: collections.OrderedDict[str, V], key: str, value: V, cap: int) -> None:
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > cap:
        entries.popitem(last=False)
